"""The README and the docs it links to: every relative link and in-page anchor resolves."""

import ast
import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = ["README.md", "configs/tiny/HISTORY.md", "benchmarks/README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@pytest.mark.parametrize("doc", DOCS)
def test_relative_links_and_anchors_resolve(doc):
    path = REPO / doc
    text = path.read_text(encoding="utf-8")
    anchors = {_anchor(line.lstrip("#")) for line in text.splitlines() if line.startswith("#")}
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+://", target):
            continue
        file_part, _, anchor = target.partition("#")
        if file_part and not (path.parent / file_part).exists():
            broken.append(target)
        elif not file_part and anchor not in anchors:
            broken.append(target)
    assert not broken, f"{doc}: broken links {broken}"


SCRIPTS = sorted([*REPO.glob("scripts/**/*.py"), *REPO.glob("benchmarks/*.py")])
KEEPS_LINE_BREAKS = {"HelpFormatter", "argparse.RawDescriptionHelpFormatter", "argparse.RawTextHelpFormatter"}


def _module_docstring(tree: ast.Module) -> ast.Constant | None:
    first = tree.body[0] if tree.body else None
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        return first.value
    return None


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(REPO)))
def test_script_help_shows_the_examples_as_written(script):
    """`--help` prints the module docstring: its shell continuations must survive (a raw string) and its line
    breaks too (a formatter that does not re-wrap the description)."""
    source = script.read_text(encoding="utf-8")
    tree = ast.parse(source)
    doc = _module_docstring(tree)
    if doc is not None:
        literal = ast.get_source_segment(source, doc)
        joins = re.search(r"(?<!\\)(\\\\)*\\\n", literal)  # an unescaped backslash ending a line
        assert not joins or literal[0] in "rR", "a backslash-newline in a non-raw docstring joins two lines"
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and ast.unparse(call.func).endswith("ArgumentParser"):
            keywords = {k.arg: ast.unparse(k.value) for k in call.keywords}
            if keywords.get("description") == "__doc__":
                assert keywords.get("formatter_class") in KEEPS_LINE_BREAKS, f"line {call.lineno} re-wraps the doc"


def test_help_keeps_a_continued_example_on_its_own_lines():
    spec = importlib.util.spec_from_file_location("train_pose_help", REPO / "scripts" / "train_pose.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    text = module.build_parser().format_help()
    assert "--num-threads 1 \\\n        --max-minutes 16" in text
    assert "(default: " in text  # and the options still show their defaults
