"""Variational autoencoder (Kingma & Welling 2014), beta-VAE weighting (Higgins et al. 2017) and the
importance-weighted bound (Burda et al. 2016).

Notation: q(z|x) = N(mu, diag(exp(logvar))) from the encoder; p(z) = N(0, I); p(x|z) from the decoder,
either Gaussian (mean from the decoder, one learned log-std per channel) on pixels in [-1, 1], or
Bernoulli (decoder logits) on dynamically binarized images (Salakhutdinov & Murray 2008's protocol,
the one behind the literature's ~85-90 nats on MNIST). ELBO = E_q[log p(x|z)] - KL(q || p).
All likelihoods are in nats per image unless a name says bits per dimension.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aediff.config import bounded
from aediff.models.ae import AEConfig, Autoencoder
from aediff.models.interface import Capability
from aediff.models.registry import register_model
from aediff.modes import Likelihood

LOG_2PI = math.log(2 * math.pi)


@dataclass
class VAEConfig(AEConfig):
    beta: float = bounded(1.0, 0)  # weight of the KL term (1 = the ELBO; >1 = beta-VAE; 0 = a plain AE's loss)
    likelihood: Likelihood = "gaussian"  # p(x|z); bernoulli binarizes inputs
    # gaussian: initial decoder log-std, in [-1, 1] pixel units; exp(+-10) spans any sensible pixel noise
    init_log_sigma: float = bounded(-2.0, -10, 10)


def gaussian_posterior(head: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """An encoder head's output [N, 2 * d, ...] -> (mu, logvar) of q(z|x), each [N, d, ...]; logvar clamped to
    [-30, 20] (as LDM's ``DiagonalGaussianDistribution``) so that its exponential stays finite."""
    mu, logvar = head.chunk(2, dim=1)
    return mu, logvar.clamp(-30, 20)


def binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Dynamic binarization: pixel in [-1, 1] -> -1 or +1 with P(+1) = (x + 1) / 2."""
    p = (x + 1) / 2
    return torch.where(torch.rand(x.shape, device=x.device, generator=generator) < p, 1.0, -1.0).to(x.dtype)


@register_model
class VAE(Autoencoder):
    """x: [N, C, H, W] in [-1, 1]; latents as in the AE."""

    family = "vae"
    config_class = VAEConfig
    declared = Autoencoder.declared | {Capability.ELBO}
    latent_outputs = 2  # mean and log-variance

    def __init__(self, config: VAEConfig):
        super().__init__(config)
        self.config: VAEConfig = config
        if config.likelihood == "gaussian":
            self.log_sigma = nn.Parameter(torch.full((config.image_channels,), config.init_log_sigma))

    # --- q(z|x) ------------------------------------------------------------------------------
    def encode_distribution(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x -> (mu, logvar), each [N, *latent_shape]."""
        return gaussian_posterior(self.encoder_head(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean: the deterministic code used by probes and latent diffusion."""
        return self.encode_distribution(x)[0]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z -> the likelihood's mean image in [-1, 1] (for Bernoulli: 2 * sigmoid(logits) - 1)."""
        out = self.decoder_output(z)
        if self.config.likelihood == "bernoulli":
            return 2 * torch.sigmoid(out) - 1
        return out.clamp(-1, 1)

    # --- log p(x|z), KL, ELBO, IWAE ------------------------------------------------------------
    def decoder_log_prob(self, x: torch.Tensor, decoder_out: torch.Tensor) -> torch.Tensor:
        """log p(x|z) in nats per image, [N]. Bernoulli expects binarized x in {-1, +1}."""
        if self.config.likelihood == "bernoulli":
            target = (x + 1) / 2
            return -F.binary_cross_entropy_with_logits(decoder_out, target, reduction="none").flatten(1).sum(1)
        log_sigma = self.log_sigma[None, :, None, None]
        log_p = -0.5 * ((x - decoder_out) / log_sigma.exp()) ** 2 - log_sigma - 0.5 * LOG_2PI
        return log_p.flatten(1).sum(1)

    @staticmethod
    def kl_to_prior(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """KL(N(mu, exp(logvar)) || N(0, I)) in nats, [N]."""
        return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).flatten(1).sum(1)

    @property
    def likelihood(self) -> Likelihood:
        """The decoder's p(x|z), as configured."""
        return self.config.likelihood

    def prepare_input(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """What the likelihood models: binarized images for Bernoulli, the images themselves otherwise."""
        return binarize(x, generator) if self.config.likelihood == "bernoulli" else x

    def elbo_terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log p(x|z) with one reparameterized z ~ q, KL), each [N] in nats. x already prepared."""
        mu, logvar = self.encode_distribution(x)
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)  # reparameterization trick
        return self.decoder_log_prob(x, self.decoder_output(z)), self.kl_to_prior(mu, logvar)

    @torch.no_grad()
    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        """Single-sample ELBO estimate in nats per image, [N]; x prepared (see ``prepare_input``)."""
        log_px, kl = self.elbo_terms(x)
        return log_px - kl

    @torch.no_grad()
    def iwae_log_likelihood(self, x: torch.Tensor, k: int = 100, chunk: int = 25) -> torch.Tensor:
        """Importance-weighted estimate of log p(x), nats per image [N] (Burda et al. 2016):
        log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x), z_i ~ q(z|x). A lower bound that tightens with k."""
        mu, logvar = self.encode_distribution(x)
        std = (0.5 * logvar).exp()
        log_weights = []
        for start in range(0, k, chunk):
            m = min(chunk, k - start)
            eps = torch.randn((m, *mu.shape), device=mu.device)
            z = mu + std * eps  # [m, N, ...]
            z_flat = z.reshape(m * len(x), *mu.shape[1:])
            out = self.decoder_output(z_flat)
            log_px = self.decoder_log_prob(x.repeat(m, *([1] * (x.dim() - 1))), out).reshape(m, len(x))
            log_pz = (-0.5 * z.pow(2) - 0.5 * LOG_2PI).flatten(2).sum(2)
            log_qz = (-0.5 * eps.pow(2) - 0.5 * LOG_2PI - std.log()).flatten(2).sum(2)
            log_weights.append(log_px + log_pz - log_qz)
        return torch.logsumexp(torch.cat(log_weights), dim=0) - math.log(k)

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss = -(log p(x|z) - beta KL) per data dimension (so learning rates don't depend on size)."""
        x = self.prepare_input(batch["images"])
        log_px, kl = self.elbo_terms(x)
        dims = x[0].numel()
        loss = -(log_px - self.config.beta * kl).mean() / dims
        elbo = (log_px - kl).mean().item()
        return loss, {"elbo_nats": elbo, "kl_nats": kl.mean().item(), "recon_nats": -log_px.mean().item()}

    # --- sampling from the prior ---------------------------------------------------------------
    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """z ~ p(z) = N(0, I), [n, *latent_shape]."""
        return torch.randn((n, *self.latent_shape), device=self.prior_mean.device, generator=generator)

    def after_training(self, batches: Any) -> None:
        """A VAE samples from its prior: nothing to fit."""

    @torch.no_grad()
    def preview(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        grids = super().preview(batch)
        grids["prior_samples"] = self.sample(16)
        return grids
