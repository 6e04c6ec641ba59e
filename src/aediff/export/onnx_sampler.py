"""Sampling from an exported denoiser with ONNX Runtime and NumPy alone (no torch): copy this file to deploy.

``sample_euler`` walks Euler steps of the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma along
decreasing noise levels (Karras et al. 2022, Algorithm 1 without the Heun correction; deterministic, the
same path as DDIM with eta = 0 in the variance-exploding view), exactly as aediff's ``sample_euler`` does,
so the same initial noise and sigmas give the same images. ``karras_sigmas`` is aediff's spacing (eq. 5).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> np.ndarray:
    """steps decreasing noise levels from sigma_max to sigma_min, then 0: [steps + 1], float64."""
    ramp = np.linspace(0, 1, steps, dtype=np.float64)
    inv_min, inv_max = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return np.append((inv_max + ramp * (inv_min - inv_max)) ** rho, 0.0)


def tokenize(captions: list[str], max_length: int) -> np.ndarray:
    """aediff's ByteTokenizer: [BOS=1, UTF-8 bytes + 3..., EOS=2], truncated to max_length (EOS kept),
    padded with 0 to the longest caption: ids [N, L] int64."""
    encoded = [[1, *(b + 3 for b in c.encode("utf-8")[: max_length - 2]), 2] for c in captions]
    ids = np.zeros((len(encoded), max(len(e) for e in encoded)), dtype=np.int64)
    for row, e in enumerate(encoded):
        ids[row, : len(e)] = e
    return ids


def _session(path: Path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(path), onnxruntime.SessionOptions(), ["CPUExecutionProvider"])


def _conditions(folder: Path, manifest: dict, n: int, class_labels, prompts, guided: bool) -> dict[str, np.ndarray]:
    """The denoiser's condition inputs for n images, or for [conditional; null] (2n) when ``guided``."""
    null_class, text = manifest["sampler"]["null_class"], manifest.get("text")
    if class_labels is not None and null_class is None:
        raise ValueError(f"{folder} holds a model that is not class-conditioned; it takes no class_labels")
    if prompts is not None and text is None:
        raise ValueError(f"{folder} holds a model that is not text-conditioned; it takes no prompts")
    if null_class is not None:
        null = np.full(n, null_class, dtype=np.int64)
        if class_labels is None:  # the model's own draw: every class in turn, or the null class (never guided)
            cycle = manifest["sampler"].get("classes", "null") == "cycle"
            labels = np.arange(n, dtype=np.int64) % null_class if cycle else null
            guided = guided and cycle
        else:
            labels = np.broadcast_to(np.asarray(class_labels, np.int64), (n,))
        return {"class_labels": np.ascontiguousarray(np.concatenate([labels, null]) if guided else labels)}
    if text is not None:
        captions = [prompts] * n if isinstance(prompts, str) else list(prompts or [text["null_prompt"]] * n)
        captions += [text["null_prompt"]] * n if guided else []
        ids = tokenize(captions, text["max_length"])
        tokens, pooled = _session(folder / "text_encoder.onnx").run(None, {"ids": ids})
        return {"context": tokens, "context_mask": ids != 0, "pooled": pooled}
    return {}


def sample_euler(
    folder: str | Path,
    noise: np.ndarray,
    sigmas: np.ndarray | None = None,
    steps: int = 20,
    class_labels: np.ndarray | int | None = None,
    prompts: str | list[str] | None = None,
    guidance: float | None = None,
) -> np.ndarray:
    """Images [N, C, H, W] in [-1, 1] from an ``aediff export --format onnx`` folder.

    noise: [N, *space_shape] standard normal (x starts at sigmas[0] * noise); sigmas: decreasing, ending
    in 0 (None: ``karras_sigmas(steps, *sigma_range)`` from export.json); class_labels: one class or N (None: what
    export.json's ``classes`` says: every class in turn, or the null class), or prompts: one caption or N (None:
    the null prompt, unconditional); guidance: the classifier-free
    guidance scale w of D = D_null + w (D_cond - D_null) (None: the model's default; 1: none).
    """
    folder = Path(folder)
    manifest = json.loads((folder / "export.json").read_text())
    spec = manifest["sampler"]
    if sigmas is None:
        sigmas = karras_sigmas(steps, *spec["sigma_range"])
    sigmas = np.asarray(sigmas, dtype=np.float32)
    denoiser, n = _session(folder / "denoiser.onnx"), len(noise)
    w = spec["guidance"] if guidance is None else guidance
    conditions = _conditions(folder, manifest, n, class_labels, prompts, guided=w != 1)

    def denoise(x: np.ndarray, sigma: np.float32) -> np.ndarray:
        batch = len(next(iter(conditions.values()), x))  # n, or 2n: [conditional; null] in one call
        x_in = np.concatenate([x, x]) if batch > n else x
        (out,) = denoiser.run(None, {"x": x_in, "sigma": np.full(batch, sigma, np.float32), **conditions})
        if batch > n:
            d_cond, d_null = out[:n], out[n:]
            out = d_null + np.float32(w) * (d_cond - d_null)
        return np.clip(out, -1, 1) if spec["clip_denoised"] else out

    x = noise.astype(np.float32) * sigmas[0]
    for i in range(len(sigmas) - 1):
        x = x + (sigmas[i + 1] - sigmas[i]) * (x - denoise(x, sigmas[i])) / sigmas[i]
    if (folder / "to_images.onnx").exists():  # a latent diffusion model: decode the latent
        (x,) = _session(folder / "to_images.onnx").run(None, {"x": x})
    return np.clip(x, -1, 1)
