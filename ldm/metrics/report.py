"""Tables and figures from ``metrics.json`` files: one run's overall/per-scenario tables, and the paper-style
side-by-side comparison of several runs (HumanSD, ControlNet, T2I-Adapter, SD, ...) with a per-scenario bar chart.

Units follow the paper's table (spec §7.1): FID as is, KID x 10, AP / AP(m) / CAP in percent, PCE as is, CLIPSIM as
is (already 0-100). ``metrics.json`` stores AP and CAP as fractions in [0, 1] and KID unscaled. A figure computed
with a non-standard network keeps its label in the metric name, e.g. "FID (tiny features)"; the tables show the
label instead of silently mixing it with Inception figures.

References:
    HumanSD README / project page table (``assets/quantitative_results.png``); spec §7.1 of
        shared/spec/humansd-reference.md.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "PAPER_COLUMNS",
    "PAPER_RESULTS",
    "PaperColumn",
    "comparison_table",
    "csv_table",
    "find_metric",
    "load_run",
    "markdown_table",
    "run_markdown",
    "scenario_bar_chart",
    "write_comparison",
]


@dataclass(frozen=True)
class PaperColumn:
    """A column of the paper's table: header, metric base name in metrics.json, display scale."""

    header: str
    metric: str
    scale: float


PAPER_COLUMNS: tuple[PaperColumn, ...] = (
    PaperColumn("FID", "FID", 1.0),
    PaperColumn("KID×10", "KID", 10.0),
    PaperColumn("AP", "AP", 100.0),
    PaperColumn("AP(m)", "AP(M)", 100.0),
    PaperColumn("CAP", "CAP", 100.0),
    PaperColumn("PCE", "PCE", 1.0),
    PaperColumn("CLIPSIM", "CLIPSIM", 1.0),
)

# Spec §7.1 (README / project-page table), in the paper's display units, same order as PAPER_COLUMNS.
PAPER_RESULTS: dict[str, tuple[float, ...]] = {
    "Stable Diffusion": (41.55, 2.99, 0.09, 0.00, 49.05, 1.76, 33.86),
    "T2I-Adapter": (29.07, 2.67, 18.20, 11.93, 55.98, 2.73, 33.29),
    "ControlNet": (27.24, 2.60, 18.45, 11.71, 57.18, 2.47, 33.16),
    "HumanSD (0.2M)": (26.28, 2.56, 31.85, 24.95, 59.11, 1.61, 32.98),
}

_COUNT_COLUMNS = (
    ("Images", "images"),
    ("Pose images", "pose_images"),
    ("GT persons", "gt_persons"),
    ("Ref. images", "reference_images"),
)


def find_metric(metrics: Mapping[str, Any], base: str) -> tuple[str, float | None] | None:
    """The entry for metric ``base``: the key ``base`` itself or a labelled variant ``"base (label)"``.

    Args:
        metrics: a group's metrics mapping.
        base: e.g. "FID", "CAP".

    Returns:
        (key, value) or None when the metric was not computed.
    """
    if base in metrics:
        return base, metrics[base]
    for key, value in metrics.items():
        if key.startswith(f"{base} ("):
            return key, value
    return None


def _fmt(value: float | int | None, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _paper_cells(metrics: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Display cells of the paper columns and the labels of non-standard metrics found."""
    cells, labels = [], []
    for col in PAPER_COLUMNS:
        found = find_metric(metrics, col.metric)
        if found is None or found[1] is None:
            cells.append("—")
            continue
        key, value = found
        if key != col.metric:
            labels.append(key)
        cells.append(_fmt(value * col.scale))
    return cells, labels


def _groups(run: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    scenarios = run.get("scenarios", {})
    return [("all", run["overall"])] + [(name or "(no folder)", scenarios[name]) for name in sorted(scenarios)]


def run_markdown(run: Mapping[str, Any], *, title: str = "Evaluation") -> str:
    """Markdown for one run: the paper columns overall and per scenario with the image counts behind them, then
    every figure of the whole set.

    Args:
        run: the ``metrics.json`` content.
        title: heading.
    """
    headers = ["Scenario", *(h for h, _ in _COUNT_COLUMNS), *(c.header for c in PAPER_COLUMNS)]
    rows, labels = [], set()
    for name, group in _groups(run):
        cells, found = _paper_cells(group["metrics"])
        labels.update(found)
        rows.append([name, *(_fmt(group["counts"].get(key)) for _, key in _COUNT_COLUMNS), *cells])
    out = [f"# {title}\n\n", markdown_table(headers, rows)]
    out.append(
        "\nUnits as in the paper: AP, AP(m), CAP in %, KID×10; FID/KID over the reference images of the same "
        "entries. Pose figures use the *pose images* (generated images with a readable conditioning pose).\n"
    )
    if labels:
        out.append(f"\nNon-standard variants shown in the table: {', '.join(sorted(labels))}.\n")
    overall = run["overall"]["metrics"]
    out.append("\n## All figures (whole set, raw units)\n\n")
    out.append(markdown_table(["Metric", "Value"], [[k, _fmt(v, 4)] for k, v in overall.items()]))
    skipped = run.get("meta", {}).get("skipped") or {}
    if skipped:
        out.append("\n## Not computed\n\n" + "".join(f"- {k}: {v}\n" for k, v in skipped.items()))
    return "".join(out)


def csv_table(run: Mapping[str, Any]) -> str:
    """CSV of every group (overall first) with its counts and every figure in raw units."""
    groups = _groups(run)
    count_keys = list(dict.fromkeys(k for _, g in groups for k in g["counts"]))
    metric_keys = list(dict.fromkeys(k for _, g in groups for k in g["metrics"]))
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["scenario", *count_keys, *metric_keys])
    for name, group in groups:
        values = [group["metrics"].get(k) for k in metric_keys]
        writer.writerow(
            [name, *(group["counts"].get(k, "") for k in count_keys), *("" if v is None else v for v in values)]
        )
    return buffer.getvalue()


def load_run(path: str | Path) -> dict[str, Any]:
    """Read a ``metrics.json`` (a file or the folder holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"metrics.json not found: {path} (run scripts/pose2img_metrics.py first).")
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or "overall" not in data:
        raise ValueError(f"{path} is not a metrics.json written by ldm.metrics.evaluate (no 'overall').")
    return data


def comparison_table(runs: Mapping[str, Mapping[str, Any]], *, with_paper: bool = False) -> str:
    """The paper's side-by-side table (whole sets), one row per run, optionally followed by the paper's rows.

    Args:
        runs: {display name: metrics.json content}, in row order.
        with_paper: add the published numbers (spec §7.1) marked "(paper)".
    """
    headers = ["Model", "Images", *(c.header for c in PAPER_COLUMNS)]
    rows, labels = [], {}
    for name, run in runs.items():
        cells, found = _paper_cells(run["overall"]["metrics"])
        if found:
            labels[name] = found
        rows.append([name, _fmt(run["overall"]["counts"].get("images")), *cells])
    if with_paper:
        rows += [[f"{name} (paper)", "—", *(_fmt(v) for v in values)] for name, values in PAPER_RESULTS.items()]
    text = markdown_table(headers, rows)
    text += "\nAP, AP(m), CAP in %; KID×10.\n"
    for name, found in labels.items():
        text += f"\n{name}: non-standard variants {', '.join(found)}."
    return text + ("\n" if labels else "")


def scenario_bar_chart(
    runs: Mapping[str, Mapping[str, Any]],
    path: str | Path,
    *,
    metrics: Sequence[str] = ("AP", "CAP", "PCE", "FID", "CLIPSIM"),
) -> Path:
    """Grouped bar chart: one panel per metric, scenarios on the x axis, one bar per run (matplotlib Agg).

    Args:
        runs: {display name: metrics.json content}.
        path: PNG to write.
        metrics: metric base names to plot (panels without data are left out).

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    scenarios = sorted({s for run in runs.values() for s in run.get("scenarios", {})})
    scales = {c.metric: (c.header, c.scale) for c in PAPER_COLUMNS}
    panels = []
    for base in metrics:
        values = {
            name: [(find_metric(run.get("scenarios", {}).get(s, {}).get("metrics", {}), base) or (base, None))[1]
                   for s in scenarios]
            for name, run in runs.items()
        }  # fmt: skip
        if any(v is not None for vals in values.values() for v in vals):
            panels.append((base, values))
    fig, axes = plt.subplots(
        max(len(panels), 1), 1, figsize=(max(6.0, 0.7 * len(scenarios) + 2), 2.6 * max(len(panels), 1)), squeeze=False
    )
    x, width = np.arange(len(scenarios)), 0.8 / max(len(runs), 1)
    for ax, (base, values) in zip(axes[:, 0], panels):
        header, scale = scales.get(base, (base, 1.0))
        for r, (name, vals) in enumerate(values.items()):
            heights = [np.nan if v is None else v * scale for v in vals]
            ax.bar(x + (r - (len(runs) - 1) / 2) * width, heights, width, label=name)
        ax.set_ylabel(header)
        ax.set_xticks(x, scenarios, rotation=45, ha="right", fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    if panels:
        axes[0, 0].legend(fontsize=8, ncol=min(len(runs), 4))
    else:
        axes[0, 0].text(0.5, 0.5, "no per-scenario figures", ha="center", va="center")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_comparison(
    runs: Mapping[str, str | Path], outdir: str | Path, *, with_paper: bool = False
) -> dict[str, Path]:
    """Load several runs' metrics.json and write ``comparison.md`` and ``comparison_scenarios.png``.

    Args:
        runs: {display name: metrics.json path or its folder}, in row order.
        outdir: output folder.
        with_paper: add the paper's published rows to the table.

    Returns:
        {"markdown": path, "chart": path}.
    """
    if not runs:
        raise ValueError("write_comparison needs at least one run (NAME=PATH).")
    loaded = {name: load_run(path) for name, path in runs.items()}
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    md = outdir / "comparison.md"
    md.write_text("# Comparison\n\n" + comparison_table(loaded, with_paper=with_paper), encoding="utf-8")
    chart = scenario_bar_chart(loaded, outdir / "comparison_scenarios.png")
    logger.info("Wrote %s and %s.", md, chart)
    return {"markdown": md, "chart": chart}
