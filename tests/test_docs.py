"""The README and the docs it links to: every relative link and in-page anchor resolves."""

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
