"""Evaluation protocols: the metrics of ``aediff.metrics`` applied to models and datasets, one way each.

Every protocol takes a model, a dataset (``aediff.data.ImageDataset``) and a seed, works in batches on the
model's device, and returns a JSON-able dict that records what was measured and on what.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from aediff.metrics import (
    FeatureScore,
    bits_per_dim,
    continuous_nll_to_discrete_bpd,
    extract_features,
    mse,
    psnr,
    score_features,
    ssim,
)
from aediff.models.corruptions import Corruption


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def iterate_images(dataset: Any, batch_size: int = 256, device: torch.device | str = "cpu",
                   limit: int | None = None) -> Iterator[dict[str, Any]]:
    """Batches of ``dataset`` in order (first ``limit`` images), tensors moved to ``device``."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    for start in range(0, n, batch_size):
        batch = dataset.batch(torch.arange(start, min(start + batch_size, n)))
        yield {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def _image_quality(clean: torch.Tensor, estimate: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"mse": mse(estimate, clean), "psnr": psnr(estimate, clean), "ssim": ssim(estimate, clean)}


def _summarise(per_image: dict[str, list[torch.Tensor]]) -> dict[str, float]:
    """Mean of each per-image metric (PSNR of a perfect image is +inf: clamped at 100 dB)."""
    out = {}
    for key, values in per_image.items():
        v = torch.cat(values).double()
        if key.startswith("psnr"):
            v = v.clamp(max=100.0)
        out[key] = float(v.mean())
    return out


@torch.no_grad()
def reconstruction_metrics(model: nn.Module, dataset: Any, batch_size: int = 256,
                           limit: int | None = None) -> dict[str, Any]:
    """MSE, PSNR (dB) and SSIM of ``model.reconstruct(x)`` against x, averaged over images."""
    model.eval()
    per_image: dict[str, list[torch.Tensor]] = {"mse": [], "psnr": [], "ssim": []}
    for batch in iterate_images(dataset, batch_size, model_device(model), limit):
        x = batch["images"]
        for key, value in _image_quality(x, model.reconstruct(x)).items():
            per_image[key].append(value.cpu())
    return {**_summarise(per_image), "num_images": sum(len(v) for v in per_image["mse"])}


@torch.no_grad()
def denoising_metrics(model: nn.Module, dataset: Any, corruption: str | Corruption, seed: int = 0,
                      batch_size: int = 256, limit: int | None = None) -> dict[str, Any]:
    """Corrupt each image (seeded), denoise it with ``model.denoise``; quality of the noisy input and of
    the output, both against the clean image. Keys: psnr_noisy, psnr, ssim_noisy, ssim, mse."""
    corruption = Corruption.parse(corruption) if isinstance(corruption, str) else corruption
    model.eval()
    device = model_device(model)
    generator = torch.Generator(device).manual_seed(seed)
    per_image: dict[str, list[torch.Tensor]] = {"psnr_noisy": [], "ssim_noisy": [], "mse": [], "psnr": [],
                                                "ssim": []}
    for batch in iterate_images(dataset, batch_size, device, limit):
        x = batch["images"]
        noisy = corruption(x, generator)
        per_image["psnr_noisy"].append(psnr(noisy.clamp(-1, 1), x).cpu())
        per_image["ssim_noisy"].append(ssim(noisy.clamp(-1, 1), x).cpu())
        for key, value in _image_quality(x, model.denoise(noisy)).items():
            per_image[key].append(value.cpu())
    return {**_summarise(per_image), "corruption": corruption.spec, "num_images": sum(
        len(v) for v in per_image["mse"])}


def dequantize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform dequantization of 8-bit images: x = k / 127.5 - 1 -> (k + u) / 128 - 1, u ~ U[0, 1).

    The result lies in [-1, 1); a continuous density on it bounds the discrete likelihood
    (``aediff.metrics.continuous_nll_to_discrete_bpd``). Theis et al. 2016; Ho et al. 2020 use the same.
    """
    k = torch.round((x + 1) * 127.5)
    u = torch.rand(x.shape, device=x.device, generator=generator)
    return (k + u) / 128 - 1


@torch.no_grad()
def vae_likelihood(model: nn.Module, dataset: Any, k: int = 100, seed: int = 0, batch_size: int = 100,
                   limit: int | None = None) -> dict[str, Any]:
    """Test-set ELBO and IWAE (k samples) negative log-likelihood of a VAE, in nats and bits/dim.

    Bernoulli VAEs are scored on images binarized once with ``seed`` (fixed across models); Gaussian
    VAEs on uniformly dequantized 8-bit images, with the discrete bound in bits/dim.
    """
    model.eval()
    device = model_device(model)
    generator = torch.Generator(device).manual_seed(seed)
    torch.manual_seed(seed)  # the reparameterization noise inside the model
    elbos, iwaes = [], []
    dims = None
    for batch in iterate_images(dataset, batch_size, device, limit):
        x = batch["images"]
        if model.config.likelihood == "bernoulli":
            x = model.prepare_input(x, generator)
        else:
            x = dequantize(x, generator)
        dims = x[0].numel()
        elbos.append(model.elbo(x).cpu().double())
        iwaes.append(model.iwae_log_likelihood(x, k=k).cpu().double())
    nll_elbo, nll_iwae = -torch.cat(elbos).mean().item(), -torch.cat(iwaes).mean().item()
    if model.config.likelihood == "bernoulli":
        bpd_elbo, bpd_iwae = bits_per_dim(nll_elbo, dims), bits_per_dim(nll_iwae, dims)
        data = "dynamically binarized (fixed seed)"
    else:
        bpd_elbo = continuous_nll_to_discrete_bpd(nll_elbo, dims)
        bpd_iwae = continuous_nll_to_discrete_bpd(nll_iwae, dims)
        data = "8-bit, uniformly dequantized"
    return {"nll_elbo_nats": nll_elbo, "nll_iwae_nats": nll_iwae, "elbo_bits_per_dim": bpd_elbo,
            "iwae_bits_per_dim": bpd_iwae, "iwae_k": k, "likelihood": model.config.likelihood, "data": data,
            "num_images": len(torch.cat(elbos)), "seed": seed}


@torch.no_grad()
def sample_images(model: nn.Module, n: int, seed: int = 0, batch_size: int = 250) -> torch.Tensor:
    """``n`` samples [n, C, S, S] in [-1, 1] on the CPU, reproducible for ``seed``."""
    model.eval()
    generator = torch.Generator(model_device(model)).manual_seed(seed)
    chunks = [model.sample(min(batch_size, n - i), generator=generator).cpu() for i in range(0, n, batch_size)]
    return torch.cat(chunks)


@torch.no_grad()
def classifier_accuracy(classifier: nn.Module, dataset: Any, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``classifier.logits`` on a labelled dataset."""
    classifier.eval()
    correct = total = 0
    for batch in iterate_images(dataset, batch_size, model_device(classifier)):
        correct += int((classifier.logits(batch["images"]).argmax(1) == batch["labels"]).sum())
        total += len(batch["labels"])
    return correct / max(total, 1)


def generation_score(images: torch.Tensor, features: Callable[[torch.Tensor], torch.Tensor], reference: Any, *,
                     feature_extractor: str, reference_name: str, seed: int = 0) -> FeatureScore:
    """FID and KID of ``images`` against the ``reference`` dataset in the space of ``features``
    (e.g. a trained classifier's ``features`` method, or ``aediff.metrics.inception_extractor()``).

    The returned record names the feature extractor, the sample count and the reference split.
    """
    owner = getattr(features, "__self__", None)
    device = model_device(owner) if isinstance(owner, nn.Module) else torch.device("cpu")
    reference_images = torch.cat([b["images"].cpu() for b in iterate_images(reference)])
    sample_feats = extract_features(features, images.to(device))
    reference_feats = extract_features(features, reference_images.to(device))
    return score_features(sample_feats, reference_feats, feature_extractor=feature_extractor,
                          reference=reference_name, kid_subset_size=min(1000, len(images), len(reference)),
                          seed=seed)
