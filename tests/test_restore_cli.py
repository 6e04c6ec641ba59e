"""`aediff restore` as a user types it: the grid's rows and the printed scores, for an autoencoder's one pass
and a class-conditioned diffusion model's RePaint with several samples per image."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from test_cli_conventions import V1, aediff

pytestmark = pytest.mark.slow  # two `aediff` processes


def printed_json(out: str) -> dict:
    return json.loads(out[out.index("{") : out.rindex("}") + 1])


def test_restore_writes_the_grid_and_scores_the_missing_pixels(tmp_path):
    code, out = aediff("restore", V1 / "dae", "--mask", "box:3", "--images", "4", "--out", "dae.png", cwd=tmp_path)
    assert code == 0, out
    scores = printed_json(out)
    assert scores["method"] == "one-pass" and scores["degradation"] == "box 3" and scores["images"] == 4
    assert len(scores["psnr_missing_per_image_db"]) == 4 and "psnr_missing_spread_db" not in scores
    with Image.open(tmp_path / "dae.png") as grid:  # originals, degraded, one row of restorations
        rows = grid.height
    code, out = aediff(
        "restore", V1 / "diffusion-class", "--mask", "random:0.5", "--method", "repaint", "--steps", "4",
        "--jump-length", "2", "--jump-n-sample", "2", "--samples", "2", "--class", "3", "--images", "4",
        "--out", "repaint.png", cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, out
    scores = printed_json(out)
    assert scores["method"] == "repaint" and scores["samples_per_image"] == 2 and scores["psnr_missing_spread_db"] > 0
    with Image.open(tmp_path / "repaint.png") as grid:  # a fourth row: the second sample
        assert grid.height > rows
