"""The README and docs/ hold together: the README keeps its two set-up commands on top and stays short, every
relative link and image in README.md, CHANGELOG.md and docs/*.md points at a file that exists (and at a
heading that exists, when it names one), every page of docs/ is linked from the README, and the changelog has
an entry for the version the package says it is."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from job import __version__

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"
CHANGELOG = ROOT / "CHANGELOG.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
DOCUMENTS = [README, CHANGELOG, *PAGES]

FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def prose(text: str) -> str:
    """The text without fenced code blocks and code spans, where a ``[x](y)`` is no link."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def links(path: Path) -> list[str]:
    return LINK.findall(prose(path.read_text(encoding="utf-8")))


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped (``-`` and ``_`` kept), spaces to hyphens,
    ``-1``, ``-2`` ... after repeats."""
    found: set[str] = set()
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        heading = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not heading:
            continue
        slug = re.sub(r"[^\w\- ]", "", heading[1].lower()).replace(" ", "-")
        candidate, n = slug, 0
        while candidate in found:
            n += 1
            candidate = f"{slug}-{n}"
        found.add(candidate)
    return found


def test_the_readme_starts_with_the_two_set_up_commands() -> None:
    """What a fresh machine needs: one command installs and runs the demo, one installs and runs the tests
    (the second verbatim, as .ci/run runs it)."""
    text = README.read_text(encoding="utf-8")
    blocks = FENCE.findall(text)
    first = re.search(r"^```[a-z]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    assert blocks and first is not None
    assert text.index(first[0]) < text.index("\n## "), "the set-up commands come before the first section"
    commands = [line.strip() for line in first[1].splitlines() if line.strip()]
    assert commands == ['pip install . && faceatlas run', 'pip install ".[dev]" && pytest']
    assert 'pip install ".[dev]" && pytest' in (ROOT / ".ci" / "run").read_text(encoding="utf-8")


def test_the_readme_stays_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) < 300, f"README.md has {len(lines)} lines: move detail into docs/"


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_and_heading_that_exist(path: Path) -> None:
    found = links(path)
    assert found or path == CHANGELOG, f"{path.name}: no links found (is the pattern still right?)"
    broken = []
    for target in found:
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        if not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no heading #{anchor} in {resolved.name})")
    assert not broken, f"{path.name}: {broken}"


def test_the_docs_links_are_found() -> None:
    """The link pattern itself: links and images, with and without anchors, but nothing inside code."""
    sample = ("See [the guide](docs/guide.md#inputs) and ![a map](docs/map.png \"title\").\n"
              "`[not](a-link.md)`\n```\n[nor](this.md)\n```\n")
    assert LINK.findall(prose(sample)) == ["docs/guide.md#inputs", "docs/map.png"]


def test_every_docs_page_is_linked_from_the_readme() -> None:
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in links(README)}
    assert PAGES and not [page.name for page in PAGES if page.resolve() not in linked]


def test_the_changelog_has_the_packages_version() -> None:
    text = CHANGELOG.read_text(encoding="utf-8")
    assert re.search(rf"^## \[{re.escape(__version__)}\]", text, re.MULTILINE), (
        f"CHANGELOG.md has no '## [{__version__}]' entry for job.__version__")
