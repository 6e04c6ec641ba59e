"""Take a trained model out of aediff: ONNX graphs of the networks a user deploys (``onnx.py``), a sampler
that runs on ONNX Runtime alone (``onnx_sampler.py``), and runs shared on the Hugging Face Hub (``hub.py``
pushes, ``hub_resolve.py`` brings ``hf://owner/name`` back); ``diffusers.py`` writes a folder diffusers
loads as a pipeline (imported on its own: it needs diffusers). ``sources.py`` teaches ``aediff.runs.load`` to
read ``hf://`` runs and diffusers folders: importing this package registers them."""

from __future__ import annotations

from aediff.export import sources  # noqa: F401  (registers hf:// and diffusers folders with aediff.runs.load)
from aediff.export.hub import model_card, push, resolve
from aediff.export.onnx import MANIFEST_FILE, ExportError, ExportResult, export_onnx, prepare_out, require_onnx

__all__ = [
    "MANIFEST_FILE",
    "ExportError",
    "ExportResult",
    "export_onnx",
    "model_card",
    "prepare_out",
    "push",
    "require_onnx",
    "resolve",
]
