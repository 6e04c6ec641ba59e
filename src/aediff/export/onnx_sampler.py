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


def sample_euler(
    folder: str | Path,
    noise: np.ndarray,
    sigmas: np.ndarray | None = None,
    steps: int = 20,
    class_labels: np.ndarray | int | None = None,
    guidance: float | None = None,
) -> np.ndarray:
    """Images [N, C, H, W] in [-1, 1] from an ``aediff export --format onnx`` folder.

    noise: [N, *space_shape] standard normal (x starts at sigmas[0] * noise); sigmas: decreasing, ending
    in 0 (None: ``karras_sigmas(steps, *sigma_range)`` from export.json); class_labels: one class or N
    (None: the null class, unconditional); guidance: the classifier-free guidance scale w of
    D = D_null + w (D_cond - D_null) (None: the model's default; 1: none).
    """
    folder = Path(folder)
    manifest = json.loads((folder / "export.json").read_text())
    spec = manifest["sampler"]
    if sigmas is None:
        sigmas = karras_sigmas(steps, *spec["sigma_range"])
    sigmas = np.asarray(sigmas, dtype=np.float32)
    options = onnxruntime.SessionOptions()
    denoiser = onnxruntime.InferenceSession(str(folder / "denoiser.onnx"), options, ["CPUExecutionProvider"])
    n = len(noise)
    w = spec["guidance"] if guidance is None else guidance
    labels = None
    if class_labels is not None and spec["null_class"] is None:
        raise ValueError(f"{folder} holds an unconditional model; it takes no class_labels")
    if spec["null_class"] is not None:
        null = np.full(n, spec["null_class"], dtype=np.int64)
        labels = null if class_labels is None else np.broadcast_to(np.asarray(class_labels, np.int64), (n,))
        if w != 1:  # one call on [conditional; null], as aediff's guided denoiser makes it
            labels = np.concatenate([labels, null])

    def denoise(x: np.ndarray, sigma: np.float32) -> np.ndarray:
        inputs = {"x": x, "sigma": np.full(len(x), sigma, dtype=np.float32)}
        if labels is not None:
            if len(labels) > n:
                inputs["x"] = np.concatenate([x, x])
                inputs["sigma"] = np.full(2 * n, sigma, dtype=np.float32)
            inputs["class_labels"] = np.ascontiguousarray(labels)
        (out,) = denoiser.run(None, inputs)
        if len(out) > n:
            d_cond, d_null = out[:n], out[n:]
            out = d_null + np.float32(w) * (d_cond - d_null)
        return np.clip(out, -1, 1) if spec["clip_denoised"] else out

    x = noise.astype(np.float32) * sigmas[0]
    for i in range(len(sigmas) - 1):
        x = x + (sigmas[i + 1] - sigmas[i]) * (x - denoise(x, sigmas[i])) / sigmas[i]
    if (folder / "to_images.onnx").exists():  # a latent diffusion model: decode the latent
        to_images = onnxruntime.InferenceSession(str(folder / "to_images.onnx"), options, ["CPUExecutionProvider"])
        (x,) = to_images.run(None, {"x": x})
    return np.clip(x, -1, 1)
