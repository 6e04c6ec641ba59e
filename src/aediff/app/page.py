"""The `aediff serve` page: four tabs (Generate, Denoise, Explore, Report) on Gradio, over the functions of
``aediff.app.handlers``. This file only lays out the page and turns errors into messages on it: an
``AediffError`` becomes a ``gr.Error`` with its own words; anything else a one-line "internal error" (the
traceback goes to the server's log, never to the browser).

Requests go through Gradio's queue: ``CONCURRENCY`` run at once, ``QUEUE_SIZE`` wait; a long one (a
100-step sample) streams its frames and does not block the page.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from aediff.app import handlers, restore
from aediff.app.limits import (
    CONCURRENCY,
    MAX_COUNT,
    MAX_INTERPOLATION_FRAMES,
    MAX_UPLOAD_BYTES,
    QUEUE_SIZE,
    caps_text,
)
from aediff.diffusion.samplers import DIFFUSERS_SAMPLER_NAMES, SAMPLER_NAMES
from aediff.errors import AediffError
from aediff.evaluation.latents import umap_available
from aediff.models import Capability

log = logging.getLogger("aediff.app")


def _message(exc: Exception) -> gr.Error:
    if isinstance(exc, AediffError):
        return gr.Error(str(exc), **QUIET)
    log.exception("internal error in a request")
    return gr.Error(
        f"internal error ({type(exc).__name__}: {exc}); a bug in aediff - the server's log has the details", **QUIET
    )


def guarded(function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` with every error turned into a message on the page (generators too)."""
    if inspect.isgeneratorfunction(function):

        @functools.wraps(function)
        def stream(*args: Any, **kwargs: Any) -> Any:
            try:
                yield from function(*args, **kwargs)
            except gr.Error:
                raise
            except Exception as exc:
                raise _message(exc) from None

        return stream

    @functools.wraps(function)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:
            raise _message(exc) from None

    return call


# The page checks a run's or report's name itself (with a message); Gradio's own check would refuse a run
# trained from the page after the page was built.
CHECKED_HERE = {"allow_custom_value": True}
# Gradio 5+ prints every gr.Error's traceback on the server unless told not to (user errors are not bugs).
QUIET = {"print_exception": False} if "print_exception" in inspect.signature(gr.Error).parameters else {}
# Gradio 6 takes the theme in launch(), earlier versions in Blocks().
THEME_IN_LAUNCH = "theme" in inspect.signature(gr.Blocks.launch).parameters
THEME_FONTS = {"font": ["ui-sans-serif", "system-ui", "sans-serif"], "font_mono": ["ui-monospace", "monospace"]}


def theme() -> gr.themes.Base:
    """Gradio's default look with the system's fonts (the default fetches web fonts; the page works offline)."""
    return gr.themes.Default(**THEME_FONTS)


# The capabilities each tab's run list asks for, in the order build() lists the dropdowns (Generate, the latent
# map, interpolation).
RUN_LISTS = ((Capability.GENERATE,), (Capability.LATENT,), (Capability.LATENT, Capability.DIFFUSION_SAMPLER))


def _first(names: list[str]) -> str | None:
    return names[0] if names else None


def _run_choice(catalog: handlers.Catalog, capabilities: tuple[Capability, ...], **options: Any) -> gr.Dropdown:
    """A dropdown of the runs that can do all of ``capabilities``, the first chosen."""
    names = catalog.names(*capabilities)
    return gr.Dropdown(names, value=_first(names), **options, **CHECKED_HERE)


def build(catalog: handlers.Catalog) -> gr.Blocks:
    """The page for the runs of ``catalog``: a header, one tab per builder, and the small-VAE trainer that
    refreshes every run list."""
    styling = {} if THEME_IN_LAUNCH else {"theme": theme()}
    with gr.Blocks(title="aediff", analytics_enabled=False, **styling) as page:
        gr.Markdown("# aediff: autoencoders and diffusion models, side by side")
        runs_text = gr.Markdown(handlers.describe(catalog), elem_id="runs")
        gr.Markdown(caps_text(), elem_id="caps")
        with gr.Group(visible=not catalog.runs) as trainer:
            train_button = gr.Button("Train a small VAE on digits (about a minute)", elem_id="train")
            train_status = gr.Textbox(label="training", interactive=False, elem_id="train-status")
        with gr.Tab("Generate", elem_id="tab-generate"):
            g_run = _generate_tab(catalog)
        with gr.Tab("Denoise", elem_id="tab-denoise"):
            _denoise_tab(catalog)
        with gr.Tab("Restore", elem_id="tab-restore"):
            _restore_tab(catalog)
        with gr.Tab("Explore", elem_id="tab-explore"):
            e_run = _latent_map_tab(catalog)
            i_run = _interpolation_tab(catalog)
        with gr.Tab("Report", elem_id="tab-report"):
            _report_tab(catalog)
        _training(catalog, page, train_button, train_status, [runs_text, g_run, e_run, i_run, trainer])
    return page


def _generate_tab(catalog: handlers.Catalog) -> gr.Dropdown:
    """Generate: a run, its condition and sampler; the grid, the trajectory streamed while sampling. Returns
    the run list."""
    with gr.Row():
        with gr.Column():
            g_run = _run_choice(catalog, RUN_LISTS[0], label="run", elem_id="g-run")
            with gr.Row():
                g_class = gr.Textbox(
                    label="class (class-conditioned runs; blank: every class in turn)", elem_id="g-class"
                )
                g_negative_class = gr.Textbox(label="negative class", elem_id="g-negative-class")
            with gr.Row():
                g_prompt = gr.Textbox(label="prompt (text-conditioned runs)", elem_id="g-prompt")
                g_negative_prompt = gr.Textbox(label="negative prompt", elem_id="g-negative-prompt")
            with gr.Row():
                g_sampler = gr.Dropdown(
                    [handlers.DEFAULT, *SAMPLER_NAMES, *DIFFUSERS_SAMPLER_NAMES],
                    value=handlers.DEFAULT,
                    label="sampler (diffusion)",
                )
                g_steps = gr.Number(20, label="steps (diffusion)", precision=0, elem_id="g-steps")
                g_guidance = gr.Textbox(label="guidance, 0-20 (empty: the run's; 1 = none)", elem_id="g-guidance")
            with gr.Row():
                g_seed = gr.Number(0, label="seed", precision=0, minimum=0)
                g_count = gr.Slider(1, MAX_COUNT, value=16, step=1, label="images")
            g_button = gr.Button("Generate", variant="primary", elem_id="g-go")
        with gr.Column():
            g_grid = gr.Image(label="samples", type="pil", format="png", elem_id="g-grid")
            g_trajectory = gr.Image(label="trajectory", type="pil", format="png", elem_id="g-trajectory")
            g_info = gr.Markdown(elem_id="g-info")

    @guarded
    def on_generate(run, class_, negative_class, prompt, negative_prompt, sampler, steps, guidance, seed, count):
        request = handlers.GenerateRequest(
            run, class_, negative_class, prompt, negative_prompt, sampler, steps, guidance, seed, count
        )
        for grid, frame, text in handlers.generate(catalog, request):
            yield (grid if grid is not None else gr.update()), frame, text

    g_button.click(
        on_generate,
        [g_run, g_class, g_negative_class, g_prompt, g_negative_prompt, g_sampler, g_steps, g_guidance, g_seed,
         g_count],
        [g_grid, g_trajectory, g_info],
        api_name="generate",
    )  # fmt: skip
    return g_run


def _image_input(upload_id: str) -> tuple[gr.File, gr.Sketchpad]:
    """An image to work on: an upload box (``upload_id``) and a canvas used when nothing is uploaded."""
    upload = gr.File(
        label=f"upload an image (at most {MAX_UPLOAD_BYTES // 1024 // 1024} MB)", type="filepath", elem_id=upload_id
    )
    return upload, gr.Sketchpad(label="or draw one (used when nothing is uploaded)", type="pil")


def _denoise_tab(catalog: handlers.Catalog) -> None:
    """Denoise: an uploaded or drawn image, corrupted, cleaned by every model that can, with PSNR and SSIM."""
    with gr.Row():
        with gr.Column():
            d_upload, d_drawing = _image_input("d-upload")
            with gr.Row():
                d_kind = gr.Radio(list(handlers.CORRUPTIONS), value="gaussian", label="corruption")
                d_level = gr.Number(0.3, label="sigma (gaussian) or share (mask)", elem_id="d-level")
            with gr.Row():
                d_steps = gr.Number(10, label="diffusion steps (N)", precision=0, elem_id="d-steps")
                d_seed = gr.Number(0, label="seed", precision=0, minimum=0)
            d_button = gr.Button("Denoise with every model", variant="primary", elem_id="d-go")
        with gr.Column():
            d_gallery = gr.Gallery(label="outputs", columns=4, elem_id="d-gallery")
            d_table = gr.Dataframe(
                headers=["run", "family", "steps", "PSNR (dB)", "SSIM"], label="against the clean image",
                elem_id="d-table",
            )  # fmt: skip
            d_info = gr.Markdown(elem_id="d-info")

    @guarded
    def on_denoise(upload, drawing, kind, level, steps, seed):
        image = handlers.input_image(upload, _composite(drawing))
        result = handlers.denoise_all(catalog, image, kind, level, steps, seed)
        return result.images, result.table, result.text

    d_button.click(
        on_denoise, [d_upload, d_drawing, d_kind, d_level, d_steps, d_seed], [d_gallery, d_table, d_info],
        api_name="denoise",
    )  # fmt: skip


def _restore_tab(catalog: handlers.Catalog) -> None:
    """Restore: an uploaded or drawn image, a mask (chosen or drawn) or an upscale factor; every model that can
    restore fills it beside the classical controls, with the PSNR on the hole and a diffusion trajectory."""
    with gr.Row():
        with gr.Column():
            r_upload, r_drawing = _image_input("rs-upload")
            with gr.Row():
                r_kind = gr.Radio(list(restore.DEGRADATIONS), value="box", label="degradation", elem_id="rs-kind")
                r_value = gr.Textbox("10", label="box side, random share, lines, or upscale factor", elem_id="rs-value")
            r_mask = gr.Sketchpad(label="the hole, for 'drawn mask' (light strokes are filled)", type="pil")
            with gr.Row():
                r_method = gr.Dropdown(list(restore.METHODS), value=restore.DEFAULT_METHOD, label="method (diffusion)")
                r_steps = gr.Number(20, label="steps (diffusion)", precision=0, elem_id="rs-steps")
                r_sigma = gr.Number(0.5, label="one-pass sigma (diffusion)", elem_id="rs-sigma")
                r_seed = gr.Number(0, label="seed", precision=0, minimum=0)
            r_button = gr.Button("Restore with every model", variant="primary", elem_id="rs-go")
        with gr.Column():
            r_gallery = gr.Gallery(label="restorations", columns=4, elem_id="rs-gallery")
            r_table = gr.Dataframe(
                headers=["model or control", "method", "seconds", "PSNR on the hole (dB)", "SSIM"],
                label="against the original", elem_id="rs-table",
            )  # fmt: skip
            r_trajectory = gr.Image(label="diffusion trajectory", type="pil", format="png", elem_id="rs-trajectory")
            r_info = gr.Markdown(elem_id="rs-info")

    @guarded
    def on_restore(upload, drawing, kind, value, mask, method, steps, sigma, seed):
        image = handlers.input_image(upload, _composite(drawing))
        request = restore.RestoreRequest(kind, value, method, steps, sigma, seed)
        result = restore.restore_all(catalog, image, request, _composite(mask))
        return result.images, result.table, result.trajectory, result.text

    r_button.click(
        on_restore,
        [r_upload, r_drawing, r_kind, r_value, r_mask, r_method, r_steps, r_sigma, r_seed],
        [r_gallery, r_table, r_trajectory, r_info],
        api_name="restore",
    )  # fmt: skip


def _latent_map_tab(catalog: handlers.Catalog) -> gr.Dropdown:
    """Explore, first part: the test split's codes on a 2-D map; a click decodes a point. Returns the run list."""
    methods = ["pca", "umap"] if umap_available() else ["pca"]
    e_run = _run_choice(catalog, RUN_LISTS[1], label="run (AE, VAE, DAE)", elem_id="e-run")
    e_method = gr.Radio(methods, value="pca", label="map (UMAP when umap-learn is installed)")
    e_button = gr.Button("Show the map", elem_id="e-go")
    with gr.Row():
        e_map = gr.Image(label="latent map: click a point", type="pil", format="png", elem_id="e-map")
        with gr.Column():
            e_point = gr.Image(label="clicked point", type="pil", format="png", elem_id="e-point")
            with gr.Row():
                e_x = gr.Number(label="x (pixel)", elem_id="e-x")
                e_y = gr.Number(label="y (pixel)", elem_id="e-y")
            e_decode = gr.Button("Decode the point at x, y", elem_id="e-decode")
            e_info = gr.Markdown(elem_id="e-info")

    @guarded
    def on_map(run, method):
        return handlers.latent_map_image(catalog, run, method)

    e_button.click(on_map, [e_run, e_method], [e_map, e_info], api_name="latent_map")

    @guarded
    def on_point(run, method, x, y):
        return handlers.map_point(catalog, run, method, x, y)

    e_decode.click(on_point, [e_run, e_method, e_x, e_y], [e_point, e_info], api_name="map_point")

    @guarded
    def on_click(run, method, event: gr.SelectData):
        x, y = event.index
        image, text = handlers.map_point(catalog, run, method, x, y)
        return x, y, image, text

    e_map.select(on_click, [e_run, e_method], [e_x, e_y, e_point, e_info], api_name=False)
    return e_run


def _interpolation_tab(catalog: handlers.Catalog) -> gr.Dropdown:
    """Explore, second part: a path between two test images' codes or two seeds. Returns the run list."""
    gr.Markdown(
        "### Interpolation\nAE / VAE / DAE: a straight line between the codes of two test images (their "
        f"indices). Diffusion: between two seeds. {handlers.DDIM_INVERSION_NOTE}"
    )
    with gr.Row():
        i_run = _run_choice(catalog, RUN_LISTS[2], label="run", elem_id="i-run")
        i_a = gr.Number(0, label="A: test image (AE) or seed (diffusion)", precision=0)
        i_b = gr.Number(1, label="B", precision=0)
        i_frames = gr.Slider(2, MAX_INTERPOLATION_FRAMES, value=8, step=1, label="frames")
    i_t = gr.Slider(0, 1, value=0.5, step=0.05, label="t (0 = A, 1 = B)", elem_id="i-t")
    i_button = gr.Button("Interpolate", elem_id="i-go")
    with gr.Row():
        i_path = gr.Image(label="path from A to B", type="pil", format="png", elem_id="i-path")
        i_image = gr.Image(label="at t", type="pil", format="png", elem_id="i-image")
    i_info = gr.Markdown(elem_id="i-info")

    @guarded
    def on_interpolate(run, a, b, t, frames):
        return handlers.interpolate(catalog, run, a, b, t, frames)

    i_button.click(on_interpolate, [i_run, i_a, i_b, i_t, i_frames], [i_path, i_image, i_info],
                   api_name="interpolate")  # fmt: skip
    return i_run


def _report_tab(catalog: handlers.Catalog) -> None:
    """Report: a comparison report folder given with --report, inlined."""
    reports = list(catalog.reports)
    r_name = gr.Dropdown(
        reports, value=_first(reports), label="report folder (given with --report)", elem_id="r-name",
        **CHECKED_HERE,
    )  # fmt: skip
    r_button = gr.Button("Open the report", elem_id="r-go")
    r_html = gr.HTML(elem_id="r-html")

    @guarded
    def on_report(name):
        return handlers.report_html(catalog, name)

    r_button.click(on_report, [r_name], [r_html], api_name="report")


def _training(
    catalog: handlers.Catalog, page: gr.Blocks, button: gr.Button, status: gr.Textbox, listed: list[Any]
) -> None:
    """The small-VAE trainer, and the run lists refreshed when the page loads and after training: ``listed``
    is [the runs' description, one dropdown per RUN_LISTS entry, the trainer's group]."""

    def refreshed() -> list[Any]:
        """The run lists as they are now (a run trained from the page joins them)."""
        updates = [gr.update(choices=catalog.names(*caps), value=_first(catalog.names(*caps))) for caps in RUN_LISTS]
        return [handlers.describe(catalog), *updates, gr.update(visible=not catalog.runs)]

    @guarded
    def on_train(progress=gr.Progress()):  # noqa: B008 (Gradio's way to ask for a progress bar)
        name = handlers.train_small(catalog, lambda fraction, text: progress(fraction, desc=text))
        return [f"trained {name}", *refreshed()]

    button.click(on_train, None, [status, *listed], api_name="train_small", concurrency_limit=1)
    page.load(refreshed, None, listed, api_name=False, queue=False)  # never waits behind long requests


def _composite(drawing: Any) -> Any:
    """The picture of a Sketchpad value (a dict with "composite"), or None when nothing was drawn."""
    image = drawing.get("composite") if isinstance(drawing, dict) else drawing
    return handlers.drawing_to_image(image) if image is not None else None


def launch(page: gr.Blocks, host: str, port: int, block: bool = True) -> gr.Blocks:
    """Queue ``page`` (CONCURRENCY at once, QUEUE_SIZE waiting) and serve it on host:port. Gradio refuses an
    upload larger than twice the page's cap; the page's own check gives the message below that."""
    page.queue(default_concurrency_limit=CONCURRENCY, max_size=QUEUE_SIZE)
    page.launch(
        server_name=host,
        server_port=port,
        max_file_size=2 * MAX_UPLOAD_BYTES,
        **({"theme": theme()} if THEME_IN_LAUNCH else {}),
        show_error=False,
        quiet=True,
        prevent_thread_lock=not block,
        inbrowser=False,
        share=False,
    )
    return page


def serve(paths: list[Path], host: str, port: int, reports: list[Path] | None = None) -> None:
    """What `aediff serve` runs: load the runs, build the page, serve until Ctrl-C."""
    catalog = handlers.Catalog.open(paths, reports)
    print(f"aediff serve: {len(catalog.runs)} runs on http://{host}:{port} (Ctrl-C stops)")
    launch(build(catalog), host, port)
