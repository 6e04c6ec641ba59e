"""Report figures as PNG bytes: line and bar plots, 2-D scatter maps, image grids and annotated heatmaps.

Every function takes plain python / numpy data (image grids: a tensor) and returns the bytes of one PNG,
about 640 px wide at 100 dpi (image grids and wide heatmaps grow with their content). Figures are drawn
on ``matplotlib.figure.Figure`` with an explicit Agg canvas rather than through pyplot, so nothing here
changes the user's matplotlib backend or keeps figures alive in pyplot's global registry, and it works
without a display. PNGs carry no "Software" metadata, so the same data gives the same bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from aediff.data import tile_images, to_uint8

DPI = 100
WIDTH_IN = 6.4  # 640 px: readable at ~600 px in the report
HEIGHT_IN = 4.0
MIN_IMAGE_PX = 48  # an 8x8 digit is drawn as at least 48x48 screen pixels
GRID_PADDING_PX = 4
GRID_PADDING_GREY = 217  # light grey (0.85): separates both dark digits and white-background emoji


def _new_figure(width_in: float = WIDTH_IN, height_in: float = HEIGHT_IN) -> Figure:
    fig = Figure(figsize=(width_in, height_in), dpi=DPI)
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas
    return fig


def _to_png(fig: Figure, tight: bool = True) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(
        buffer, format="png", dpi=DPI, bbox_inches="tight" if tight else None, pad_inches=0.1,
        facecolor="white", metadata={"Software": None},
    )  # fmt: skip
    return buffer.getvalue()


def _class_colors(n: int) -> list[tuple[float, float, float, float]]:
    """``n`` distinct colours: tab10 up to 10 classes, tab20 up to 20, then tab20 repeated."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


def _format_value(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    return f"{value:.3g}" if abs(value) < 1 or abs(value) >= 1e5 else f"{value:.2f}"


def line_plot(
    series: dict[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    logx: bool = False,
    logy: bool = False,
    markers: bool = True,
    errors: dict[str, Sequence[float]] | None = None,
) -> bytes:
    """One line per entry of ``series`` (``name -> (xs, ys)``, equal lengths), with a legend.

    Non-finite ys leave a gap in their line. ``logx`` / ``logy`` use log axes (values must be > 0).
    ``errors``: optional ``name -> half-widths`` (one per point) drawn as error bars.
    """
    fig = _new_figure()
    ax = fig.add_subplot()
    errors = errors or {}
    for name, (xs, ys) in series.items():
        if len(xs) != len(ys):
            raise ValueError(f"line_plot series {name!r}: {len(xs)} xs but {len(ys)} ys")
        if name in errors:
            ax.errorbar(xs, ys, yerr=errors[name], marker="o", markersize=4, linewidth=1.6, capsize=3, label=name)
        else:
            ax.plot(xs, ys, marker="o" if markers else None, markersize=4, linewidth=1.6, label=name)
    ax.set_xscale("log" if logx else "linear")
    if logx:  # plain numbers (4, 16, 64) on a log axis read better than 4 x 10^0
        from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_yscale("log" if logy else "linear")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.3)
    if series:
        ax.legend(loc="best", fontsize=9)
    return _to_png(fig)


def bar_plot(values: dict[str, float], *, title: str, ylabel: str, errors: dict[str, float] | None = None) -> bytes:
    """One bar per entry of ``values`` (``name -> value``), each labelled with its value.

    ``errors``: optional ``name -> half-width`` drawn as error bars (names missing from it get none).
    A non-finite value gets no bar and the label "n/a".
    """
    names = list(values)
    heights = np.array([float(values[n]) for n in names], dtype=np.float64)
    finite = np.isfinite(heights)
    yerr = None
    if errors is not None:
        yerr = np.array([float(errors.get(n, 0.0)) for n in names], dtype=np.float64)
        yerr[~np.isfinite(yerr) | ~finite] = 0.0
    fig = _new_figure()
    ax = fig.add_subplot()
    positions = np.arange(len(names))
    colors = _class_colors(len(names))
    bars = ax.bar(
        positions, np.where(finite, heights, 0.0), yerr=yerr, capsize=4 if yerr is not None else 0,
        color=colors, edgecolor="black", linewidth=0.5,
    )  # fmt: skip
    for bar, height, err in zip(bars, heights, yerr if yerr is not None else np.zeros(len(names)), strict=True):
        # Above the error bar's end (below it for a negative bar), so label and error bar never overlap.
        tip = bar.get_height() + (err if bar.get_height() >= 0 else -err)
        ax.annotate(
            _format_value(height), (bar.get_x() + bar.get_width() / 2, tip), xytext=(0, 3 if tip >= 0 else -3),
            textcoords="offset points", ha="center", va="bottom" if tip >= 0 else "top", fontsize=9,
        )  # fmt: skip
    ax.set_xticks(positions, names)
    if sum(len(n) for n in names) > 60:  # long names would overlap horizontally
        for label in ax.get_xticklabels():
            label.set_rotation(30)
            label.set_horizontalalignment("right")
    ax.margins(y=0.12)  # room for the value labels above the bars
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    return _to_png(fig)


def _check_points(points: np.ndarray, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"scatter points must have shape [N, 2], got {points.shape}")
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if labels.shape[0] != points.shape[0]:
            raise ValueError(f"{points.shape[0]} points but {labels.shape[0]} labels")
    return points, labels


def _scatter(ax, points: np.ndarray, labels: np.ndarray | None, classes: list, colors: list) -> list:
    """Draw one panel; returns the legend handles (one per class, in ``classes`` order)."""
    size = 8 if len(points) <= 2000 else 3
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=size, alpha=0.7, color=colors[0], linewidths=0)
        return []
    handles = []
    for cls, color in zip(classes, colors, strict=True):
        mine = points[labels == cls]
        handles.append(ax.scatter(mine[:, 0], mine[:, 1], s=size, alpha=0.7, color=color, linewidths=0))
    return handles


def _class_names(classes: list, class_names: Sequence[str] | None) -> list[str]:
    if class_names is None:
        return [str(c) for c in classes]
    return [str(class_names[int(c)]) if 0 <= int(c) < len(class_names) else str(c) for c in classes]


def scatter_map(
    points: np.ndarray,
    labels: np.ndarray | None,
    *,
    title: str,
    class_names: Sequence[str] | None = None,
    xlabel: str = "component 1",
    ylabel: str = "component 2",
) -> bytes:
    """2-D map of ``points`` ``[N, 2]`` (e.g. latents projected by PCA), coloured by ``labels`` ``[N]``
    (integer classes, tab10) with a legend; ``labels=None`` draws one colour and no legend.

    ``class_names``: legend text per integer label (default: the label itself).
    """
    points, labels = _check_points(points, labels)
    classes = sorted(np.unique(labels).tolist()) if labels is not None else []
    fig = _new_figure(WIDTH_IN, 4.8)
    ax = fig.add_subplot()
    handles = _scatter(ax, points, labels, classes, _class_colors(max(len(classes), 1)))
    if handles:
        ax.legend(
            handles, _class_names(classes, class_names), title="class", loc="center left",
            bbox_to_anchor=(1.01, 0.5), fontsize=9, markerscale=2, frameon=False,
        )  # fmt: skip
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return _to_png(fig)


def scatter_maps(
    maps: dict[str, tuple[np.ndarray, np.ndarray | None]],
    *,
    title: str,
    class_names: Sequence[str] | None = None,
    xlabel: str = "component 1",
    ylabel: str = "component 2",
) -> bytes:
    """Side-by-side 2-D maps, one panel per entry of ``maps`` (``model name -> (points [N, 2], labels [N]
    or None)``), titled with the name; one legend for all panels (a class has the same colour in each)."""
    if not maps:
        raise ValueError("scatter_maps needs at least one map")
    checked = {name: _check_points(points, labels) for name, (points, labels) in maps.items()}
    classes = sorted({c for _, labels in checked.values() if labels is not None for c in np.unique(labels).tolist()})
    colors = _class_colors(max(len(classes), 1))
    panels = len(checked)
    columns = min(panels, 4)  # more than 4 panels wrap onto further rows
    rows = math.ceil(panels / columns)
    fig = _new_figure(max(WIDTH_IN, 3.0 * columns + 1.2), 3.2 * rows + 0.6)
    handles: list = []
    for i, (name, (points, labels)) in enumerate(checked.items()):
        ax = fig.add_subplot(rows, columns, i + 1)
        panel_handles = _scatter(ax, points, labels, classes, colors)
        handles = handles or panel_handles
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=9)
        if i % columns == 0:
            ax.set_ylabel(ylabel, fontsize=9)
        ax.tick_params(labelsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    if handles:
        fig.legend(
            handles, _class_names(classes, class_names), title="class", loc="center left",
            bbox_to_anchor=(1.0, 0.5), fontsize=9, markerscale=2, frameon=False,
        )  # fmt: skip
    return _to_png(fig)


def _tile(images: Tensor, nrow: int, scale: int) -> np.ndarray:
    """``[N, C, H, W]`` in [-1, 1] -> float RGB ``[rows * (H*scale + p) + p, cols * (W*scale + p) + p, 3]``
    in [0, 1], each image upscaled ``scale`` times by pixel repetition (nearest neighbour)."""
    x = to_uint8(torch.as_tensor(images).detach().cpu())
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = x.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)
    grid = tile_images(x, nrow, GRID_PADDING_PX, fill=GRID_PADDING_GREY)
    return grid.permute(1, 2, 0).numpy().astype(np.float32) / 255.0


def image_grid(
    images: Tensor,
    nrow: int,
    *,
    row_labels: list[str] | None = None,
    col_labels: list[str] | None = None,
    title: str | None = None,
) -> bytes:
    """Images ``[N, C, H, W]`` in [-1, 1] (C in 1, 3) as a grid of ``nrow`` images per row.

    Small images are upscaled by an integer factor with nearest neighbour so that each is at least
    48 px on its longer side (an 8x8 digit becomes 48x48), and the grid is drawn 1:1 onto the PNG, so
    pixels stay sharp. ``row_labels`` (one per row) go on the left, ``col_labels`` (one per column)
    above; ``title`` above everything.
    """
    images = torch.as_tensor(images)
    if images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] == 0:
        raise ValueError(f"image_grid needs images [N, C, H, W] with N >= 1, C in 1, 3; got {tuple(images.shape)}")
    if nrow < 1:
        raise ValueError(f"nrow must be >= 1, got {nrow}")
    n, _, h, w = images.shape
    cols = min(nrow, n)
    rows = math.ceil(n / cols)
    if row_labels is not None and len(row_labels) != rows:
        raise ValueError(f"{rows} rows but {len(row_labels)} row_labels")
    if col_labels is not None and len(col_labels) != cols:
        raise ValueError(f"{cols} columns but {len(col_labels)} col_labels")
    scale = max(1, math.ceil(MIN_IMAGE_PX / max(h, w)))
    grid = _tile(images, cols, scale)
    grid_h, grid_w = grid.shape[:2]

    # Margins in pixels around the grid for the labels; the axes get exactly grid_w x grid_h pixels.
    char_px = 7  # ~ width of one character at fontsize 10
    left = 8 + (char_px * max(len(s) for s in row_labels) + 8 if row_labels else 0)
    top = 8 + (22 if col_labels else 0) + (28 if title else 0)
    width, height = left + grid_w + 8, top + grid_h + 8
    fig = _new_figure(width / DPI, height / DPI)
    ax = fig.add_axes((left / width, 8 / height, grid_w / width, grid_h / height))
    ax.imshow(grid, interpolation="nearest", aspect="equal")
    p = GRID_PADDING_PX
    cell_h, cell_w = h * scale + p, w * scale + p
    if row_labels:
        ax.set_yticks([p + r * cell_h + (cell_h - p) / 2 for r in range(rows)], row_labels, fontsize=10)
    else:
        ax.set_yticks([])
    if col_labels:
        ax.xaxis.tick_top()
        ax.set_xticks([p + c * cell_w + (cell_w - p) / 2 for c in range(cols)], col_labels, fontsize=10)
    else:
        ax.set_xticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        fig.suptitle(title, y=1 - 6 / height, va="top", fontsize=12)
    return _to_png(fig, tight=False)  # the layout above is exact; "tight" would re-crop it


def heatmap(
    matrix: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    *,
    title: str,
    fmt: str = "{:.1f}",
    xlabel: str | None = None,
    ylabel: str | None = None,
    cmap: str = "viridis",
) -> bytes:
    """``matrix`` ``[R, C]`` as coloured cells annotated with ``fmt.format(value)`` (e.g. PSNR of models
    x noise levels), with a colour bar. Non-finite cells are left blank and annotated "n/a"."""
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.ndim != 2 or matrix.shape != (len(row_labels), len(col_labels)):
        raise ValueError(
            f"heatmap matrix shape {matrix.shape} does not match {len(row_labels)} rows x {len(col_labels)} columns"
        )
    rows, cols = matrix.shape
    fig = _new_figure(max(WIDTH_IN, 1.6 + 0.9 * cols), max(2.4, 1.2 + 0.5 * rows))
    ax = fig.add_subplot()
    masked = np.ma.masked_invalid(matrix)
    image = ax.imshow(masked, cmap=cmap, aspect="auto")
    colorbar = fig.colorbar(image, ax=ax, fraction=0.05, pad=0.02)
    colorbar.ax.tick_params(labelsize=8)
    for r in range(rows):
        for c in range(cols):
            value = matrix[r, c]
            if not np.isfinite(value):
                ax.text(c, r, "n/a", ha="center", va="center", fontsize=9, color="black")
                continue
            # Black text on light cells, white on dark ones (relative luminance of the cell's colour).
            red, green, blue, _ = image.cmap(image.norm(value))
            luminance = 0.2126 * red + 0.7152 * green + 0.0722 * blue
            ax.text(
                c, r, fmt.format(value), ha="center", va="center", fontsize=9,
                color="black" if luminance > 0.45 else "white",
            )  # fmt: skip
    ax.set_xticks(np.arange(cols), [str(s) for s in col_labels], fontsize=9)
    if max((len(str(s)) for s in col_labels), default=0) * cols > 80:  # would overlap horizontally
        for label in ax.get_xticklabels():
            label.set_rotation(30)
            label.set_horizontalalignment("right")
    ax.set_yticks(np.arange(rows), [str(s) for s in row_labels], fontsize=9)
    ax.tick_params(length=0)
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _to_png(fig)
