"""The basic protocols: reconstruction, denoising at one corruption, likelihoods, samples and their
FID / KID / precision / recall, and the batching helpers the other evaluation modules share."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import MethodType
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from aediff.diffusion.samplers import SamplerOptions
from aediff.metrics import (
    FeatureScore,
    bits_per_dim,
    codebook_perplexity,
    codebook_usage,
    continuous_nll_to_discrete_bpd,
    extract_features,
    mse,
    psnr,
    score_features,
    ssim,
)
from aediff.models import Capability, Condition, Corruption, Model, model_device


def spread_indices(size: int, limit: int | None = None) -> torch.Tensor:
    """``limit`` indices [limit] (int64) spread evenly over range(size), or all of them when ``limit`` is
    None or not smaller. Evenly spread, not the first ``limit``: a split stored class by class (mnist5k,
    a folder of class sub-folders) still contributes every class to a limited evaluation."""
    if limit is None or limit >= size:
        return torch.arange(size)
    return torch.linspace(0, size - 1, max(limit, 1)).round().long()


def iterate_images(
    dataset: Any, batch_size: int = 256, device: torch.device | str = "cpu", limit: int | None = None
) -> Iterator[dict[str, Any]]:
    """Batches of ``dataset`` (``limit`` images spread evenly over it, see ``spread_indices``, in dataset
    order), tensors moved to ``device``."""
    indices = spread_indices(len(dataset), limit)
    for chunk in indices.split(batch_size):
        batch = dataset.batch(chunk)
        yield {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


def unit_range(images: torch.Tensor) -> torch.Tensor:
    """aediff images [-1, 1] -> [0, 1] (clamped), the range SSIM is defined on (Wang et al. 2004)."""
    return ((images.clamp(-1, 1) + 1) / 2).float()


def _image_quality(clean: torch.Tensor, estimate: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image MSE and PSNR in aediff's [-1, 1] range (data range 2), SSIM on [0, 1] (data range 1)."""
    return {
        "mse": mse(estimate, clean),
        "psnr": psnr(estimate, clean),
        "ssim": ssim(unit_range(estimate), unit_range(clean)),
    }


def _summarise(per_image: dict[str, list[torch.Tensor]], keep_per_image: bool = False) -> dict[str, Any]:
    """Mean of each per-image metric and its standard error over images (``<key>_se``); PSNR of a perfect
    image is +inf: clamped at 100 dB. keep_per_image: also return the values [N] as numpy arrays under
    "per_image" (for paired comparisons; not JSON)."""
    out: dict[str, Any] = {}
    arrays = {}
    for key, values in per_image.items():
        v = torch.cat(values).double()
        if key.startswith("psnr"):
            v = v.clamp(max=100.0)
        out[key] = float(v.mean())
        out[f"{key}_se"] = float(v.std() / len(v) ** 0.5) if len(v) > 1 else 0.0
        arrays[key] = v.numpy()
    if keep_per_image:
        out["per_image"] = arrays
    return out


@torch.no_grad()
def reconstruction_metrics(
    model: nn.Module, dataset: Any, batch_size: int = 256, limit: int | None = None, keep_per_image: bool = False
) -> dict[str, Any]:
    """MSE, PSNR (dB, data range 2) and SSIM (on [0, 1]) of ``model.reconstruct(x)`` against x, averaged over
    images, each with its standard error over images (``psnr_se`` ...); keep_per_image: see ``_summarise``."""
    model.eval()
    per_image: dict[str, list[torch.Tensor]] = {"mse": [], "psnr": [], "ssim": []}
    for batch in iterate_images(dataset, batch_size, model_device(model), limit):
        x = batch["images"]
        for key, value in _image_quality(x, model.reconstruct(x)).items():
            per_image[key].append(value.cpu())
    return {**_summarise(per_image, keep_per_image), "num_images": sum(len(v) for v in per_image["mse"])}


@torch.no_grad()
def denoising_metrics(
    model: nn.Module,
    dataset: Any,
    corruption: str | Corruption,
    seed: int = 0,
    batch_size: int = 256,
    limit: int | None = None,
    steps: int = 1,
    keep_per_image: bool = False,
) -> dict[str, Any]:
    """Corrupt each image (seeded), denoise it with ``model.denoise``; quality of the noisy input (the
    identity denoiser, the control every denoiser must beat) and of the output, both against the clean
    image. Keys: psnr_noisy, psnr, ssim_noisy, ssim, mse, each with ``_se`` (over images); keep_per_image:
    see ``_summarise``.

    Models that take the noise level (diffusion) are told the Gaussian sigma, and denoise in ``steps``."""
    corruption = Corruption.parse(corruption) if isinstance(corruption, str) else corruption
    sigma = corruption.fixed_sigma
    model.eval()
    device = model_device(model)
    generator = torch.Generator(device).manual_seed(seed)
    per_image: dict[str, list[torch.Tensor]] = {"psnr_noisy": [], "ssim_noisy": [], "mse": [], "psnr": [], "ssim": []}
    for batch in iterate_images(dataset, batch_size, device, limit):
        x = batch["images"]
        noisy = corruption(x, generator)
        per_image["psnr_noisy"].append(psnr(noisy.clamp(-1, 1), x).cpu())
        per_image["ssim_noisy"].append(ssim(unit_range(noisy), unit_range(x)).cpu())
        for key, value in _image_quality(x, model.denoise(noisy, sigma=sigma, steps=steps)).items():
            per_image[key].append(value.cpu())
    return {
        **_summarise(per_image, keep_per_image),
        "corruption": corruption.spec,
        "steps": steps,
        "num_images": sum(len(v) for v in per_image["mse"]),
    }


def dequantize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform dequantization of 8-bit images: x = k / 127.5 - 1 -> (k + u) / 128 - 1, u ~ U[0, 1).

    The result lies in [-1, 1); a continuous density on it bounds the discrete likelihood
    (``aediff.metrics.continuous_nll_to_discrete_bpd``). Theis et al. 2016; Ho et al. 2020 use the same.
    """
    k = torch.round((x + 1) * 127.5)
    u = torch.rand(x.shape, device=x.device, generator=generator)
    return (k + u) / 128 - 1


@torch.no_grad()
def vae_likelihood(
    model: nn.Module, dataset: Any, k: int = 100, seed: int = 0, batch_size: int = 100, limit: int | None = None
) -> dict[str, Any]:
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
        if model.likelihood == "bernoulli":
            x = model.prepare_input(x, generator)
        else:
            x = dequantize(x, generator)
        dims = x[0].numel()
        elbos.append(model.elbo(x).cpu().double())
        iwaes.append(model.iwae_log_likelihood(x, k=k).cpu().double())
    nll_elbo, nll_iwae = -torch.cat(elbos).mean().item(), -torch.cat(iwaes).mean().item()
    iwae_se = float(torch.cat(iwaes).std() / len(torch.cat(iwaes)) ** 0.5) if len(torch.cat(iwaes)) > 1 else 0.0
    if model.likelihood == "bernoulli":
        bpd_elbo, bpd_iwae = bits_per_dim(nll_elbo, dims), bits_per_dim(nll_iwae, dims)
        data = "dynamically binarized (fixed seed)"
    else:
        bpd_elbo = continuous_nll_to_discrete_bpd(nll_elbo, dims)
        bpd_iwae = continuous_nll_to_discrete_bpd(nll_iwae, dims)
        data = "8-bit, uniformly dequantized"
    return {
        "nll_elbo_nats": nll_elbo,
        "nll_iwae_nats": nll_iwae,
        "elbo_bits_per_dim": bpd_elbo,
        "iwae_bits_per_dim": bpd_iwae,
        "iwae_bits_per_dim_se": float(bits_per_dim(iwae_se, dims)),  # over images; the offset of 8-bit data is exact
        "iwae_k": k,
        "likelihood": model.likelihood,
        "data": data,
        "num_images": len(torch.cat(elbos)),
        "seed": seed,
    }


@torch.no_grad()
def codebook_metrics(model: Model, dataset: Any, batch_size: int = 256, limit: int | None = None) -> dict[str, Any]:
    """How a vector-quantised model (Capability.CODEBOOK) uses its K codes on ``dataset``'s images (``limit``
    of them, spread evenly), counted over every latent position of every image: usage (share of the codes
    picked at least once, in [0, 1]), perplexity (exp of the entropy of the code frequencies, in [1, K]),
    codes_used, codebook_size, num_vectors, num_images."""
    model.require(Capability.CODEBOOK, "codebook usage")
    model.eval()
    counts = torch.zeros(model.codebook_size, dtype=torch.long)
    images = 0
    for batch in iterate_images(dataset, batch_size, model_device(model), limit):
        indices = model.code_indices(batch["images"]).flatten().cpu()
        counts += torch.bincount(indices, minlength=model.codebook_size)
        images += len(batch["images"])
    return {
        "usage": codebook_usage(counts).item(),
        "perplexity": codebook_perplexity(counts).item(),
        "codes_used": int((counts > 0).sum()),
        "codebook_size": model.codebook_size,
        "num_vectors": int(counts.sum()),
        "num_images": images,
    }


@torch.no_grad()
def sample_images(
    model: Model,
    n: int,
    seed: int = 0,
    condition: Condition | None = None,
    options: SamplerOptions | None = None,
    batch_size: int = 250,
) -> torch.Tensor:
    """``n`` samples [n, C, S, S] in [-1, 1] on the CPU, reproducible for ``seed``, drawn in batches.
    ``condition`` and ``options`` go to ``model.sample``; per-image class labels / prompts (n of them) are
    split with the batches."""
    model.require(Capability.GENERATE, "sampling")
    model.eval()
    generator = torch.Generator(model_device(model)).manual_seed(seed)
    chunks = []
    for i in range(0, n, batch_size):
        size = min(batch_size, n - i)
        part = condition.rows(i, i + size, n) if condition is not None else None
        chunks.append(model.sample(size, part, options, generator=generator).cpu())
    return torch.cat(chunks)


def class_frequency_labels(labels: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    """n class labels [n] int64 drawn independently from the class frequencies of ``labels`` [N] (a training
    split's), from ``seed`` alone: every model sampled with one seed gets the same label sequence."""
    counts = np.bincount(labels.cpu().numpy(), minlength=1).astype(np.float64)
    drawn = np.random.default_rng(seed).choice(len(counts), size=n, p=counts / counts.sum())
    return torch.from_numpy(drawn).to(torch.int64)


@torch.no_grad()
def sample_classes(
    model: Model, labels: torch.Tensor, train: Any, seed: int = 0, batch_size: int = 250
) -> torch.Tensor:
    """One sample of each label's class, [len(labels), C, H, W] in [-1, 1] on the CPU, reproducible for
    ``seed``, drawn in batches by ``model.class_sampler(train)`` (``train``: the labelled training split)."""
    model.require(Capability.SAMPLE_CLASSES, "sampling by class")
    model.eval()
    draw = model.class_sampler(train)
    generator = torch.Generator(model_device(model)).manual_seed(seed)
    return torch.cat([draw(part, generator).cpu() for part in labels.split(batch_size)])


@torch.no_grad()
def sampling_trajectory(
    model: Model,
    n: int = 4,
    seed: int = 0,
    frames: int = 8,
    condition: Condition | None = None,
    options: SamplerOptions | None = None,
) -> tuple[torch.Tensor, int]:
    """A diffusion model's sampling path: for each of ``n`` samples, a row of x_t (scaled to unit variance
    for display) and a row of the predicted x0, at ``frames`` evenly spread steps, ending with the sample.
    Frame k shows the state at the k-th noise level the sampler visits and the x0 predicted from it.

    Returns (images [2 * n * columns, C, S, S] in [-1, 1] in row order, columns).
    """
    model.require(Capability.DIFFUSION_SAMPLER, "a sampling trajectory")
    model.eval()
    seen: list[dict[str, Any]] = []
    final = model.sample(
        n, condition, options, generator=torch.Generator(model_device(model)).manual_seed(seed), callback=seen.append
    )
    picks = torch.linspace(0, len(seen) - 1, min(frames, len(seen))).round().long().unique().tolist()
    show = model.output_images  # pixels are shown as they are, latents decoded
    noisy = [show(seen[i]["x"] / (1 + seen[i]["sigma"] ** 2) ** 0.5).cpu() for i in picks] + [final.cpu()]
    clean = [show(seen[i]["denoised"]).cpu() for i in picks] + [final.cpu()]
    rows = []
    for k in range(n):
        rows += [torch.stack([f[k] for f in noisy]), torch.stack([f[k] for f in clean])]
    return torch.cat(rows), len(picks) + 1


@torch.no_grad()
def classifier_accuracy(classifier: nn.Module, dataset: Any, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``classifier.logits`` on a labelled dataset."""
    classifier.eval()
    correct = total = 0
    for batch in iterate_images(dataset, batch_size, model_device(classifier)):
        correct += int((classifier.logits(batch["images"]).argmax(1) == batch["labels"]).sum())
        total += len(batch["labels"])
    return correct / max(total, 1)


def _extractor_device(features: Callable[[torch.Tensor], torch.Tensor]) -> torch.device:
    """Where a feature extractor's images go: a bound method's model's device, else the CPU."""
    return model_device(features.__self__) if isinstance(features, MethodType) else torch.device("cpu")


def dataset_features(features: Callable[[torch.Tensor], torch.Tensor], dataset: Any) -> torch.Tensor:
    """``features`` of every image of ``dataset``: [M, D] float32 on the CPU."""
    images = torch.cat([b["images"].cpu() for b in iterate_images(dataset)])
    return extract_features(features, images.to(_extractor_device(features)))


def generation_score(
    images: torch.Tensor,
    features: Callable[[torch.Tensor], torch.Tensor],
    reference: Any,
    *,
    feature_extractor: str,
    reference_name: str,
    seed: int = 0,
    pr_k: int = 3,
    reference_features: torch.Tensor | None = None,
) -> FeatureScore:
    """FID, KID and improved precision / recall (``pr_k``-th neighbour) of ``images`` against the
    ``reference`` dataset in the space of ``features`` (e.g. a trained classifier's ``features`` method, or
    ``aediff.metrics.inception_extractor()``). ``reference_features``: the reference's features when already
    computed (``dataset_features(features, reference)``, e.g. kept by a ``Judge``).

    The returned record names the feature extractor, the sample count and the reference split.
    """
    if reference_features is None:
        reference_features = dataset_features(features, reference)
    sample_feats = extract_features(features, images.to(_extractor_device(features)))
    return score_features(
        sample_feats,
        reference_features,
        feature_extractor=feature_extractor,
        reference=reference_name,
        kid_subset_size=min(1000, len(images), len(reference)),
        pr_k=pr_k,
        seed=seed,
    )


@torch.no_grad()
def reconstructed_images(model: Model, dataset: Any, limit: int | None = None, batch_size: int = 256) -> torch.Tensor:
    """``model.reconstruct`` (encode, then decode) of ``limit`` images of ``dataset`` spread evenly over it (all
    when None; ``spread_indices``), in that order: [n, C, H, W] clamped to [-1, 1] (as images), on the CPU."""
    model.require(Capability.LATENT, "reconstruction")
    model.eval()
    batches = iterate_images(dataset, batch_size, model_device(model), limit)
    return torch.cat([model.reconstruct(b["images"]).clamp(-1, 1).cpu() for b in batches])


def _normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1 + torch.erf(x / 2**0.5))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log P(x) per image [N] for 8-bit x in [-1, 1] under N(mean, std^2) integrated over each pixel's bin
    (width 2/255; the end bins extend to infinity): DDPM's decoder p(x0 | x1), Ho et al. 2020 eq. 13."""
    half_bin = 1 / 255
    inv_std = torch.exp(-log_std)
    upper = torch.where(x > 0.999, torch.ones_like(x), _normal_cdf((x - mean + half_bin) * inv_std))
    lower = torch.where(x < -0.999, torch.zeros_like(x), _normal_cdf((x - mean - half_bin) * inv_std))
    return (upper - lower).clamp_min(1e-12).log().flatten(1).sum(1)


def _geometric_strata(T: int, count: int) -> torch.Tensor:
    """Edges [k + 1] (int64, k <= count) of strata [edges[i], edges[i+1]) covering the indices 1..T-1 (steps
    2..T), widths growing geometrically from 1: the first strata are single steps."""
    edges = [1]
    for i in range(1, count + 1):
        edges.append(min(T, max(edges[-1] + 1, round(T ** (i / count)))))
        if edges[-1] == T:
            break
    edges[-1] = T
    return torch.tensor(edges)


@torch.no_grad()
def diffusion_nll(
    model: nn.Module,
    dataset: Any,
    timesteps_per_image: int = 32,
    seed: int = 0,
    batch_size: int = 100,
    limit: int | None = None,
    t_sampling: Literal["stratified", "uniform"] = "stratified",
) -> dict[str, Any]:
    """The variational bound on the negative log-likelihood of 8-bit test images, in nats and bits/dim
    (Ho et al. 2020, eq. 5), for any denoiser: L_T + sum_{t>=2} KL(q(x_{t-1}|x_t, x0) || p(x_{t-1}|x_t)) + L_0.

    The chain is the model's discrete schedule (for a continuous-time model: DDPM's linear one, T=1000);
    p(x_{t-1}|x_t) has the posterior mean at the model's x0 estimate and DDPM's "fixed small" variance, and
    L_0 is the discretized Gaussian decoder. The sum over t is estimated without bias from
    ``timesteps_per_image`` t per image (Nichol & Dhariwal 2021 sum all T; same expectation): "stratified"
    splits steps 2..T into that many strata of geometrically growing width (``_geometric_strata``) and draws
    one t in each, weighted by the stratum's width: the terms are largest, by orders of magnitude, at the
    smallest t, which thus get strata of their own; "uniform" draws them independently. With
    timesteps_per_image = T - 1 stratified is the exact sum.
    """
    model.eval()
    device = model_device(model)
    schedule = model.schedule if model.schedule.discrete else type(model.schedule)("linear")
    abar = schedule.alphas_cumprod.to(device)
    sigmas = schedule.sigmas.to(device)
    T = len(abar)
    abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
    beta = 1 - abar / abar_prev
    posterior_var = beta * (1 - abar_prev) / (1 - abar)
    coef_x0 = abar_prev.sqrt() * beta / (1 - abar)
    edges = _geometric_strata(T, timesteps_per_image).to(device)
    k = len(edges) - 1 if t_sampling == "stratified" else timesteps_per_image
    generator = torch.Generator(device).manual_seed(seed)
    totals = []
    for batch in iterate_images(dataset, batch_size, device, limit):
        x0 = batch["images"].double()
        n, dims = len(x0), x0[0].numel()
        # L_T: KL(N(sqrt(abar_T) x0, 1 - abar_T) || N(0, 1)).
        mean_T, var_T = abar[-1].sqrt() * x0, 1 - abar[-1]
        prior = 0.5 * (var_T + mean_T**2 - 1 - var_T.log()).flatten(1).sum(1)
        # sum_{t=2..T} L_{t-1}: each drawn t stands for the steps of its stratum (or 1/k of all of them).
        middle = torch.zeros(n, dtype=torch.float64, device=device)
        for i in range(k):
            if t_sampling == "stratified":
                low, width = edges[i], edges[i + 1] - edges[i]
                t = low + (torch.rand(n, device=device, generator=generator) * width).long().clamp(max=width - 1)
                weight = float(width)
            else:
                t = torch.randint(1, T, (n,), device=device, generator=generator)  # index 1..T-1 = steps 2..T
                weight = (T - 1) / k
            sigma = sigmas[t]
            x_t = x0 + sigma[:, None, None, None] * torch.randn(
                x0.shape, device=device, generator=generator, dtype=x0.dtype
            )
            x0_hat = model.denoiser(x_t.float(), sigma.float()).double()
            kl = (coef_x0[t] ** 2 / (2 * posterior_var[t]))[:, None] * (x0 - x0_hat).pow(2).flatten(1)
            middle += weight * kl.sum(1)
        # L_0: the decoder at t = 1, with improved DDPM's clipped log-variance (that of step 2).
        x_1 = x0 + sigmas[0] * torch.randn(x0.shape, device=device, generator=generator, dtype=x0.dtype)
        x0_hat = model.denoiser(x_1.float(), sigmas[0].expand(n).float()).double()
        decoder = -discretized_gaussian_log_likelihood(x0, x0_hat, 0.5 * posterior_var[1].log())
        totals.append((prior + middle + decoder).cpu())
    nll = torch.cat(totals)
    # The standard error over images carries both sources of spread: images differ, and each image's
    # estimate rests on its own draw of timesteps.
    se = float(nll.std() / len(nll) ** 0.5) if len(nll) > 1 else 0.0
    return {
        "nll_nats": float(nll.mean()),
        "bits_per_dim": float(bits_per_dim(nll.mean(), dims)),
        "bits_per_dim_se": float(bits_per_dim(se, dims)),
        "chain": f"{schedule.kind}, T={T}",
        "timesteps_per_image": k,
        "t_sampling": t_sampling,
        "num_images": len(nll),
        "data": "8-bit, discretized decoder",
        "seed": seed,
    }
