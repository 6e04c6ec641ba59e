"""Every figure in the README and docs/ comes from a committed results file beside it.

The rule, per markdown section (a heading and the lines up to the next heading): a section that quotes a
figure -- a decimal number (2.08, 0.981) or a percentage (42%) -- must cite a results file, written as a
path `benchmarks/results/NAME.json`, `.md` or `NAME.{json,md}`, and every results file a section cites must
exist. The command that wrote the file is stated beside it; that part is for the reviewer.

What is not a figure: anything in a fenced code block or in inline code (commands, config values such as
`0.1`, `1e-4 .. 0.02`), link targets and URLs, and version numbers (three-part ones such as 2.13.0, or
after Python / torch / CC-BY). To quote a setting in prose, put it in inline code.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Left out of this check: none.
EXCLUDED: set[str] = set()
PAGES = [ROOT / "README.md", *sorted(p for p in (ROOT / "docs").glob("*.md") if p.name not in EXCLUDED)]

FIGURE = re.compile(r"\d+\.\d+|\d+\s?%")
NOT_FIGURES = [
    re.compile(r"\]\([^)]*\)|https?://\S+"),  # link targets, URLs
    re.compile(r"\b\d+\.\d+\.\d+\b|\b(?:Python|torch|CC-BY)\s+\d+(?:\.\d+)+\+?"),  # versions
]
INLINE_CODE = re.compile(r"`[^`]*`")  # may run over a line break, as in markdown
CITATION = re.compile(r"benchmarks/results/([\w.-]+?)\.(json|md|\{[\w,]+\})")
HEADING = re.compile(r"#{1,6}\s")
FENCE = re.compile(r"\s*(```|~~~)")


def prose_lines(text: str) -> list[str]:
    """The page line for line, with fenced code blocks and inline code blanked out."""
    lines, in_code = [], False
    for line in text.split("\n"):
        if FENCE.match(line):
            in_code = not in_code
        lines.append("" if in_code or FENCE.match(line) else line)
    blank = INLINE_CODE.sub(lambda code: re.sub(r"[^\n]", " ", code.group()), "\n".join(lines))
    return blank.split("\n")


def sections(text: str) -> list[tuple[int, int]]:
    """The page's sections as (first line index, end index): a heading and the lines up to the next one."""
    starts = [0] + [i for i, line in enumerate(prose_lines(text)) if HEADING.match(line)]
    ends = starts[1:] + [len(text.split("\n"))]
    return [(start, end) for start, end in zip(starts, ends, strict=True) if end > start]


def cited_files(line: str) -> list[str]:
    """The results files a line cites, with `NAME.{json,md}` expanded."""
    files = []
    for name, ext in CITATION.findall(line):
        files += [f"benchmarks/results/{name}.{e}" for e in ext.strip("{}").split(",")]
    return files


def problems(text: str, root: Path = ROOT) -> list[str]:
    """What breaks the rule in a markdown page: uncited figures, and citations of files that do not exist."""
    lines, prose = text.split("\n"), prose_lines(text)
    found = []
    for start, end in sections(text):
        title = lines[start].strip()
        cited = [f for line in lines[start:end] for f in cited_files(line)]
        found += [f"section {title!r} cites {f}, which does not exist" for f in cited if not (root / f).is_file()]
        if cited:
            continue
        for i in range(start, end):
            line = prose[i]
            for pattern in NOT_FIGURES:
                line = pattern.sub(" ", line)
            if FIGURE.search(line):
                found.append(f"line {i + 1}: a figure in a section that cites no results file: {lines[i].strip()}")
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_figure_in_the_docs_cites_a_results_file(page: Path) -> None:
    assert problems(page.read_text()) == []


def test_the_check_catches_an_uncited_figure_and_a_missing_file(tmp_path: Path) -> None:
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "thing.json").write_text("{}")
    (tmp_path / "benchmarks" / "results" / "thing.md").write_text("")
    page = """# Page

Settings are not figures: `--set lr=0.001`, torch 2.13.0, Python 3.10+.

```bash
aediff train vae --noise gaussian:0.5   # 13.5 s here
```

## Cited

FID 2.08 and 98% accuracy (`benchmarks/results/thing.{json,md}`).

## Uncited

The model reaches FID 3.10.

### Cites a file that is not there

FID 1.5 (`benchmarks/results/gone.json`).
"""
    found = problems(page, tmp_path)
    assert len(found) == 2, found
    assert found[0].startswith("line 15: a figure in a section that cites no results file")
    assert "gone.json, which does not exist" in found[1]
    # Citing a results file that exists is what makes the uncited section pass.
    fixed = page.replace("FID 3.10.", "FID 3.10 (`benchmarks/results/thing.json`).")
    assert len(problems(fixed, tmp_path)) == 1
    assert problems("A percentage counts too: 42% of them.\n", tmp_path) != []
    assert problems("Inline code may run over a line break: `--set\nlr=0.001`.\n", tmp_path) == []
