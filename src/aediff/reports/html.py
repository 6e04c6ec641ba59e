"""The report as one self-contained HTML file, its side files, and a check that it renders in a browser.

A report is a list of :class:`Section` s, one per claim (e.g. "a VAE's samples beat an AE's"), each with a
verdict, the evidence in one sentence, and its :class:`Figure` s (PNG bytes) and :class:`Table` s.
:func:`render_report` turns them into one HTML5 string with everything inline (CSS, PNGs as base64 data
URIs): the file can be mailed or archived and opens offline. A Content-Security-Policy forbids every
external resource, so a stray link to a CDN would show up as an error instead of silently loading.
:func:`write_report` writes it with ``metrics.json``, one CSV per table and one PNG per figure.

:func:`render_in_chromium` opens a written report in headless Chromium (Debian package ``chromium``) and
reads back what a tiny script at the top of the page records: JavaScript errors, failed image loads, and
how many figures decoded. That is how the tests know the report really displays.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
import numbers
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from aediff.runs import write_files_atomically
from aediff.version import __version__

VERDICTS = ("holds", "does not hold", "inconclusive")
# Figure / table names become file names and section keys become HTML ids: keep them to a safe alphabet.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_RESERVED_IDS = ("report-contents", "report-summary")  # ids the page uses itself

Cell = str | float | int | None


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"{kind} {name!r} must be letters, digits, '.', '_' or '-' and start with a letter or digit")


@dataclass
class Figure:
    """One figure: ``name`` (file name stem and ``data-name``), ``image`` (the PNG's bytes, or a function of
    no arguments that draws them), ``caption``. A drawing function runs the first time ``png`` is read, so a
    figure that is built but never shown (another training seed's, a snapshot's) costs nothing to draw."""

    name: str
    image: bytes | Callable[[], bytes]
    caption: str

    def __post_init__(self) -> None:
        _check_name("figure name", self.name)

    @property
    def png(self) -> bytes:
        """The PNG's bytes, drawn now if they were not yet."""
        if callable(self.image):
            self.image = self.image()
        return self.image


@dataclass
class Table:
    """One table: ``rows`` of cells (str, int, float; None for a missing value), one per column.

    The HTML shows floats rounded (:func:`format_cell`); :meth:`to_csv` keeps them at full precision.
    """

    name: str
    columns: list[str]
    rows: list[list[Cell]]
    caption: str = ""

    def __post_init__(self) -> None:
        _check_name("table name", self.name)
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(f"table {self.name!r} row {i} has {len(row)} cells for {len(self.columns)} columns")

    def to_csv(self) -> str:
        """The table as CSV text: a header line, then one line per row; floats in full (``repr``)
        precision, None as an empty field, lines ending in ``\\n``."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(self.columns)
        for row in self.rows:
            writer.writerow(["" if cell is None else cell for cell in row])
        return out.getvalue()


@dataclass
class Section:
    """One claim of the report.

    ``key``: the section's HTML id (and anchor in the contents). ``verdict``: one of :data:`VERDICTS`.
    ``evidence``: one sentence with the numbers and the margin that decided the verdict.
    """

    key: str
    title: str
    claim: str
    verdict: str
    evidence: str
    figures: list[Figure] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    notes: str = ""
    control: str = ""  # what the claim had to beat (the trivial baseline that should lose)

    def __post_init__(self) -> None:
        _check_name("section key", self.key)
        if self.key in _RESERVED_IDS:
            raise ValueError(f"section key {self.key!r} is used by the page itself; choose another")
        if self.verdict not in VERDICTS:
            raise ValueError(f"section {self.key!r}: verdict must be one of {VERDICTS}, got {self.verdict!r}")


# --- numbers ----------------------------------------------------------------------------------------
def format_cell(value: Cell) -> str:
    """A table cell as text: floats with 2 decimals from 1 up, 3 significant digits below 1, scientific
    below 0.001 and from 1e6 (23.4567 -> "23.46", 0.012345 -> "0.0123", 1.5e-5 -> "1.5e-05"); ints and
    strings as they are; None and NaN as "n/a"."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or isinstance(value, numbers.Integral):
        return str(value)
    if isinstance(value, numbers.Real):
        x = float(value)
        if math.isnan(x):
            return "n/a"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        if x == 0:
            return "0"
        if abs(x) < 1e-3 or abs(x) >= 1e6:
            return f"{x:.3g}"
        return f"{x:.2f}" if abs(x) >= 1 else f"{x:.3g}"
    return str(value)


def check_finite(obj: Any, path: str = "") -> None:
    """Raise ValueError naming the key path (e.g. ``psnr.vae[3]``) of the first NaN or infinity in
    ``obj`` (nested dicts, lists and tuples of numbers and strings); do nothing when all are finite."""
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            check_finite(value, f"{path}.{key}" if path else str(key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            check_finite(value, f"{path}[{i}]")
    elif isinstance(obj, numbers.Real) and not isinstance(obj, numbers.Integral):
        if not math.isfinite(float(obj)):
            raise ValueError(f"non-finite number {float(obj)} at {path or '(top level)'}; metrics must be finite")


# --- the page -----------------------------------------------------------------------------------------
# Runs before anything else on the page; records into <html data-*> what a headless browser's --dump-dom
# then shows: script errors and failed resource loads (data-errors, a JSON list of strings), and on
# 'load' how many img.figure decoded (data-figures-loaded) out of how many (data-figures-total).
_MONITOR_SCRIPT = """\
(function () {
  var root = document.documentElement;
  function record(message) {
    var errors = root.dataset.errors ? JSON.parse(root.dataset.errors) : [];
    errors.push(String(message));
    root.dataset.errors = JSON.stringify(errors);
  }
  window.addEventListener('error', function (event) {
    var target = event.target;
    if (target && target !== window && target.tagName) {
      var what = target.getAttribute('data-name') || String(target.src || target.href || '').slice(0, 80);
      record('failed to load ' + target.tagName.toLowerCase() + ' ' + what);
    } else {
      record((event.message || 'error') + ' at ' + (event.filename || '?') + ':' + (event.lineno || 0));
    }
  }, true);
  window.addEventListener('unhandledrejection', function (event) { record('unhandled rejection: ' + event.reason); });
  document.addEventListener('securitypolicyviolation', function (event) {
    record('blocked external resource: ' + event.blockedURI);
  });
  window.addEventListener('load', function () {
    var figures = document.querySelectorAll('img.figure');
    var loaded = 0;
    for (var i = 0; i < figures.length; i++) {
      if (figures[i].complete && figures[i].naturalWidth > 0) loaded++;
    }
    root.dataset.figuresLoaded = String(loaded);
    root.dataset.figuresTotal = String(figures.length);
  });
})();"""

# Everything inline; nothing may be fetched (fonts included: system-ui is the platform's own font).
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"

_STYLE = """\
:root { --fg: #1f2328; --muted: #59636e; --border: #d1d9e0; --soft: #f6f8fa;
        --holds: #1a7f37; --fails: #cf222e; --unsure: #6e7781; }
* { box-sizing: border-box; }
body { margin: 0; background: #fff; color: var(--fg);
       font: 16px/1.55 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1000px; margin: 0 auto; padding: 2rem 1.25rem 4rem; }
h1 { font-size: 1.9rem; line-height: 1.25; margin: 0 0 1rem; }
h2 { font-size: 1.35rem; line-height: 1.3; margin: 0 0 .75rem; }
a { color: #0969da; text-decoration: none; } a:hover { text-decoration: underline; }
code { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: .85em; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1.25rem; margin: 0 0 1.5rem;
          padding: .75rem 1rem; font-size: .9rem; background: var(--soft); border: 1px solid var(--border);
          border-radius: 6px; }
dl.meta dt { color: var(--muted); } dl.meta dd { margin: 0; overflow-wrap: anywhere; }
.badge { display: inline-block; padding: .05rem .6rem; border-radius: 999px; font-size: .8rem;
         font-weight: 600; color: #fff; white-space: nowrap; vertical-align: middle; }
.badge.holds { background: var(--holds); } .badge.does-not-hold { background: var(--fails); }
.badge.inconclusive { background: var(--unsure); }
nav ul { margin: 0; padding-left: 0; list-style: none; } nav li { margin: .25rem 0; }
section { margin-top: 2.5rem; padding-top: 1.5rem; border-top: 1px solid var(--border); }
section h2 .badge { margin-left: .5rem; font-size: .85rem; }
p.claim, p.evidence, p.control, p.notes { margin: .4rem 0; }
p.notes { color: var(--muted); font-size: .95rem; }
figure { margin: 1.5rem 0; }
img.figure { display: block; max-width: 100%; height: auto; margin: 0 auto; }
figcaption { margin-top: .5rem; color: var(--muted); font-size: .9rem; text-align: center; }
.table-scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 0 auto; font-size: .9rem; }
th, td { padding: .3rem .75rem; border-bottom: 1px solid var(--border); text-align: left; }
th { background: var(--soft); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
#report-summary { margin-top: 2rem; }
footer { margin-top: 3rem; color: var(--muted); font-size: .85rem; }"""


def _badge(verdict: str) -> str:
    return f'<span class="badge {verdict.replace(" ", "-")}">{escape(verdict)}</span>'


def _is_number(value: Cell) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _table_html(columns: Sequence[str], rows: Sequence[Sequence[Cell]], caption: str, name: str) -> str:
    head = "".join(f"<th>{escape(str(c))}</th>" for c in columns)
    body = "\n".join(
        "<tr>" + "".join(
            f'<td class="num">{escape(format_cell(v))}</td>' if _is_number(v) else f"<td>{escape(format_cell(v))}</td>"
            for v in row
        ) + "</tr>"
        for row in rows
    )  # fmt: skip
    caption_html = f"\n<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return (
        f'<figure class="table" data-name="{escape(name)}"><div class="table-scroll"><table>\n'
        f"<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table></div>{caption_html}</figure>"
    )


def _figure_html(figure: Figure) -> str:
    data = base64.b64encode(figure.png).decode("ascii")
    alt = figure.caption or figure.name
    return (
        f'<figure><img class="figure" data-name="{escape(figure.name)}" alt="{escape(alt)}" '
        f'src="data:image/png;base64,{data}">\n<figcaption>{escape(figure.caption)}</figcaption></figure>'
    )


def _section_html(section: Section) -> str:
    parts = [
        f'<section id="{escape(section.key)}" data-verdict="{escape(section.verdict)}">',
        f"<h2>{escape(section.title)} {_badge(section.verdict)}</h2>",
        f'<p class="claim"><strong>Claim.</strong> {escape(section.claim)}</p>',
        f'<p class="evidence"><strong>Evidence.</strong> {escape(section.evidence)}</p>',
    ]
    if section.control:
        parts.append(f'<p class="control"><strong>Control.</strong> {escape(section.control)}</p>')
    parts += [_figure_html(f) for f in section.figures]
    parts += [_table_html(t.columns, t.rows, t.caption, t.name) for t in section.tables]
    if section.notes:
        parts.append(f'<p class="notes">{escape(section.notes)}</p>')
    parts.append("</section>")
    return "\n".join(parts)


def _summary_html(summary_rows: Sequence[Mapping[str, Cell]]) -> str:
    columns: list[str] = []  # the union of the rows' keys, in first-seen order
    for row in summary_rows:
        columns += [k for k in row if k not in columns]
    rows = [[row.get(c) for c in columns] for row in summary_rows]
    return f'<div id="report-summary">\n<h2>At a glance</h2>\n{_table_html(columns, rows, "", "summary")}\n</div>'


def render_report(
    title: str,
    sections: Sequence[Section],
    *,
    summary_rows: Sequence[Mapping[str, Cell]] = (),
    meta: Mapping[str, str] | None = None,
    meta_tables: Sequence[Table] = (),
) -> str:
    """The report as one self-contained HTML5 document (a str; write it as UTF-8).

    Layout: ``title``; the ``meta`` block (label -> value, in the given order; e.g. dataset, budget, date,
    machine, aediff version, command) and the ``meta_tables`` below it (e.g. each model's training); the
    contents (a link and verdict badge per section); the ``summary_rows`` table (one dict per row, columns = the
    union of the keys in first-seen order; omitted when empty); then the sections. All text is HTML-escaped.

    Raises:
        ValueError: two sections share a key, or two figures share a name.
    """
    keys = [s.key for s in sections]
    if len(set(keys)) != len(keys):
        raise ValueError(f"section keys must be unique, got {keys}")
    _check_unique("figure", [f.name for s in sections for f in s.figures])
    meta_html = "".join(f"<dt>{escape(str(k))}</dt><dd>{escape(str(v))}</dd>" for k, v in (meta or {}).items())
    contents = "\n".join(
        f'<li><a href="#{escape(s.key)}">{escape(s.title)}</a> {_badge(s.verdict)}</li>' for s in sections
    )
    body = [
        "<main>",
        f"<h1>{escape(title)}</h1>",
        f'<dl class="meta">{meta_html}</dl>' if meta_html else "",
        *(_table_html(t.columns, t.rows, t.caption, t.name) for t in meta_tables),
        f'<nav id="report-contents">\n<h2>Contents</h2>\n<ul>\n{contents}\n</ul>\n</nav>',
        _summary_html(summary_rows) if summary_rows else "",
        *(_section_html(s) for s in sections),
        f"<footer>Written by aediff {escape(__version__)}.</footer>",
        "</main>",
    ]
    # The charset and the CSP come before the monitor script: neither runs code, and the CSP must precede
    # everything it governs.
    head = [
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        f"<script>\n{_MONITOR_SCRIPT}\n</script>",
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        f"<style>\n{_STYLE}\n</style>",
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n' + "\n".join(head) + "\n</head>\n<body>\n"
        + "\n".join(part for part in body if part) + "\n</body>\n</html>\n"
    )  # fmt: skip


def _check_unique(kind: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"two {kind}s are named {name!r}; {kind} names must be unique")
        seen.add(name)


def write_report(
    out_dir: Path, html: str, figures: Sequence[Figure], tables: Sequence[Table], metrics: Mapping[str, Any]
) -> dict[str, Path]:
    """Write the report folder::

        out_dir/report.html          ``html`` (from :func:`render_report`), UTF-8
        out_dir/metrics.json         ``metrics``, strictly finite JSON
        out_dir/tables/<name>.csv    each table's :meth:`Table.to_csv`
        out_dir/figures/<name>.png   each figure's PNG

    Everything is checked before the first write, and the files are replaced together through the run
    folder's journaled writer (``aediff.runs.write_files_atomically``): a crash leaves the old report or the
    whole new one, never a mix. Returns ``relative path ->
    absolute path`` of every file written.

    Raises:
        ValueError: a NaN or infinity in ``metrics`` (the message names its key path), or two figures /
            two tables with the same name.
        TypeError: ``metrics`` holds something JSON cannot represent (e.g. a numpy array: use ``.tolist()``).
    """
    out_dir = Path(out_dir).resolve()
    check_finite(metrics)
    metrics_json = json.dumps(metrics, indent=2, allow_nan=False) + "\n"
    _check_unique("figure", [f.name for f in figures])
    _check_unique("table", [t.name for t in tables])
    files: dict[str, bytes] = {}
    files.update({f"figures/{f.name}.png": f.png for f in figures})
    files.update({f"tables/{t.name}.csv": t.to_csv().encode("utf-8") for t in tables})
    files["metrics.json"] = metrics_json.encode("utf-8")
    files["report.html"] = html.encode("utf-8")
    write_files_atomically(out_dir, files)
    _remove_stale(out_dir, files)
    return {relative: out_dir / relative for relative in files}


def _remove_stale(out_dir: Path, written: Mapping[str, bytes]) -> None:
    """Delete the figures and tables an earlier report left in ``out_dir`` that this one did not write (a
    report replaced with --overwrite must not keep a figure of the old one beside the new)."""
    for folder, suffix in (("figures", ".png"), ("tables", ".csv")):
        for path in (out_dir / folder).glob(f"*{suffix}"):
            if f"{folder}/{path.name}" not in written:
                path.unlink()


# --- rendering in a browser -------------------------------------------------------------------------
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # the sandbox cannot start as root (CI, containers); the page is our own file
    "--disable-gpu",
    "--disable-dev-shm-usage",  # containers often have a 64 MB /dev/shm, too small for Chromium
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
CHROMIUM_MISSING = (
    "Chromium is not installed; the report check renders the page in headless Chromium. "
    "On Debian / Ubuntu: sudo apt-get install chromium"
)


def find_chromium() -> str | None:
    """Path of a Chromium executable (``chromium``, then ``chromium-browser``), or None."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _run_chromium(executable: str, args: list[str], timeout: float) -> str:
    """Run Chromium with a fresh, empty profile; return its stdout. Raises on timeout or failure."""
    with tempfile.TemporaryDirectory(prefix="aediff-chromium-") as profile:
        command = [executable, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args]
        # Its own session, so that on a timeout the whole process group (renderer, GPU and utility
        # processes) can be killed, not only the launcher.
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True,
        )  # fmt: skip
        try:
            stdout, stderr = process.communicate(timeout=max(timeout, 1.0))
        except subprocess.TimeoutExpired:
            if os.name == "posix":  # the whole session: the browser's helper processes too
                os.killpg(process.pid, signal.SIGKILL)
            else:
                process.kill()
            process.communicate()
            raise TimeoutError(f"Chromium did not finish within {timeout:.0f} s: {shlex.join(command)}") from None
    if process.returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"Chromium exited with status {process.returncode}: {shlex.join(command)}\n{tail}")
    return stdout


class _DomSummary(HTMLParser):
    """Collects from a serialized DOM the <html> element's attributes, the section ids and the number of
    img.figure elements."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root: dict[str, str | None] | None = None
        self.sections: list[str] = []
        self.figures = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "html" and self.root is None:
            self.root = attributes
        elif tag == "section" and attributes.get("id"):
            self.sections.append(str(attributes["id"]))
        elif tag == "img" and "figure" in (attributes.get("class") or "").split():
            self.figures += 1


def render_in_chromium(html_path: Path, screenshot: Path | None = None, timeout: float = 60) -> dict[str, Any]:
    """Open ``html_path`` in headless Chromium, let it load (5 s of virtual time), and report::

        {"errors": [str, ...],     # script errors, failed or blocked loads; [] for a healthy page
         "figures_loaded": int,    # img.figure elements that decoded (complete, naturalWidth > 0)
         "figures_total": int,     # img.figure elements on the page
         "sections": [str, ...],   # ids of the <section> elements, in page order
         "dom": str}               # the DOM after loading, serialized (Chromium's --dump-dom)

    The page's own monitor script (see :func:`render_report`) records errors and figure counts; a page
    without it, or whose 'load' event did not fire, gets an error saying so. ``screenshot``: also save a
    1200 px wide PNG of the top 3000 px there (a second Chromium run). ``timeout``: seconds for all of it.

    Raises:
        FileNotFoundError: Chromium is not installed (Debian / Ubuntu package ``chromium``), or no
            ``html_path``.
        TimeoutError, RuntimeError: Chromium hung or failed.
    """
    executable = find_chromium()
    if executable is None:
        raise FileNotFoundError(CHROMIUM_MISSING)
    html_path = Path(html_path).resolve()
    if not html_path.is_file():
        raise FileNotFoundError(f"no report at {html_path}")
    deadline = time.monotonic() + timeout
    url = html_path.as_uri()
    dom = _run_chromium(executable, ["--virtual-time-budget=5000", "--dump-dom", url], timeout)
    if screenshot is not None:
        screenshot = Path(screenshot).resolve()
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        args = ["--virtual-time-budget=5000", "--hide-scrollbars", "--window-size=1200,3000"]
        _run_chromium(executable, [*args, f"--screenshot={screenshot}", url], deadline - time.monotonic())
        if not screenshot.is_file():
            raise RuntimeError(f"Chromium did not write the screenshot {screenshot}")

    summary = _DomSummary()
    summary.feed(dom)
    summary.close()
    root = summary.root or {}
    errors: list[str] = []
    if root.get("data-errors"):
        try:
            errors = [str(e) for e in json.loads(str(root["data-errors"]))]
        except (ValueError, TypeError):
            errors = [str(root["data-errors"])]
    if root.get("data-figures-loaded") is None:
        errors.append("the page's 'load' event did not fire in time, or the page has no monitor script")
        loaded, total = 0, summary.figures
    else:
        loaded, total = int(str(root["data-figures-loaded"])), int(str(root.get("data-figures-total") or 0))
    sections = summary.sections
    return {"errors": errors, "figures_loaded": loaded, "figures_total": total, "sections": sections, "dom": dom}
