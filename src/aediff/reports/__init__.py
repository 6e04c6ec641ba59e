"""The `aediff compare` report: figures as PNG bytes, one self-contained HTML file, and a browser check.

from aediff.reports import Figure, Section, Table, line_plot, render_report, write_report
fig = Figure("psnr-vs-noise", line_plot({"dae": (sigmas, psnrs)}, title=..., xlabel=..., ylabel=...), "...")
html = render_report("aediff compare", [Section("denoising", ..., figures=[fig], tables=[])], meta=...)
write_report(out_dir, html, [fig], [], metrics)
"""

from aediff.reports.figures import bar_plot, heatmap, image_grid, line_plot, scatter_map, scatter_maps
from aediff.reports.html import (
    VERDICTS,
    Figure,
    Section,
    Table,
    check_finite,
    find_chromium,
    format_cell,
    render_in_chromium,
    render_report,
    write_report,
)

__all__ = [
    "VERDICTS",
    "Figure",
    "Section",
    "Table",
    "bar_plot",
    "check_finite",
    "find_chromium",
    "format_cell",
    "heatmap",
    "image_grid",
    "line_plot",
    "render_in_chromium",
    "render_report",
    "scatter_map",
    "scatter_maps",
    "write_report",
]
