"""ONNX export of the networks a user deploys, checked against PyTorch with ONNX Runtime as it is written.

What is written, by what the model can do (``model.can``, never its family):

| capability | file              | inputs -> outputs                                                         |
|------------|-------------------|---------------------------------------------------------------------------|
| LATENT     | encoder.onnx      | images [N, C, H, W] in [-1, 1] -> latent [N, *latent] (a VAE: the mean)   |
| LATENT     | decoder.onnx      | latent [N, *latent] -> images [N, C, H, W] in [-1, 1]                     |
| DIFF.SAMP. | denoiser.onnx     | x [N, *space], sigma [N] (, class_labels [N] int64) -> x0 estimate        |
| DIFF.SAMP. | to_images.onnx    | (latent diffusion only) x [N, *space] -> images [N, C, H, W] in [-1, 1]   |
| TEXT_COND. | text_encoder.onnx | ids [N, L] int64 -> tokens [N, L, W], pooled [N, W] (the learned encoder) |

The denoiser is D(x, sigma) = c_skip x + c_out F(c_in x, c_noise) with its preconditioning inside
(``aediff.diffusion.parameterization``), x = x0 + sigma * eps in the variance-exploding view the samplers
use; class_labels in [0, num_classes], where num_classes is the null class (unconditional, and the
negative side of classifier-free guidance). It is not clamped: the samplers clamp its output to [-1, 1]
when ``clip_denoised`` (recorded in the manifest). The batch size N is dynamic everywhere.

A text-conditioned model's denoiser takes the caption encoder's outputs instead of class_labels: context
[N, L, W] (tokens), context_mask [N, L] bool (True = a real token) and pooled [N, W]; its learned caption
encoder is text_encoder.onnx, whose ids are ``ByteTokenizer``'s (UTF-8 byte + 3, BOS 1, EOS 2, padding 0;
the mask is ids != 0), L dynamic up to the encoder's max_length. The null prompt is "". A frozen encoder
(MiniLM, CLIP) is a transformers model of its own and is not exported.

Beside the graphs, ``export.json`` says what each file is, its inputs and outputs, and the largest
absolute difference between ONNX Runtime and PyTorch measured on a random batch; above 1e-4 (fp32) the
export fails.
"""

from __future__ import annotations

import importlib.util
import io
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
from aediff.outputs import write_bytes_whole

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
class _Latent(nn.Module):
    """The model's ``encode`` (images -> latent), or with ``decode`` its ``decode`` (latent -> images), as the
    module to trace."""

    def __init__(self, model: Model, decode: bool):
        super().__init__()
        self.model = model
        self.decode = decode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.decode(x) if self.decode else self.model.encode(x)


class _Denoiser(nn.Module):
    """D(x, sigma, *condition) with the preconditioning, not clamped; ``condition`` names the condition
    inputs in order (class_labels, or context, context_mask and pooled)."""

    def __init__(self, model: Model, condition: tuple[str, ...]):
        super().__init__()
        self.denoiser = model.sampling_network()
        self.condition = condition

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, *condition: torch.Tensor) -> torch.Tensor:
        return self.denoiser(x, sigma, **dict(zip(self.condition, condition, strict=True)))


class _TextEncoder(nn.Module):
    """ids [N, L] (ByteTokenizer's, 0 = padding) -> (tokens [N, L, W], pooled [N, W]): the learned caption
    encoder, its pre-LN transformer layers written out so that L stays dynamic (the traced
    nn.MultiheadAttention fixes the sequence length it was traced with); tests/test_export.py checks it
    equals the encoder itself."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e = self.encoder
        mask = ids != 0
        h = e.token_embedding(ids) + e.position_embedding[: ids.shape[1]]
        for layer in e.transformer.layers:
            h = h + layer.dropout1(_self_attention(layer.self_attn, layer.norm1(h), mask))
            h = h + layer.dropout2(layer.linear2(layer.dropout(layer.activation(layer.linear1(layer.norm2(h))))))
        tokens = e.final_norm(h) * mask[..., None]
        return tokens, tokens.sum(1) / mask.sum(1, keepdim=True)


def _self_attention(attention: nn.MultiheadAttention, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """nn.MultiheadAttention(h, h, h, key_padding_mask=~mask) for batch_first h [N, L, W], without its
    shape bookkeeping."""
    heads = attention.num_heads
    q, k, v = nn.functional.linear(h, attention.in_proj_weight, attention.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v))  # [N, heads, L, W / heads]
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(1, 2).flatten(2)
    return attention.out_proj(out)


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
    outputs: tuple[str, ...]
    dynamic: dict[str, dict[int, str]] | None = None  # axes beyond the batch that vary: name -> {axis: label}


# --- export and check ----------------------------------------------------------------------------------------
def _export(graph: _Graph) -> bytes:
    """The graph's ONNX bytes (kept in memory until checked, then written whole)."""
    buffer = io.BytesIO()
    example = tuple(make(EXPORT_BATCH) for make in graph.inputs.values())
    names = list(graph.inputs)
    dynamic = {name: {0: "batch", **(graph.dynamic or {}).get(name, {})} for name in [*names, *graph.outputs]}
    with warnings.catch_warnings():  # the tracer's notes on Python values it records as constants
        warnings.simplefilter("ignore")
        torch.onnx.export(
            graph.module,
            example,
            buffer,
            input_names=names,
            output_names=list(graph.outputs),
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,  # the TorchScript exporter: works offline, without onnxscript
        )
    return buffer.getvalue()


def _check(graph: _Graph, onnx_bytes: bytes) -> tuple[float, dict[str, Any]]:
    """Run the graph in ONNX Runtime and PyTorch on a random batch of CHECK_BATCH; (max abs diff, io spec)."""
    import onnxruntime

    inputs = {name: make(CHECK_BATCH) for name, make in graph.inputs.items()}
    with torch.no_grad():
        expected = graph.module(*inputs.values())
    expected = [t.numpy() for t in (expected if isinstance(expected, tuple) else (expected,))]
    session = onnxruntime.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    got = session.run(None, {name: value.numpy() for name, value in inputs.items()})
    difference = max(float(np.abs(g - e).max()) for g, e in zip(got, expected, strict=True))
    if not math.isfinite(difference) or difference > TOLERANCE:
        raise ExportError(
            f"{graph.file}: ONNX Runtime and PyTorch differ by up to {difference:.3g} (tolerance {TOLERANCE:g} in "
            "fp32); the export is not faithful and was not kept"
        )

    def spec(value: torch.Tensor | np.ndarray) -> dict[str, Any]:
        return {"shape": ["N", *value.shape[1:]], "dtype": str(value.dtype).removeprefix("torch.")}

    names = {
        "inputs": {name: spec(value) for name, value in inputs.items()},
        "outputs": {name: spec(value) for name, value in zip(graph.outputs, got, strict=True)},
    }
    return difference, names


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
            _Latent(model, decode=False),
            {"images": images},
            ("latent",),
        ),
        _Graph(
            "decoder.onnx", "latent -> images in [-1, 1]", _Latent(model, decode=True), {"latent": latents}, ("images",)
        ),
    ]


CAPTIONS = ("", "a 3", "the digit seven, drawn thin", "zero", "an eight with a long tail and a small loop on top")


def _sampler_graphs(model: Model, generator: torch.Generator) -> list[_Graph]:
    low, high = model.karras_range
    space = tuple(model.space_shape)

    def sigmas(n: int) -> torch.Tensor:  # log-uniform over the sampling range
        u = torch.rand((n,), generator=generator, dtype=torch.float64)
        return torch.exp(math.log(low) + u * (math.log(high) - math.log(low))).float()

    def noisy(n: int) -> torch.Tensor:  # pure noise at sigma ~ 1, a mid-range input
        return torch.randn((n, *space), generator=generator)

    inputs: dict[str, Any] = {"x": noisy, "sigma": sigmas}
    graphs, dynamic = [], None
    if model.can(Capability.CLASS_CONDITION):
        inputs["class_labels"] = lambda n: torch.randint(0, model.num_classes + 1, (n,), generator=generator)
    if model.can(Capability.TEXT_CONDITION):
        encoder, captions = _learned_text_encoder(model), _captions(generator)
        inputs.update(_text_inputs(model, captions))
        dynamic = {"context": {1: "length"}, "context_mask": {1: "length"}}
        graphs.append(_Graph("text_encoder.onnx", "caption ids -> tokens, pooled (the learned caption encoder)",
                             _TextEncoder(encoder), {"ids": lambda n: encoder.tokenizer(captions(n))[0]},
                             ("tokens", "pooled"), {"ids": {1: "length"}, "tokens": {1: "length"}}))  # fmt: skip
    condition = tuple(inputs)[2:]
    graphs.append(_Graph("denoiser.onnx", "D(x, sigma[, condition]) -> x0 estimate, not clamped",
                         _Denoiser(model, condition), inputs, ("denoised",), dynamic))  # fmt: skip
    if space != tuple(model.image_shape):  # the diffusion runs in a latent: also how it becomes images
        graphs.append(_Graph("to_images.onnx", "the sampler's final x -> images in [-1, 1]", _ToImages(model),
                             {"x": noisy}, ("images",)))  # fmt: skip
    return graphs


def _learned_text_encoder(model: Model) -> nn.Module:
    """The model's caption encoder when it is the learned one; CapabilityError for a frozen one."""
    encoder = model.text_encoder
    if encoder.name != "learned":
        raise CapabilityError(
            f"ONNX export of a model with the frozen {encoder.name!r} caption encoder is not supported: that encoder "
            "is a transformers model of its own (export it with optimum); the learned encoder is exported"
        )
    return encoder


def _captions(generator: torch.Generator):
    """n -> n captions drawn from CAPTIONS (different lengths, so the export sees padding and masks)."""
    return lambda n: [CAPTIONS[int(i)] for i in torch.randint(0, len(CAPTIONS), (n,), generator=generator)]


def _text_inputs(model: Model, captions) -> dict[str, Any]:
    """context, context_mask, pooled: each n -> that input for n random captions, the three of one batch of
    n from the same captions (computed once per n)."""
    batches: dict[int, dict[str, torch.Tensor]] = {}

    def batch(n: int) -> dict[str, torch.Tensor]:
        if n not in batches:
            with torch.no_grad():
                batches[n] = model.condition_inputs(n, prompts=captions(n))
        return batches[n]

    return {name: (lambda n, name=name: batch(n)[name]) for name in ("context", "context_mask", "pooled")}


def prepare_out(out: str | Path, overwrite: bool = False) -> Path:
    """``folders.prepare_out`` for an ONNX export: its graphs and manifest are what --overwrite replaces."""
    return folders.prepare_out(out, overwrite, ["*.onnx", MANIFEST_FILE])


def drawn_classes(model: Model) -> str:
    """What ``model.sample`` draws when asked for no class: "cycle" (every class in turn) or "null"."""
    drawn = model.drawn_condition(2, None)
    return "cycle" if drawn is not None and drawn.class_labels is not None else "null"


def export_onnx(model: Model, out: str | Path, run: str = "", seed: int = 0) -> ExportResult:
    """Write the ONNX graphs of ``model`` (module docstring) and ``export.json`` into the folder ``out``
    (created; files of the same names are replaced), each checked against PyTorch on a random batch. The
    model is moved to the CPU in fp32 and set to eval mode.

    Raises CapabilityError for a model with nothing to export (or a frozen caption encoder), ExportError
    when a graph differs from PyTorch by more than TOLERANCE.
    """
    require_onnx()
    model = model.float().cpu().eval()
    generator = torch.Generator().manual_seed(seed)
    graphs: list[_Graph] = []
    if model.can(Capability.LATENT):
        graphs += _latent_graphs(model, generator)
    if model.can(Capability.DIFFUSION_SAMPLER):
        graphs += _sampler_graphs(model, generator)
    if not graphs:
        raise CapabilityError(
            "ONNX export needs a model that can encode and decode (an AE, VAE, KL-AE, VQ-VAE or DAE) or a diffusion "
            "model; "
            f"this is a {model.family!r} model"
        )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Any] = {}
    differences: dict[str, float] = {}
    for graph in graphs:
        onnx_bytes = _export(graph)
        differences[graph.file], spec = _check(graph, onnx_bytes)  # ExportError before anything is written
        write_bytes_whole(out / graph.file, onnx_bytes)
        files[graph.file] = {"what": graph.what, **spec, "max_abs_diff": differences[graph.file]}
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
    if model.can(Capability.DIFFUSION_SAMPLER):
        low, high = model.karras_range
        manifest["sampler"] = {
            "space_shape": list(model.space_shape),
            "sigma_range": [low, high],
            "null_class": model.num_classes if model.can(Capability.CLASS_CONDITION) else None,
            # what is drawn when no class is asked for: "cycle" (0, 1, ..., K-1, 0, ...) or "null"
            "classes": drawn_classes(model),
            "clip_denoised": bool(model.clip_denoised),
            "guidance": float(model.default_guidance),
        }
    if model.can(Capability.TEXT_CONDITION):
        manifest["text"] = {
            "tokenizer": "UTF-8 bytes + 3 as ids; [BOS=1, bytes..., EOS=2], padding 0; mask = ids != 0",
            "max_length": int(model.text_encoder.tokenizer.max_length),
            "null_prompt": "",
        }
    write_bytes_whole(out / MANIFEST_FILE, (json.dumps(manifest, indent=2) + "\n").encode())
    return ExportResult(out, differences, manifest)
