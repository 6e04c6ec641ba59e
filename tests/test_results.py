"""Typed evaluation results (``aediff.evaluation.results``): metrics.json written from them reads back equal,
an older file (no format_version, written at commit 704866e) loads, a newer or damaged one is refused with
the file's name, and reports/ reads results by field, never by string key (an AST check)."""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from aediff.errors import AediffError
from aediff.evaluation.results import (
    FORMAT_VERSION,
    ComparisonSections,
    CurvePoint,
    CurveScore,
    DenoisingRow,
    DiffusionLikelihood,
    Generation,
    ImageScores,
    ModelEvaluation,
)
from aediff.metrics.stats import Estimate
from aediff.reports.record import ClaimVerdict, ComparisonReport, ReportMeta
from aediff.reports.verdicts import Verdict

FIXTURES = Path(__file__).parent / "fixtures"
OLD_EVAL = FIXTURES / "eval_metrics_704866e.json"  # `aediff eval` at commit 704866e: no format_version
REPORTS = Path(__file__).parent.parent / "src" / "aediff" / "reports"


def test_an_eval_file_of_704866e_loads_and_writes_back_the_same_numbers(tmp_path):
    old = json.loads(OLD_EVAL.read_text())
    assert "format_version" not in old
    result = ModelEvaluation.read(OLD_EVAL)
    assert result.family == "vae" and result.likelihood.iwae_k == 100 and result.run == "runs/vae"
    assert result.reconstruction.psnr == old["reconstruction"]["psnr"] and result.reconstruction.per_image is None
    assert result.denoising[7].kind == "mask" and result.generation.condition == "none"
    assert result.fid("classifier").value == result.generation_by_judge["classifier"].fid
    assert result.sampling_speed.options == {} and result.sampling_speed.device == "cpu"
    # Today's file is the old one with its format version: the same keys, in the same order, the same values.
    assert result.to_json() == {"format_version": FORMAT_VERSION, **old}
    assert list(result.to_json())[1:] == list(old)
    result.write(tmp_path / "metrics.json")
    assert ModelEvaluation.read(tmp_path / "metrics.json") == result


def test_capability_names_from_before_704866e_are_upgraded(tmp_path):
    old = json.loads(OLD_EVAL.read_text())
    old["capabilities"] = ["denoise", "elbo", "sample", "sampler", "latent"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert ModelEvaluation.read(tmp_path / "old.json").capabilities == [
        "denoise",
        "elbo",
        "generate",
        "diffusion-sampler",
        "latent",
    ]


def test_a_newer_or_damaged_file_is_refused_naming_the_file(tmp_path):
    data = json.loads(OLD_EVAL.read_text())
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps({"format_version": FORMAT_VERSION + 1, **data}))
    with pytest.raises(AediffError, match=rf"{path}.*format_version {FORMAT_VERSION + 1}.*upgrade aediff") as info:
        ModelEvaluation.read(path)
    assert "\n" not in str(info.value)
    for text, why in [
        ("{not json", "not a readable"),
        ("[1, 2]", "no JSON object"),
        (json.dumps({k: v for k, v in data.items() if k != "family"}), "no 'family'"),
        (json.dumps({**data, "reconstruction": {**data["reconstruction"], "psnr": "high"}}), "reconstruction.psnr"),
        (json.dumps({**data, "format_version": "1"}), "format_version '1'"),
    ]:
        path.write_text(text)
        with pytest.raises(AediffError, match=why) as info:
            ModelEvaluation.read(path)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
        assert "aediff eval" in str(info.value) or "upgrade aediff" in str(info.value)


def _evaluation() -> ModelEvaluation:
    old = ModelEvaluation.read(OLD_EVAL)
    old.likelihood = DiffusionLikelihood(3.1, 1.2, 0.01, "linear, T=1000", 32, "stratified", 16, "8-bit", 0)
    return old


def test_per_image_values_travel_in_fields_and_stay_out_of_json():
    result = _evaluation()
    arrays = {k: np.arange(4.0) for k in ("mse", "psnr", "ssim")}
    result.reconstruction.per_image = ImageScores.of(arrays)
    result.generation = Generation.of(result.generation_by_judge["classifier"], "none", torch.zeros(2, 1, 8, 8))
    row = DenoisingRow("gaussian:0.5", "gaussian", 0.5, 1, 20.0, 12.0, 0.8, 0.4, 0.01, 4, 0.1, 0.1, 0.01)
    row.per_image = ImageScores.of({**arrays, "psnr_noisy": np.zeros(4), "ssim_noisy": np.zeros(4)})
    result.denoising = [row]
    data = result.to_json()
    assert "per_image" not in data["reconstruction"] and "per_image" not in data["denoising"][0]
    assert "samples" not in data["generation"] and data["generation"]["condition"] == "none"
    text = json.dumps(data, allow_nan=False)
    again = ModelEvaluation.from_json(json.loads(text))
    assert again == result  # per-image fields are not compared: they are what JSON leaves out
    assert again.reconstruction.per_image is None and again.denoised("gaussian", 0.5).psnr == 20.0
    assert isinstance(again.likelihood, DiffusionLikelihood) and again.likelihood.bits_per_dim == 1.2


def test_reconstruction_fid_round_trips_beside_reconstruction_and_an_older_file_has_none():
    result = _evaluation()  # from the 704866e file: no rFID then
    assert result.reconstruction_fid_by_judge is None and result.reconstruction_fid("classifier") is None
    score = result.generation_by_judge["classifier"]
    result.reconstruction_fid_by_judge = {"classifier": score}
    data = json.loads(json.dumps(result.to_json(), allow_nan=False))
    keys = list(data)
    assert keys[keys.index("reconstruction") + 1] == "reconstruction_fid_by_judge" and data["format_version"] == 1
    again = ModelEvaluation.from_json(data)
    assert again == result and again.reconstruction_fid_by_judge["classifier"] == score
    assert again.reconstruction_fid("classifier").value == score.fid and again.reconstruction_fid("other") is None


def test_non_finite_numbers_are_written_as_null_and_read_as_nan():
    result = _evaluation()
    result.reconstruction.psnr = math.inf
    data = result.to_json()
    assert data["reconstruction"]["psnr"] is None
    json.dumps(data, allow_nan=False)
    assert math.isnan(ModelEvaluation.from_json(data).reconstruction.psnr)


def test_a_comparison_record_round_trips():
    gap = Estimate(1.5, 0.2, 10, "paired")
    verdict = Verdict("holds", "the mean image", "gain 1.5 dB", 0.1, gap, parts=(Verdict("holds", "x", "y"),))
    sections = ComparisonSections(
        judges={"classifier": "its features"},
        curves={"vae": [CurvePoint(0.5, None, 2, 40, {"classifier": CurveScore(30.0, None, [29.0, 31.0])})]},
        manifold_controls={"raw pixels": Estimate.proportion(40, 60)},
    )
    meta = ReportMeta("digits", 0.5, 4, "2026-12-06 02:00 UTC", "0.1", "2", "3.11", "x86_64", "cpu", 2, "cpu", 1.0,
                      {"seed": 0}, {"vae": "runs/vae"}, {"vae": 1.0}, 1.0, 2.0)  # fmt: skip
    record = ComparisonReport(
        meta, {"vae": _evaluation()}, {"bottleneck": ClaimVerdict("wider is better", verdict)}, sections
    )
    data = json.loads(json.dumps(record.to_json(), allow_nan=False))
    assert data["format_version"] == FORMAT_VERSION and "format_version" not in data["models"]["vae"]
    assert data["verdicts"]["bottleneck"] == {"claim": "wider is better", **verdict.to_dict()}
    assert "x0" not in data["sections"]  # a section not measured is left out, not null
    assert ComparisonReport.from_json(data) == record
    old = {k: v for k, v in data.items() if k != "format_version"}  # as aediff at 704866e wrote it
    assert ComparisonReport.from_json(old) == record


# --- no string-key lookups of results in reports/ ------------------------------------------------------------

# Subscripts with a string constant that are not evaluation results: dataset batches (``.batch(...)["images"]``),
# HTML attributes, the training log, run configs and model overrides.
NOT_RESULTS = {
    ("html.py", "attributes"),
    ("html.py", "root"),
    ("sections.py", "row"),  # _logged: a line of the run's log.jsonl
    ("compare.py", "aediff.runs.read_run_config(folder)"),
    ("compare.py", "planned.model"),
}


def string_key_lookups(source: str, filename: str = "<planted>") -> list[str]:
    """``x["..."]`` reads and ``x.get("...")`` calls in ``source`` (as "file:line: code"), except those of
    ``NOT_RESULTS`` and of dataset batches."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load):
            base, key = node.value, node.slice
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
            base, key = node.func.value, node.args[0] if node.args else None
        else:
            continue
        if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
            continue
        batch = isinstance(base, ast.Call) and isinstance(base.func, ast.Attribute) and base.func.attr == "batch"
        if batch or (filename, ast.unparse(base)) in NOT_RESULTS:
            continue
        found.append(f"{filename}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_reports_read_results_by_field_never_by_string_key():
    found = [hit for path in sorted(REPORTS.glob("*.py")) for hit in string_key_lookups(path.read_text(), path.name)]
    assert found == [], "read the typed result's fields instead:\n" + "\n".join(found)


def test_the_string_key_check_catches_a_planted_lookup():
    planted = 'def fid(m):\n    return m.models["vae"]["generation"]["fid"] + m.sections.get("x0", 0)\n'
    assert len(string_key_lookups(planted)) == 4
    assert string_key_lookups('x = m.models[name].generation.fid\nfiles["a"] = 1\n') == []
    assert string_key_lookups('images = test_set.batch(i)["images"]\n') == []
