"""Shared fixtures: tiny data and tiny models keep the suite fast on a 2-core CPU."""

from __future__ import annotations

import os

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs one worker per core: a worker's own ops on one thread, or the workers oversubscribe the
    # cores (tiny tensors gain nothing from intra-op threads anyway). Processes the tests start are not affected.
    torch.set_num_threads(1)

TINY = {"channels": (8, 16), "bottleneck_dim": 8}


@pytest.fixture(scope="session")
def digits_train():
    from aediff.data import load_dataset

    return load_dataset("digits", "train")


@pytest.fixture(scope="session")
def digits_test():
    from aediff.data import load_dataset

    return load_dataset("digits", "test")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def losses_while_fitting():
    """Adam on one fixed batch; the k-th step re-seeds with k % noise_draws, so the loss's random draws
    repeat and early and late losses are comparable. Returns the list of losses."""

    def fit(model, images, steps, noise_draws, lr=3e-3):
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        losses = []
        for step in range(steps):
            torch.manual_seed(step % noise_draws)
            loss, _ = model({"images": images})
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses

    return fit


# --- tiny runs on digits (8x8), trained in the test --------------------------------------------------------
TINY = ["channels=8,16"]  # model assignments every tiny run shares
TINY_DIFFUSION = [*TINY, "attention_resolutions=4", "embedding_dim=16", "steps=3"]


def train_tiny(folder, specs, steps: int) -> None:
    """Train ``specs`` [(name, family, CLI flags, model assignments)] on digits into folder/name, ``steps``
    steps each (batch 32, no TensorBoard)."""
    from aediff.cli import _model_overrides
    from aediff.training.train import train

    for name, family, flags, assignments in specs:
        train(
            family,
            folder / name,
            "digits",
            model=_model_overrides(family, flags, assignments),
            training={"max_steps": steps, "batch_size": 32, "tensorboard": False},
            progress=False,
        )


@pytest.fixture(scope="session")
def tiny_runs():
    """``train_tiny``, for test modules (conftest is not imported by name)."""
    return train_tiny


# --- `aediff serve`: tiny runs and one server for the page's tests (tests/test_app*.py) ---------------------
@pytest.fixture(scope="session")
def app_runs(tmp_path_factory):
    """A VAE, a DAE and a class-conditioned diffusion model on digits, a few seconds of training each, in
    one folder of runs; and a fake `compare` report folder (report.html + a figure)."""
    pytest.importorskip("gradio")
    from PIL import Image

    root = tmp_path_factory.mktemp("app")
    runs = root / "runs"
    train_tiny(
        runs,
        [
            ("vae", "vae", {"bottleneck": 8}, TINY),
            ("dae", "dae", {"bottleneck": 8, "noise": "gaussian:0.3"}, TINY),
            ("diffusion", "diffusion", {"condition": "class"}, TINY_DIFFUSION),
        ],
        steps=30,
    )
    report = root / "report"
    (report / "figures").mkdir(parents=True)
    Image.new("RGB", (40, 20), (200, 30, 30)).save(report / "figures" / "bars.png")
    (report / "report.html").write_text(
        "<html><body><h1>Comparison report</h1><p>verdict: holds</p>"
        '<img src="figures/bars.png" alt="bars"><img src="../outside.png" alt="outside"></body></html>'
    )
    (root / "outside.png").write_bytes(b"not to be read")
    return runs, report


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def unused_port():
    """A function returning a port of 127.0.0.1 that is free now."""
    return _free_port


@pytest.fixture(scope="session")
def app_server(app_runs):
    """The page for ``app_runs`` served on a free port of 127.0.0.1 (in a thread); yields its URL."""
    from aediff.app.handlers import Catalog
    from aediff.app.page import build, launch

    runs, report = app_runs
    catalog = Catalog.open([runs], [report])
    port = _free_port()
    page = launch(build(catalog), "127.0.0.1", port, block=False)
    yield f"http://127.0.0.1:{port}/"
    page.close()


def save_diffusers_unet(folder, scheduler: str = "DDPMScheduler"):
    """A tiny random diffusers UNet2DModel (8x8, one channel) and a ``scheduler`` (a diffusers scheduler class
    name), saved in ``folder`` as diffusers saves them (unet/, scheduler/); returns ``folder``."""
    import diffusers
    import torch

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4,
    )  # fmt: skip
    unet.save_pretrained(folder / "unet")
    getattr(diffusers, scheduler)(num_train_timesteps=100).save_pretrained(folder / "scheduler")
    return folder
