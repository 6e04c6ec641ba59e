"""Vector-quantised autoencoder (VQ-VAE: van den Oord, Vinyals & Kavukcuoglu 2017, "Neural Discrete
Representation Learning"), with the codebook learned by exponential moving averages (their appendix A.1;
Razavi, van den Oord & Vinyals 2019, VQ-VAE-2) and dead codes restarted from the batch (Dhariwal et al. 2020,
Jukebox).

The AE's encoder gives z_e(x) [N, D, h, w] (D = latent_channels); each of its h x w vectors is replaced by the
nearest of K code vectors e_1..e_K (squared Euclidean distance), and the decoder reconstructs x from those,
z_q(x). The argmin has no gradient, so the decoder's gradient is copied onto z_e (the straight-through
estimator). The loss is

    ||x - D(z_q)||^2 + beta ||z_e - sg(e)||^2

(sg: stop-gradient; both terms are means, over pixels and over latent numbers). The paper's third term,
||sg(z_e) - e||^2, is replaced by the EMA update: per training batch, with n_k vectors assigned to code k and
their sum s_k, N_k <- gamma N_k + (1 - gamma) n_k, m_k <- gamma m_k + (1 - gamma) s_k, and e_k = m_k / N~_k
where N~_k = (N_k + eps) / (sum_j N_j + K eps) * sum_j N_j (Laplace smoothing, so that no N~_k is 0).
Map to the names here: gamma = ``codebook_decay``, eps = ``codebook_epsilon``, N = ``cluster_size``,
m = ``code_sum``, e = ``codebook``.

A code whose N_k falls below ``dead_code_threshold`` (units: latent vectors per training batch) is restarted
at a latent vector of the current batch drawn at random (torch's generator, which the trainer seeds per step:
reproducible and exact on resume), with N_k = 1 and m_k = that vector, the state every code starts in.

All of it lives in buffers (saved in the safetensors weights, so a resumed run goes on exactly); the codebook
changes in training mode only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from aediff.blocks import stage_shapes
from aediff.config import bounded
from aediff.errors import ConfigError
from aediff.metrics.codebook import codebook_perplexity, codebook_usage
from aediff.models.ae import AEConfig, Autoencoder
from aediff.models.interface import Capability
from aediff.models.registry import register_model
from aediff.modes import LatentKind

# Codes in a codebook: far above the paper's 512 and VQ-GAN's 16,384; the distance matrix of a batch is
# [vectors, K], so a larger K costs memory in every step.
MAX_CODEBOOK_SIZE = 65_536


@dataclass
class VQVAEConfig(AEConfig):
    latent: LatentKind = "spatial"  # quantised per position: only a spatial latent (vector is refused)
    codebook_size: int = bounded(512, 1, MAX_CODEBOOK_SIZE)  # K, codes; the paper's 512
    beta: float = bounded(0.25, 0)  # commitment weight; the paper's 0.25 (results were robust in 0.1..2.0)
    codebook_decay: float = bounded(0.99, 0, 1, high_open=True)  # gamma of the EMA codebook; the paper's 0.99
    codebook_epsilon: float = bounded(1e-5, 0, low_open=True)  # Laplace smoothing of the EMA cluster sizes
    # restart a code whose EMA cluster size (latent vectors per batch) falls below this; 0 = never
    dead_code_threshold: float = bounded(1.0, 0)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.latent != "spatial":
            raise ConfigError(
                f"a vqvae quantises each position of a spatial latent; latent={self.latent!r} has no positions: "
                "use --latent spatial (the vqvae default)"
            )


@dataclass(frozen=True)
class Quantized:
    """What the quantiser makes of z_e [N, D, h, w]: ``straight_through`` (z_q's values with z_e's gradient),
    ``indices`` [N, h, w] int64, ``commitment`` = mean (z_e - sg(z_q))^2 (0-d, before beta), and the batch's
    ``counts`` [K] of vectors per code."""

    straight_through: torch.Tensor
    indices: torch.Tensor
    commitment: torch.Tensor
    counts: torch.Tensor


class VectorQuantizer(nn.Module):
    """Nearest-code quantisation with an EMA codebook (module docstring): z [N, D, h, w] -> code vectors."""

    def __init__(self, codebook_size: int, dim: int, decay: float, epsilon: float, dead_code_threshold: float):
        super().__init__()
        self.decay, self.epsilon, self.dead_code_threshold = decay, epsilon, dead_code_threshold
        codebook = torch.randn(codebook_size, dim)  # z_e is O(1) after the encoder's norm and 1x1 conv
        self.register_buffer("codebook", codebook)  # e_k, [K, D]
        # N_k = 1, m_k = e_k: the EMA state of one vector at each code (e_k = m_k / N_k holds from the start)
        self.register_buffer("cluster_size", torch.ones(codebook_size))  # N_k, [K]
        self.register_buffer("code_sum", codebook.clone())  # m_k, [K, D]

    @property
    def codebook_size(self) -> int:
        return self.codebook.shape[0]

    def nearest(self, vectors: torch.Tensor) -> torch.Tensor:
        """Vectors [M, D] -> the index of the nearest code, [M] int64 (ties: the lowest index)."""
        # ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2; ||z||^2 is the same for every code, so it is left out
        codebook = self.codebook.float()
        distances = codebook.pow(2).sum(1) - 2 * vectors.float() @ codebook.T
        return distances.argmin(1)

    def indices(self, z: torch.Tensor) -> torch.Tensor:
        """z [N, D, h, w] -> code indices [N, h, w] int64."""
        n, d, h, w = z.shape
        return self.nearest(z.permute(0, 2, 3, 1).reshape(-1, d)).reshape(n, h, w)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code indices [N, h, w] -> code vectors [N, D, h, w] (float32)."""
        return F.embedding(indices, self.codebook.float()).permute(0, 3, 1, 2)

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """z [N, D, h, w] -> the nearest code vectors, [N, D, h, w]; no gradient, no codebook update."""
        return self.lookup(self.indices(z))

    def forward(self, z: torch.Tensor) -> Quantized:
        """Quantise z_e [N, D, h, w]; in training mode, then update the codebook from this batch."""
        # fp32 whatever the autocast: distances of nearby codes must not round to ties, EMA sums must not drift
        with torch.autocast(z.device.type, enabled=False):
            z = z.float()
            indices = self.indices(z)
            z_q = self.lookup(indices)
            counts = torch.bincount(indices.flatten(), minlength=self.codebook_size)
            if self.training:
                self.update(z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1]), indices.flatten(), counts)
            commitment = F.mse_loss(z, z_q.detach())
            return Quantized(z + (z_q - z).detach(), indices, commitment, counts)

    @torch.no_grad()
    def update(self, vectors: torch.Tensor, indices: torch.Tensor, counts: torch.Tensor) -> None:
        """The EMA step of the module docstring for the batch's ``vectors`` [M, D] assigned to ``indices`` [M]
        (``counts`` [K] of them per code), then the dead-code restarts."""
        sums = torch.zeros_like(self.code_sum).index_add_(0, indices, vectors)
        counts = counts.to(sums.dtype)
        _sum_over_processes(counts, sums)  # every process's batch counts, as one process with the global batch
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.code_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        total = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.epsilon) / (total + self.codebook_size * self.epsilon) * total
        self.codebook.copy_(self.code_sum / smoothed[:, None])
        self.restart_dead_codes(vectors)

    @torch.no_grad()
    def restart_dead_codes(self, vectors: torch.Tensor) -> None:
        """Move each code whose EMA cluster size is below the threshold to one of ``vectors`` [M, D] drawn at
        random (with replacement, from torch's generator), with the EMA state of one vector there."""
        dead = (self.cluster_size < self.dead_code_threshold).nonzero().flatten()
        if len(dead) == 0:
            return
        chosen = vectors[torch.randint(len(vectors), (len(dead),), device=vectors.device)]
        _same_on_every_process(chosen)  # the main process's draw: processes keep one codebook
        self.codebook[dead] = chosen
        self.code_sum[dead] = chosen
        self.cluster_size[dead] = 1.0


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _sum_over_processes(*tensors: torch.Tensor) -> None:
    """Sum each tensor over the processes of a multi-process run, in place (nothing in one process)."""
    if _distributed():
        for tensor in tensors:
            dist.all_reduce(tensor)


def _same_on_every_process(tensor: torch.Tensor) -> None:
    """Overwrite ``tensor`` with the main process's, in place (nothing in one process)."""
    if _distributed():
        dist.broadcast(tensor, src=0)


@register_model
class VQVAE(Autoencoder):
    """x: [N, C, H, W] in [-1, 1]; z: the quantised latent [N, latent_channels, h, w] (code vectors).

    ``decode`` quantises what it is given before decoding (a no-op on code vectors), so a latent from anywhere
    (the fitted Gaussian of ``sample``, a latent diffusion model's output, an interpolation) is decoded as the
    nearest codes, as latent diffusion with a VQ autoencoder does (Rombach et al. 2022). Sampling draws from a
    Gaussian fitted to the quantised training latents (the AE's), then quantises: a crude prior; the paper's
    is an autoregressive PixelCNN over the code indices, which aediff does not train."""

    family = "vqvae"
    config_class = VQVAEConfig
    declared = Autoencoder.declared | {Capability.CODEBOOK}

    def __init__(self, config: VQVAEConfig):
        super().__init__(config)
        self.config: VQVAEConfig = config
        c = config
        self.quantizer = VectorQuantizer(
            c.codebook_size, c.latent_channels, c.codebook_decay, c.codebook_epsilon, c.dead_code_threshold
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, C, H, W] in [-1, 1] -> the code vectors z_q [N, latent_channels, h, w]."""
        return self.quantizer.quantize(self.encoder_head(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z [N, latent_channels, h, w] -> its nearest codes, decoded: images [N, C, H, W] in [-1, 1]."""
        return self.decoder_output(self.quantizer.quantize(z)).clamp(-1, 1)

    def code_indices(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, C, H, W] in [-1, 1] -> the code index of each latent position, [N, h, w] int64 in [0, K)."""
        return self.quantizer.indices(self.encoder_head(x))

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss = MSE(x, decoder(z_q)) + beta * commitment; in training mode the codebook takes its EMA step.
        Logs: mse, commitment (before beta), codebook_usage (share of codes in this batch) and perplexity."""
        x = batch["images"]
        q = self.quantizer(self.encoder_head(x))
        mse = F.mse_loss(self.decoder_output(q.straight_through), x)
        logs = {
            "mse": mse,
            "commitment": q.commitment,
            "codebook_usage": codebook_usage(q.counts),
            "perplexity": codebook_perplexity(q.counts),
        }
        values = torch.stack([v.detach().float() for v in logs.values()]).tolist()  # one device sync, not four
        return mse + self.config.beta * q.commitment, dict(zip(logs, values, strict=True))

    @classmethod
    def prepare_config(cls, config: VQVAEConfig, dataset: Any, load_run: Any) -> tuple[VQVAEConfig, dict[str, Any]]:
        """Refuse a codebook larger than the latent vectors of one pass over the training data (images x latent
        positions): the codes beyond them could never all be used. A stream of unknown size is not checked."""
        images = dataset.describe()["size"]
        h, w = stage_shapes(config.image_hw, len(config.channels))[-1]
        if images is not None and config.codebook_size > images * h * w:
            vectors = images * h * w
            raise ConfigError(
                f"codebook_size {config.codebook_size} is more than the {vectors:,} latent vectors of the training "
                f"data ({images:,} images x {h}x{w} latent positions), so some codes could never be used: "
                f"--set codebook_size={2 ** int(math.log2(vectors))} or fewer, or more images"
            )
        return config, {}
