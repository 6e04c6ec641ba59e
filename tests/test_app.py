"""`aediff serve` from Python: every tab's function called through gradio_client against a live server on
tiny digits runs; the upload checks and caps; interpolation; the command without Gradio."""

import io
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")

from aediff.app import handlers, limits  # noqa: E402
from aediff.app.limits import InputError  # noqa: E402


@pytest.fixture(scope="module")
def client(app_server):
    return gradio_client.Client(app_server, verbose=False)


def _png(path, size=(8, 8), mode="L"):
    array = (np.arange(size[0] * size[1]) % 255).reshape(size[1], size[0]).astype(np.uint8)
    Image.fromarray(array).convert(mode).save(path)
    return path


def _opens(path) -> Image.Image:
    image = Image.open(path)
    image.load()
    return image


# --- through gradio_client --------------------------------------------------------------------------
def test_generate_with_a_class_streams_the_trajectory_and_ends_with_the_grid(client):
    job = client.submit("diffusion", "7", "", "", "", "dpm++", 4, "", 0, 4, api_name="/generate")
    outputs = list(job)
    assert len(outputs) >= 4  # a frame per step, then the grid
    grid, trajectory, text = job.result()
    assert _opens(grid).width >= 64 and _opens(trajectory).width >= 64
    assert "dpm++, 4 steps" in text


def test_generate_with_a_diffusers_scheduler(client):
    grid, trajectory, text = client.predict(
        "diffusion", "3", "", "", "", "diffusers:UniPCMultistepScheduler", 3, "", 0, 4, api_name="/generate"
    )
    assert _opens(grid).width >= 32 and "diffusers:UniPCMultistepScheduler, 3 steps" in text


def test_generate_from_a_vae_prior(client):
    grid, trajectory, text = client.predict("vae", "", "", "", "", handlers.DEFAULT, 20, "", 1, 9, api_name="/generate")
    assert _opens(grid).size[0] > 0 and trajectory is None and "prior" in text


def test_generate_refuses_a_huge_step_count_and_a_class_for_an_unconditioned_run(client):
    with pytest.raises(Exception, match=f"steps must be from 1 to {limits.MAX_STEPS}"):
        client.predict("diffusion", "", "", "", "", "dpm++", 10**6, "", 0, 2, api_name="/generate")
    with pytest.raises(Exception, match="draw a given class"):
        client.predict("vae", "3", "", "", "", handlers.DEFAULT, 20, "", 0, 2, api_name="/generate")
    with pytest.raises(Exception, match="not a class of this run"):
        client.predict("diffusion", "12", "", "", "", "dpm++", 2, "", 0, 2, api_name="/generate")


def test_denoise_shows_every_model_with_psnr_and_ssim(client, tmp_path):
    upload = gradio_client.handle_file(str(_png(tmp_path / "digit.png", (16, 16))))
    gallery, table, text = client.predict(upload, None, "gaussian", 0.3, 3, 0, api_name="/denoise")
    captions = [item["caption"] for item in gallery]
    assert any("diffusion (diffusion, 1 step)" in c for c in captions)
    assert any("diffusion (diffusion, 3 steps)" in c for c in captions)
    assert any(c.startswith("dae") for c in captions) and any(c.startswith("vae") for c in captions)
    rows = table["data"]
    assert len(rows) == 1 + 4  # the input; vae, dae, diffusion 1 and 3 steps
    for row in rows:
        assert isinstance(row[3], float) and math.isfinite(row[3]) and -1 <= row[4] <= 1
    for item in gallery:
        image = item["image"]
        assert _opens(image if isinstance(image, str) else image["path"]).size[0] > 0


def test_denoise_the_image_as_it_is(client, tmp_path):
    upload = gradio_client.handle_file(str(_png(tmp_path / "digit.png", mode="RGBA")))
    gallery, table, text = client.predict(upload, None, "none", 0.3, 3, 0, api_name="/denoise")
    assert table["data"][0][3] == "inf (identical)" and len(gallery) == 2 + 2  # clean, input; vae, dae


def test_denoise_with_a_mask_skips_diffusion_with_the_reason(client, tmp_path):
    upload = gradio_client.handle_file(str(_png(tmp_path / "digit.png")))
    _, table, text = client.predict(upload, None, "mask", 0.3, 3, 0, api_name="/denoise")
    assert "Gaussian noise of a known level" in text and {r[1] for r in table["data"]} == {"-", "vae", "dae"}


def test_denoise_refuses_a_non_image_and_an_oversized_file(client, tmp_path):
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not an image")
    with pytest.raises(Exception, match="not an image"):
        client.predict(gradio_client.handle_file(str(text_file)), None, "none", 0.3, 1, 0, api_name="/denoise")
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + bytes(limits.MAX_UPLOAD_BYTES + 10))
    with pytest.raises(Exception, match="capped at 2 MB"):
        client.predict(gradio_client.handle_file(str(big)), None, "none", 0.3, 1, 0, api_name="/denoise")


def test_restore_runs_every_model_beside_the_controls_with_the_psnr_on_the_hole(client, tmp_path):
    upload = gradio_client.handle_file(str(_png(tmp_path / "digit.png", (16, 16))))
    gallery, table, trajectory, text = client.predict(
        upload, None, "box", "3", None, "(each model's default)", 4, 0.5, 0, api_name="/restore"
    )
    rows = {row[0]: row for row in table["data"]}
    assert set(rows) == {"mean fill", "biharmonic", "vae", "dae", "diffusion"}
    assert rows["diffusion"][1] == "ddnm" and rows["vae"][1] == "one-pass"
    for row in rows.values():
        assert isinstance(row[3], float) and math.isfinite(row[3]) and -1 <= row[4] <= 1
    captions = [item["caption"] for item in gallery]
    assert captions[:2] == ["original", "degraded (box 3)"] and len(gallery) == 2 + 5
    assert _opens(trajectory if isinstance(trajectory, str) else trajectory["path"]).width >= 96
    assert "exactly the pixels" in text


def test_restore_super_resolution_skips_repaint_with_the_reason(client, tmp_path):
    upload = gradio_client.handle_file(str(_png(tmp_path / "digit.png", (16, 16))))
    _, table, trajectory, text = client.predict(upload, None, "upscale", "2", None, "repaint", 4, 0.5, 0,
                                                api_name="/restore")  # fmt: skip
    names = {row[0] for row in table["data"]}
    assert names == {"nearest", "bicubic", "vae", "dae"} and trajectory is None
    assert "RePaint fills masked pixels" in text


def test_restore_refuses_what_cannot_be_done(client, tmp_path):
    upload = gradio_client.handle_file(str(_png(tmp_path / "digit.png")))
    with pytest.raises(Exception, match="does not divide"):
        client.predict(upload, None, "upscale", "3", None, "ddnm", 4, 0.5, 0, api_name="/restore")
    with pytest.raises(Exception, match="draw the hole"):
        client.predict(upload, None, "drawn mask", "", None, "ddnm", 4, 0.5, 0, api_name="/restore")
    with pytest.raises(Exception, match="one-pass noise level"):
        client.predict(upload, None, "half", "", None, "one-pass", 4, -1, 0, api_name="/restore")
    with pytest.raises(Exception, match="does not fit"):
        client.predict(upload, None, "box", "8", None, "ddnm", 4, 0.5, 0, api_name="/restore")


def test_a_drawn_mask_is_scaled_to_each_model_and_its_strokes_are_filled(app_runs):
    from aediff.app import restore

    runs, _ = app_runs
    catalog = handlers.Catalog.open([runs])
    drawing = Image.new("L", (64, 64), 0)
    drawing.paste(255, (0, 0, 32, 64))  # the left half stroked: fill it
    image = Image.fromarray((np.arange(256).reshape(16, 16) % 255).astype(np.uint8))
    mask = restore.drawn_mask(drawing, (8, 8))
    assert (
        mask.missing(torch.zeros(1, 1, 8, 8))[0, 0, :, :4].all()
        and not mask.missing(torch.zeros(1, 1, 8, 8))[0, 0, :, 4:].any()
    )
    result = restore.restore_all(
        catalog, image, restore.RestoreRequest("drawn mask", method="one-pass", sigma=1.0), drawing
    )
    methods = {row[0]: row[1] for row in result.table}
    assert methods["diffusion"] == "one-pass" and methods["dae"] == "one-pass"
    assert result.trajectory is None  # a one-pass restoration walks no steps


def _raw_call(url: str, api_name: str, data: list) -> str:
    """Call an endpoint over plain HTTP (gradio_client would upload a local path itself): the event stream."""
    import httpx

    event = httpx.post(f"{url}gradio_api/call/{api_name}", json={"data": data}, timeout=30).json()["event_id"]
    return httpx.get(f"{url}gradio_api/call/{api_name}/{event}", timeout=30).text


def test_a_request_cannot_name_a_file_outside_the_uploads(app_server, app_runs):
    runs, report = app_runs
    for path in ["/etc/passwd", str(runs / "vae" / "config.json"), str(report.parent / "outside.png")]:
        file = {"path": path, "meta": {"_type": "gradio.FileData"}}
        stream = _raw_call(app_server, "denoise", [file, None, "none", 0.3, 1, 0])
        assert "event: error" in stream and "not an image" not in stream, stream  # refused before it is read
    good = _raw_call(app_server, "report", ["report"])
    assert "event: complete" in good and "Comparison report" in good


def test_the_map_and_a_clicked_point(client):
    image, text = client.predict("vae", "pca", api_name="/latent_map")
    assert _opens(image).size == (handlers.MAP_PIXELS, handlers.MAP_PIXELS) and "PCA" in text
    point, text = client.predict("vae", "pca", 240, 240, api_name="/map_point")
    assert _opens(point).size[0] > 0 and "test image" in text and "class" in text


def test_interpolation_latent_and_diffusion(client):
    path, at_t, text = client.predict("dae", 0, 5, 0.5, 4, api_name="/interpolate")
    assert _opens(path).size[0] > _opens(path).size[1] and "linear in the latent" in text
    path, at_t, text = client.predict("diffusion", 0, 1, 0.25, 3, api_name="/interpolate")
    assert _opens(at_t).size[0] > 0 and "DDIM inversion is not in aediff" in text


def test_the_report_is_inlined_and_reads_nothing_outside_its_folder(client):
    page = client.predict("report", api_name="/report")
    assert "Comparison report" in page and "data:image/png;base64," in page
    assert "../outside.png" in page  # left as a link, not read


# --- the functions themselves ------------------------------------------------------------------------
def test_upload_caps_bombs_and_modes(tmp_path):
    for mode in ("RGBA", "P", "1", "CMYK", "LA", "I;16", "I", "F"):
        path = tmp_path / f"{mode.replace(';', '')}.{'tif' if mode in ('CMYK', 'I', 'F') else 'png'}"
        source = Image.fromarray((np.arange(64).reshape(8, 8) * 4).astype(np.uint8))
        source = source.convert(mode) if mode not in ("I;16",) else Image.fromarray(
            (np.arange(64).reshape(8, 8) * 1000).astype(np.uint16)
        )  # fmt: skip
        source.save(path)
        image = limits.read_upload(path)
        assert image.mode in ("L", "RGB"), mode
        tensor = limits.image_to_tensor(image, (1, 8, 8))
        assert tensor.shape == (1, 1, 8, 8) and tensor.min() >= -1 and tensor.max() <= 1
    bomb = io.BytesIO()
    Image.new("1", (5000, 5000)).save(bomb, "PNG")  # a few kB that decode to 25 megapixels
    with pytest.raises(InputError, match="megapixels"):
        limits.decode_image(bomb.getvalue())
    huge = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(huge, "PNG")  # past PIL's own bomb threshold: refused at the header
    with pytest.raises(InputError, match="decompression bomb"):
        limits.decode_image(huge.getvalue())
    with pytest.raises(InputError, match="not an image"):
        limits.decode_image(b"GIF89a garbage")


def test_slerp_keeps_the_ends_and_the_norm():
    a, b = torch.randn(1, 1, 8, 8), torch.randn(1, 1, 8, 8)
    path = handlers.slerp(a, b, torch.tensor([0.0, 0.5, 1.0]))
    assert torch.allclose(path[0], a[0], atol=1e-5) and torch.allclose(path[2], b[0], atol=1e-5)
    assert abs(path[1].norm() - (a.norm() + b.norm()) / 2) < 0.25 * a.norm()


def test_no_runs_says_how_to_train_and_trains_one_through_the_page(tmp_path, unused_port):
    from aediff.app.page import build, launch

    catalog = handlers.Catalog.open([tmp_path])
    assert "aediff train" in handlers.describe(catalog)
    with pytest.raises(InputError, match="aediff train"):
        catalog.get("anything")
    catalog.train_steps = 5
    port = unused_port()
    page = launch(build(catalog), "127.0.0.1", port, block=False)
    try:
        client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
        with pytest.raises(Exception, match="aediff train"):
            client.predict("", "", "", "", "", handlers.DEFAULT, 20, "", 0, 2, api_name="/generate")
        status, runs_text, *_ = client.predict(api_name="/train_small")
        assert status == "trained digits-vae" and "digits-vae" in runs_text
        assert (tmp_path / "digits-vae" / "config.json").is_file() and catalog.names() == ["digits-vae"]
        grid, _, _ = client.predict("digits-vae", "", "", "", "", handlers.DEFAULT, 20, "", 0, 2, api_name="/generate")
        assert _opens(grid).size[0] > 0
    finally:
        page.close()


def test_serve_a_missing_folder_is_one_line_and_exits_1(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "aediff.cli", "serve", str(tmp_path / "nothing")], capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and "does not exist" in done.stderr and "Traceback" not in done.stderr


def test_serve_without_gradio_says_how_to_install_and_exits_2(tmp_path):
    blocker = tmp_path / "gradio.py"
    blocker.write_text("raise ImportError('blocked')")
    code = (
        "import importlib.util, sys; real = importlib.util.find_spec;"
        "importlib.util.find_spec = lambda n, *a: None if n == 'gradio' else real(n, *a);"
        "sys.argv = ['aediff', 'serve']; from aediff.cli import main; main()"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "pip install 'aediff[app]'" in done.stderr and "Traceback" not in done.stderr


# --- colour and greyscale: each model gets the image in its own channels, and the text says so -------------
def test_channel_note_says_what_each_model_was_given():
    colour = Image.fromarray(np.dstack([np.zeros((4, 4), np.uint8), np.full((4, 4), 9, np.uint8)] * 2)[..., :3])
    grey = Image.new("L", (4, 4), 9)
    colourless = grey.convert("RGB")  # an RGB file without colour: its luma is the image itself
    models = {"g1": 1, "g2": 1, "c": 3}
    assert limits.channel_note(colour, models).startswith("Your image has colour; the greyscale model(s) g1, g2 were")
    assert "repeated" not in limits.channel_note(colour, models)
    assert limits.channel_note(grey, models) == (
        "Your image is greyscale; the colour model(s) c were given it repeated on 3 channels (nothing is lost)."
    )
    assert limits.channel_note(colourless, models) == "" and limits.channel_note(colour, {"c": 3}) == ""


@pytest.fixture(scope="module")
def grey_and_colour(tmp_path_factory):
    """A catalog of a greyscale AE (digits) and a colour AE (random 8x8 RGB images), one step each."""
    from aediff.training.train import train

    root = tmp_path_factory.mktemp("channels")
    images = np.random.default_rng(0).integers(0, 256, (16, 8, 8, 3), dtype=np.uint8)
    np.savez(root / "colour.npz", images=images)
    for name, data in (("grey", "digits"), ("colour", f"npz:{root / 'colour.npz'}")):
        training = {"max_steps": 1, "batch_size": 8, "tensorboard": False}
        train("ae", root / "runs" / name, data, model={"channels": (8, 16)}, training=training, progress=False)
    return handlers.Catalog.open([root / "runs"])


def test_denoise_and_restore_say_how_the_image_was_converted(grey_and_colour):
    from aediff.app import restore

    rng = np.random.default_rng(1)
    colour = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    grey = colour.convert("L")
    lost = "Your image has colour; the greyscale model(s) grey were given its luma (ITU-R 601)"
    repeated = "Your image is greyscale; the colour model(s) colour were given it repeated on 3 channels"
    request = restore.RestoreRequest("box", 3)
    for image, said, unsaid in ((colour, lost, repeated), (grey, repeated, lost)):
        for text in (
            handlers.denoise_all(grey_and_colour, image, "none").text,
            restore.restore_all(grey_and_colour, image, request).text,
        ):
            assert said in text and unsaid not in text, text
    assert "Your image" not in handlers.denoise_all(grey_and_colour, grey.convert("RGB"), "none").text
