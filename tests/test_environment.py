"""Tests for aediff.environment (the data of `aediff env`): complete, JSON-able, offline, light."""

from __future__ import annotations

import json
import socket
import sys
from importlib import metadata

import pytest
import torch

from aediff import __version__, environment
from aediff.data import DATASETS
from aediff.environment import KEY_PACKAGES, NOT_INSTALLED, environment_report, format_environment

KEYS = {
    "aediff", "python", "platform", "machine", "cpu", "cpu_count", "torch", "torch_threads", "cuda", "mps",
    "default_device", "packages", "assets", "datasets",
}  # fmt: skip
HEAVY = ("transformers", "gradio", "diffusers", "onnxruntime", "torch_fidelity", "datasets", "sentence_transformers")


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        pytest.fail(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_report_has_every_key_and_is_json(offline):
    report = environment_report()
    assert set(report) == KEYS
    assert json.loads(json.dumps(report)) == report  # JSON-serialisable, nothing lost
    assert report["aediff"] == __version__ and report["torch"] == torch.__version__
    assert report["torch_threads"] == torch.get_num_threads() and report["cpu"]
    assert set(report["cuda"]) >= {"available", "version", "devices"} and isinstance(report["mps"], bool)
    assert report["default_device"] in ("cpu", "cuda", "mps")
    assert set(report["packages"]) == set(KEY_PACKAGES)
    assert report["packages"]["numpy"] == metadata.version("numpy")
    assert set(report["assets"]) == {"minilm", "inception"}
    assert isinstance(report["assets"]["minilm"]["present"], bool)
    inception = report["assets"]["inception"]
    assert inception["weights_path"].endswith("weights-inception-2015-12-05-6726825d.pth")
    assert inception["usable"] == (inception["weights_present"] and inception["torch_fidelity"] != NOT_INSTALLED)


def test_every_registered_dataset_is_listed():
    report = environment_report()
    assert [d["name"] for d in report["datasets"]] == list(DATASETS)
    assert {d["name"]: d["targets"] for d in report["datasets"]}["emoji"] == "captions"
    digits = {d["name"]: d for d in report["datasets"]}["digits"]
    assert digits["offline_available"] is True  # scikit-learn ships it
    rows = dict(format_environment(report))
    assert all(f"dataset {name}" in rows for name in DATASETS)
    assert rows["dataset digits"] == "available offline; labels"


def test_missing_package_is_reported_as_not_installed(monkeypatch):
    real = metadata.version

    def version(dist):
        if dist in ("gradio", "onnxruntime", "onnxruntime-gpu"):
            raise metadata.PackageNotFoundError(dist)
        return real(dist)

    monkeypatch.setattr(environment.metadata, "version", version)
    report = environment_report()
    assert report["packages"]["gradio"] == NOT_INSTALLED and report["packages"]["onnxruntime"] == NOT_INSTALLED
    assert report["packages"]["numpy"] == real("numpy")
    assert ("gradio", NOT_INSTALLED) in format_environment(report)


def test_alternative_distribution_counts(monkeypatch):
    def version(dist):
        if dist == "onnxruntime-gpu":
            return "1.19.0"
        raise metadata.PackageNotFoundError(dist)

    monkeypatch.setattr(environment.metadata, "version", version)
    assert environment.package_version("onnxruntime") == "1.19.0 (onnxruntime-gpu)"
    assert environment.package_version("gradio") == NOT_INSTALLED


def test_imports_no_heavy_package():
    before = {m for m in HEAVY if m in sys.modules}  # another test may have imported one already
    environment_report()
    assert {m for m in HEAVY if m in sys.modules} == before


def test_rows_are_string_pairs_and_cuda_devices_are_named(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"GPU{i}")
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    report = environment_report()
    assert report["cuda"] == {"available": True, "version": "12.4", "devices": ["GPU0", "GPU1"]}
    rows = format_environment(report)
    assert all(isinstance(n, str) and isinstance(v, str) for n, v in rows)
    assert dict(rows)["cuda"] == "yes, CUDA 12.4: GPU0, GPU1"
    assert [n for n, _ in rows][:5] == ["aediff", "python", "platform", "machine", "cpu"]


def test_a_failing_section_is_reported_not_raised(monkeypatch):
    def broken():
        raise RuntimeError("driver exploded")

    monkeypatch.setattr(environment, "_minilm_section", broken)
    monkeypatch.setattr(environment, "_datasets_section", broken)
    report = environment_report()
    assert report["assets"]["minilm"] == {"error": "RuntimeError: driver exploded"}
    rows = dict(format_environment(report))
    assert rows["minilm text encoder"] == "unknown (RuntimeError: driver exploded)"
    assert rows["datasets"] == "error: RuntimeError: driver exploded"


def test_cpu_model_reads_proc_cpuinfo(monkeypatch, tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("/proc/cpuinfo is Linux only")
    real_open = open
    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nvendor_id\t: Foo\nmodel name\t: Foo CPU 9000 @ 3.00GHz\n\nprocessor\t: 1\n")
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: real_open(fake if p == "/proc/cpuinfo" else p, *a, **k))
    assert environment.cpu_model() == "Foo CPU 9000 @ 3.00GHz"
