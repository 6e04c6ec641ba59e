"""Tests for aediff.reports: figures are valid PNGs, the HTML is escaped and self-contained, the report
folder is written in full, and the page really renders in headless Chromium (skipped without it)."""

from __future__ import annotations

import base64
import io
import json
import math
import re

import numpy as np
import pytest
import torch
from PIL import Image

from aediff.reports import (
    Figure,
    Section,
    Table,
    bar_plot,
    check_finite,
    find_chromium,
    format_cell,
    heatmap,
    image_grid,
    line_plot,
    render_in_chromium,
    render_report,
    scatter_map,
    scatter_maps,
    write_report,
)

needs_chromium = pytest.mark.skipif(
    find_chromium() is None, reason="Chromium is not installed (Debian: apt-get install chromium)"
)


def png_size(data: bytes) -> tuple[int, int]:
    image = Image.open(io.BytesIO(data))
    assert image.format == "PNG"
    image.load()  # decodes the whole file: a truncated PNG fails here
    return image.size


@pytest.fixture(scope="module")
def figures() -> list[Figure]:
    """One figure of each kind except scatter_maps (tested separately): 5 figures."""
    rng = np.random.default_rng(0)
    points, labels = rng.normal(size=(200, 2)), rng.integers(0, 10, size=200)
    sigmas = [0.1, 0.2, 0.5, 1.0]
    return [
        Figure("psnr-vs-sigma", line_plot(
            {"dae": (sigmas, [31.0, 29.0, 25.0, 20.0]), "diffusion": (sigmas, [29.0, 28.0, 26.0, 23.0])},
            title="Denoising", xlabel="noise sigma", ylabel="PSNR (dB)", logx=True,
        ), "PSNR against noise level"),
        Figure("fid", bar_plot({"ae": 12.3, "vae": 8.1}, title="FID", ylabel="FID", errors={"ae": 1.0}), "FID"),
        Figure("latents", scatter_map(points, labels, title="VAE latents"), "VAE latents, PCA"),
        Figure("samples", image_grid(torch.rand(8, 1, 8, 8) * 2 - 1, 4, row_labels=["ae", "vae"]), "Samples"),
        Figure("psnr-table", heatmap(rng.uniform(10, 30, (2, 3)), ["ae", "dae"], ["0.1", "0.2", "0.5"],
                                     title="PSNR (dB)"), "PSNR, models x sigma"),
    ]  # fmt: skip


def make_sections(figures: list[Figure]) -> list[Section]:
    table = Table("psnr", ["model", "sigma", "PSNR"], [["dae", 0.5, 25.123456], ["vae", 0.5, 22.0]], "PSNR (dB)")
    return [
        Section("denoising", "Denoising", "A DAE denoises better than a VAE.", "holds",
                "DAE 25.1 dB vs VAE 22.0 dB at sigma 0.5 (+3.1 dB; margin 0.5 dB).", figures[:2], [table]),
        Section("latents", "Latent maps", "VAE latents cluster by class.", "does not hold",
                "Silhouette 0.05 (needs > 0.2).", figures[2:3], [], notes="PCA of 200 test latents."),
        Section("samples", "Samples", "Diffusion samples look best.", "inconclusive",
                "FID 8.1 vs 12.3 within the seeds' spread.", figures[3:], []),
    ]  # fmt: skip


# --- figures ------------------------------------------------------------------------------------------
def test_figures_are_readable_pngs(figures):
    for figure in figures:
        width, height = png_size(figure.png)
        if figure.name == "samples":  # an image grid is as large as its content (see the test below)
            continue
        assert 400 <= width <= 1600 and 150 <= height <= 1200, (figure.name, width, height)
    # Same data, same bytes: no timestamp or software version in the PNG.
    assert bar_plot({"ae": 12.3, "vae": 8.1}, title="FID", ylabel="FID", errors={"ae": 1.0}) == figures[1].png


def test_scatter_maps_has_one_panel_per_model():
    rng = np.random.default_rng(1)
    maps = {name: (rng.normal(size=(50, 2)), rng.integers(0, 3, 50)) for name in ("ae", "vae", "dae")}
    width, _ = png_size(scatter_maps(maps, title="Latent maps"))
    assert width > 800  # three panels side by side
    png_size(scatter_map(rng.normal(size=(30, 2)), None, title="unlabelled"))
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        scatter_map(np.zeros((5, 3)), None, title="bad")


def test_image_grid_upscales_small_images_and_checks_labels():
    digits = torch.rand(6, 1, 8, 8) * 2 - 1
    width, height = png_size(image_grid(digits, 3))
    assert width >= 3 * 48 and height >= 2 * 48  # 8x8 digits drawn at >= 48 px
    rgb = torch.rand(4, 3, 32, 32) * 2 - 1
    png_size(image_grid(rgb, 2, row_labels=["a", "b"], col_labels=["x", "y"], title="RGB"))
    with pytest.raises(ValueError, match="row_labels"):
        image_grid(digits, 3, row_labels=["only one"])
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        image_grid(torch.zeros(2, 8, 8), 2)


# --- HTML ---------------------------------------------------------------------------------------------
def test_a_figure_given_a_drawing_is_drawn_once_when_first_read(figures):
    """Builders hand Figure a drawing function: the figures of seeds and snapshots that are never shown are
    never drawn, and one that is shown is drawn once."""
    drawn = []

    def draw() -> bytes:
        drawn.append(1)
        return figures[0].png

    figure = Figure("later", draw, "drawn when read")
    assert drawn == []
    assert figure.png == figures[0].png and figure.png == figures[0].png
    assert drawn == [1]


def test_render_report_escapes_text_and_is_self_contained(figures):
    evil = "<script>alert('x')</script>"
    sections = make_sections(figures)
    sections[0].figures[0] = Figure("evil", figures[0].png, evil)
    sections[1].notes = evil
    html = render_report(f"Report {evil}", sections, summary_rows=[{"model": evil, "FID": 8.1}], meta={"cmd": evil})
    assert html.count("<script>") == 1  # only the page's own monitor script
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert 'alt="&lt;script&gt;' in html
    # Nothing external: every src / href is inline data or an in-page anchor.
    for url in re.findall(r'(?:src|href)="([^"]*)"', html):
        assert url.startswith(("data:image/png;base64,", "#")), url
    for section in sections:
        assert f'<section id="{section.key}" data-verdict="{section.verdict}">' in html
        assert f'href="#{section.key}"' in html
    assert html.count('class="figure"') == 5
    assert '<td class="num">25.12</td>' in html


def test_sections_and_tables_are_validated():
    with pytest.raises(ValueError, match="verdict"):
        Section("a", "A", "claim", "maybe", "evidence")
    with pytest.raises(ValueError, match="section key"):
        Section("a b", "A", "claim", "holds", "evidence")
    with pytest.raises(ValueError, match="row 0"):
        Table("t", ["a", "b"], [[1]])
    with pytest.raises(ValueError, match="unique"):
        render_report("r", [Section("a", "A", "c", "holds", "e"), Section("a", "B", "c", "holds", "e")])


def test_format_cell_and_csv():
    assert [format_cell(v) for v in (23.4567, 0.012345, 1.5e-5, 3, "x", None, math.nan, 0.0)] == [
        "23.46", "0.0123", "1.5e-05", "3", "x", "n/a", "n/a", "0",
    ]  # fmt: skip
    csv = Table("t", ["model", "psnr"], [["vae", 22.123456789], ["ae", None]]).to_csv()
    assert csv == "model,psnr\nvae,22.123456789\nae,\n"


def test_check_finite_names_the_key_path():
    check_finite({"a": [1.0, 2, "x", None], "b": {"c": 3.5}})
    with pytest.raises(ValueError, match=r"psnr\.vae\[2\]"):
        check_finite({"psnr": {"ae": [1.0], "vae": [20.0, 21.0, math.nan]}})
    with pytest.raises(ValueError, match=r"fid"):
        check_finite({"fid": np.float64("inf")})


def test_write_report_writes_every_file(tmp_path, figures):
    sections = make_sections(figures)
    html = render_report("Report", sections, meta={"dataset": "digits"})
    tables = [t for s in sections for t in s.tables]
    metrics = {"psnr": {"dae": 25.1, "vae": 22.0}, "steps": 100}
    written = write_report(tmp_path / "report", html, figures, tables, metrics)
    expected = {"report.html", "metrics.json", "tables/psnr.csv", *(f"figures/{f.name}.png" for f in figures)}
    assert set(written) == expected
    assert sorted(p.relative_to(tmp_path / "report").as_posix() for p in (tmp_path / "report").rglob("*.*")) == sorted(
        expected
    )  # and no temporary files left behind
    assert json.loads(written["metrics.json"].read_text()) == metrics
    assert written["tables/psnr.csv"].read_text() == tables[0].to_csv()
    page = written["report.html"].read_text(encoding="utf-8")
    for figure in figures:
        assert written[f"figures/{figure.name}.png"].read_bytes() == figure.png
        assert f"data:image/png;base64,{base64.b64encode(figure.png).decode()}" in page


def test_a_rewritten_report_keeps_no_figure_or_table_of_the_old_one(tmp_path, figures):
    out = tmp_path / "report"
    write_report(out, "<html></html>", figures, [], {})
    (out / "notes.txt").write_text("mine")  # not the report's: never touched
    write_report(out, "<html></html>", figures[:1], [], {})
    assert sorted(p.name for p in (out / "figures").iterdir()) == [f"{figures[0].name}.png"]
    assert (out / "notes.txt").read_text() == "mine"


def test_write_report_refuses_nan_before_writing(tmp_path, figures):
    with pytest.raises(ValueError, match=r"fid\.vae"):
        write_report(tmp_path / "out", "<html></html>", figures[:1], [], {"fid": {"vae": math.nan}})
    assert not (tmp_path / "out").exists()


def test_render_in_chromium_explains_a_missing_browser(tmp_path, monkeypatch):
    monkeypatch.setattr("aediff.reports.html.find_chromium", lambda: None)
    with pytest.raises(FileNotFoundError, match="apt-get install chromium"):
        render_in_chromium(tmp_path / "report.html")


# --- in a browser -------------------------------------------------------------------------------------
@needs_chromium
def test_report_renders_in_chromium(tmp_path, figures):
    sections = make_sections(figures)
    html = render_report("Report", sections, summary_rows=[{"model": "vae", "FID": 8.1}], meta={"dataset": "x"})
    written = write_report(tmp_path, html, figures, [], {})
    result = render_in_chromium(written["report.html"], screenshot=tmp_path / "screenshot.png")
    assert result["errors"] == []
    assert result["figures_loaded"] == result["figures_total"] == 5
    assert result["sections"] == [s.key for s in sections]
    for section in sections:
        assert f'id="{section.key}"' in result["dom"]
    width, height = png_size((tmp_path / "screenshot.png").read_bytes())
    assert (width, height) == (1200, 3000)


@needs_chromium
def test_chromium_check_catches_a_broken_figure_and_external_resources(tmp_path, figures):
    broken = Figure("broken", base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB") + b"junk", "truncated PNG")
    sections = make_sections([*figures[:4], broken])
    html = render_report("Report", sections)
    # An external image: the page's Content-Security-Policy must block it, and the monitor report it.
    html = html.replace("</main>", '<img src="https://example.com/x.png" alt="external"></main>')
    (tmp_path / "report.html").write_text(html, encoding="utf-8")
    result = render_in_chromium(tmp_path / "report.html")
    assert result["figures_total"] == 5
    assert result["figures_loaded"] == 4
    assert any("broken" in e for e in result["errors"]), result["errors"]
    assert any("blocked" in e and "example.com" in e for e in result["errors"]), result["errors"]
