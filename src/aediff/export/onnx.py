"""ONNX export of the networks a user deploys, checked against PyTorch with ONNX Runtime as it is written.

What is written, by what the model can do (``model.can``, never its family):

| capability | file              | inputs -> outputs                                                         |
|------------|-------------------|---------------------------------------------------------------------------|
| LATENT     | encoder.onnx      | images [N, C, H, W] in [-1, 1] -> latent [N, *latent] (a VAE: the mean)   |
| LATENT     | decoder.onnx      | latent [N, *latent] -> images [N, C, H, W] in [-1, 1]                     |
| SAMPLER    | denoiser.onnx     | x [N, *space], sigma [N] (, class_labels [N] int64) -> x0 estimate        |
| SAMPLER    | to_images.onnx    | (latent diffusion only) x [N, *space] -> images [N, C, H, W] in [-1, 1]   |

The denoiser is D(x, sigma) = c_skip x + c_out F(c_in x, c_noise) with its preconditioning inside
(``aediff.diffusion.parameterization``), x = x0 + sigma * eps in the variance-exploding view the samplers
use; class_labels in [0, num_classes], where num_classes is the null class (unconditional, and the
negative side of classifier-free guidance). It is not clamped: the samplers clamp its output to [-1, 1]
when ``clip_denoised`` (recorded in the manifest). The batch size N is dynamic everywhere.

Beside the graphs, ``export.json`` says what each file is, its inputs and outputs, and the largest
absolute difference between ONNX Runtime and PyTorch measured on a random batch; above 1e-4 (fp32) the
export fails.
"""

from __future__ import annotations

import importlib.util
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from aediff.errors import AediffError, ConfigError
from aediff.export import folders
from aediff.models import Capability, CapabilityError, Model

MANIFEST_FILE = "export.json"
TOLERANCE = 1e-4  # largest |ONNX Runtime - PyTorch| accepted in fp32
OPSET = 17
EXPORT_BATCH = 2  # the batch the graph is traced with
CHECK_BATCH = 3  # the batch it is checked on (another size: the batch axis must be dynamic)
INSTALL_HINT = "pip install 'aediff[export]'"


class ExportError(AediffError):
    """An exported graph disagrees with PyTorch beyond the tolerance, or cannot be written."""


@dataclass(frozen=True)
class ExportResult:
    """What ``export_onnx`` wrote: the folder, file name -> max abs difference to PyTorch, and the manifest."""

    out: Path
    max_abs_diff: dict[str, float]
    manifest: dict[str, Any]


def require_onnx() -> None:
    """ConfigError naming the extra to install unless onnx and onnxruntime are importable."""
    missing = [name for name in ("onnx", "onnxruntime") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"ONNX export needs {' and '.join(missing)}; install them with `{INSTALL_HINT}`")


# --- the graphs: thin modules around the model's own methods ----------------------------------------------
class _Encoder(nn.Module):
    def __init__(self, model: Model):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode(images)


class _Decoder(nn.Module):
    def __init__(self, model: Model):
        super().__init__()
        self.model = model

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.model.decode(latent)


class _Denoiser(nn.Module):
    """D(x, sigma[, class_labels]) with the preconditioning, not clamped."""

    def __init__(self, model: Model):
        super().__init__()
        self.denoiser = model.sampling_network()

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        condition = {} if class_labels is None else {"class_labels": class_labels}
        return self.denoiser(x, sigma, **condition)


class _ToImages(nn.Module):
    def __init__(self, model: Model):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.output_images(x)


@dataclass(frozen=True)
class _Graph:
    """One network to export: its module, its named inputs (a random batch of ``n``), its output's name."""

    file: str
    what: str
    module: nn.Module
    inputs: dict[str, Any]  # name -> function n -> tensor
    output: str


# --- export and check ----------------------------------------------------------------------------------------
def _export(graph: _Graph, path: Path) -> None:
    example = tuple(make(EXPORT_BATCH) for make in graph.inputs.values())
    names = list(graph.inputs)
    dynamic = {name: {0: "batch"} for name in [*names, graph.output]}
    with warnings.catch_warnings():  # the tracer's notes on Python values it records as constants
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph.module,
            example,
            str(path),
            input_names=names,
            output_names=[graph.output],
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,  # the TorchScript exporter: works offline, without onnxscript
        )


def _check(graph: _Graph, path: Path) -> tuple[float, dict[str, Any]]:
    """Run the graph in ONNX Runtime and PyTorch on a random batch of CHECK_BATCH; (max abs diff, io spec)."""
    import onnxruntime

    inputs = {name: make(CHECK_BATCH) for name, make in graph.inputs.items()}
    with torch.no_grad():
        expected = graph.module(*inputs.values()).numpy()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {name: value.numpy() for name, value in inputs.items()})
    difference = float(np.abs(got - expected).max())
    if not math.isfinite(difference) or difference > TOLERANCE:
        raise ExportError(
            f"{path.name}: ONNX Runtime and PyTorch differ by up to {difference:.3g} (tolerance {TOLERANCE:g} in "
            "fp32); the export is not faithful and was not kept"
        )

    def spec(value: torch.Tensor | np.ndarray) -> dict[str, Any]:
        return {"shape": ["N", *value.shape[1:]], "dtype": str(value.dtype).removeprefix("torch.")}

    io = {
        "inputs": {name: spec(value) for name, value in inputs.items()},
        "outputs": {graph.output: spec(got)},
    }
    return difference, io


def _latent_graphs(model: Model, generator: torch.Generator) -> list[_Graph]:
    channels, height, width = model.image_shape

    def images(n: int) -> torch.Tensor:
        return torch.rand((n, channels, height, width), generator=generator) * 2 - 1

    with torch.no_grad():
        latent_shape = tuple(model.encode(images(1)).shape[1:])

    def latents(n: int) -> torch.Tensor:
        return torch.randn((n, *latent_shape), generator=generator)

    return [
        _Graph(
            "encoder.onnx",
            "images -> latent (a VAE: the posterior mean)",
            _Encoder(model),
            {"images": images},
            "latent",
        ),
        _Graph("decoder.onnx", "latent -> images in [-1, 1]", _Decoder(model), {"latent": latents}, "images"),
    ]


def _sampler_graphs(model: Model, generator: torch.Generator) -> list[_Graph]:
    if model.can(Capability.TEXT_CONDITION):
        raise CapabilityError(
            "ONNX export of a text-conditioned denoiser is not supported yet: its caption encoder and the "
            "variable-length caption tokens are not exported; export an unconditional or class-conditioned model"
        )
    low, high = model.karras_range
    space = tuple(model.space_shape)

    def sigmas(n: int) -> torch.Tensor:  # log-uniform over the sampling range
        u = torch.rand((n,), generator=generator, dtype=torch.float64)
        return torch.exp(math.log(low) + u * (math.log(high) - math.log(low))).float()

    def noisy(n: int) -> torch.Tensor:  # pure noise at sigma ~ 1, a mid-range input
        return torch.randn((n, *space), generator=generator)

    inputs: dict[str, Any] = {"x": noisy, "sigma": sigmas}
    if model.can(Capability.CLASS_CONDITION):
        inputs["class_labels"] = lambda n: torch.randint(0, model.num_classes + 1, (n,), generator=generator)
    graphs = [_Graph("denoiser.onnx", "D(x, sigma[, class_labels]) -> x0 estimate, not clamped", _Denoiser(model),
                     inputs, "denoised")]  # fmt: skip
    if space != tuple(model.image_shape):  # the diffusion runs in a latent: also how it becomes images
        graphs.append(_Graph("to_images.onnx", "the sampler's final x -> images in [-1, 1]", _ToImages(model),
                             {"x": noisy}, "images"))  # fmt: skip
    return graphs


def prepare_out(out: str | Path, overwrite: bool = False) -> Path:
    """``folders.prepare_out`` for an ONNX export: its graphs and manifest are what --overwrite replaces."""
    return folders.prepare_out(out, overwrite, ["*.onnx", MANIFEST_FILE])


def export_onnx(model: Model, out: str | Path, run: str = "", seed: int = 0) -> ExportResult:
    """Write the ONNX graphs of ``model`` (module docstring) and ``export.json`` into the folder ``out``
    (created; files of the same names are replaced), each checked against PyTorch on a random batch. The
    model is moved to the CPU in fp32 and set to eval mode.

    Raises CapabilityError for a model with nothing to export (or text conditioning), ExportError when a
    graph differs from PyTorch by more than TOLERANCE.
    """
    require_onnx()
    model = model.float().cpu().eval()
    generator = torch.Generator().manual_seed(seed)
    graphs: list[_Graph] = []
    if model.can(Capability.LATENT):
        graphs += _latent_graphs(model, generator)
    if model.can(Capability.SAMPLER):
        graphs += _sampler_graphs(model, generator)
    if not graphs:
        raise CapabilityError(
            f"ONNX export needs a model that can encode and decode (an AE, VAE or DAE) or a diffusion model; "
            f"this is a {model.family!r} model"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Any] = {}
    differences: dict[str, float] = {}
    for graph in graphs:
        path = out / graph.file
        _export(graph, path)
        try:
            differences[graph.file], io = _check(graph, path)
        except ExportError:
            path.unlink(missing_ok=True)
            raise
        files[graph.file] = {"what": graph.what, **io, "max_abs_diff": differences[graph.file]}
    manifest: dict[str, Any] = {
        "format": "onnx",
        "opset": OPSET,
        "run": str(run),
        "family": model.family,
        "image_shape": list(model.image_shape),
        "num_classes": model.num_classes,
        "tolerance": TOLERANCE,
        "files": files,
    }
    if model.can(Capability.SAMPLER):
        low, high = model.karras_range
        manifest["sampler"] = {
            "space_shape": list(model.space_shape),
            "sigma_range": [low, high],
            "null_class": model.num_classes if model.can(Capability.CLASS_CONDITION) else None,
            "clip_denoised": bool(model.config.sampling.clip_denoised),
            "guidance": float(model.config.sampling.guidance),
        }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return ExportResult(out, differences, manifest)
