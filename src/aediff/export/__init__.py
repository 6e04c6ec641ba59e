"""Take a trained model out of aediff: ONNX graphs of the networks a user deploys (``onnx.py``) and a sampler
that runs on ONNX Runtime alone (``onnx_sampler.py``). The diffusers format is to come (issue 14)."""

from __future__ import annotations

from aediff.export.onnx import MANIFEST_FILE, ExportError, ExportResult, export_onnx, prepare_out, require_onnx

__all__ = ["MANIFEST_FILE", "ExportError", "ExportResult", "export_onnx", "prepare_out", "require_onnx"]
