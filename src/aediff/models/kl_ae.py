"""KL-regularised autoencoder of Latent Diffusion Models (Rombach et al. 2022: the "KL-reg." first stage, LDM's
``AutoencoderKL`` with its ``LPIPSWithDiscriminator`` loss), trained against the patch discriminator of VQGAN
(Esser et al. 2021). A spatial latent (LDM's f4 / f8: ``latent_channels`` x h x w), nearly deterministic (a KL
weight of 1e-6), kept sharp by the adversarial loss: the autoencoder latent diffusion works in.

The loss, LDM's divided by D = C * H * W (per pixel, as every aediff autoencoder's, so that learning rates do
not depend on the image size; the ratio of its terms is LDM's, but where lambda's clamp binds):

    rec    = mean |x - x_hat|                  x_hat decoded from z ~ q(z|x) (reparameterized, as LDM trains)
    L_G    = rec + kl_weight * KL(q(z|x) || N(0, I)) / D + lambda * g_loss         (lambda * g_loss: after disc_start)
    g_loss = -mean D(x_hat)                    the discriminator's logits, its parameters detached
    lambda = disc_weight * ||grad_w rec|| / (||grad_w g_loss|| + 1e-4), clamped to [0, 1e4], detached;
             w = the decoder's last convolution's weight
    L_D    = (mean relu(1 - D(x)) + mean relu(1 + D(sg(x_hat)))) / 2                 (after disc_start)

``forward`` returns L_G + L_D. L_G's gradient reaches only the autoencoder (the discriminator's parameters are
detached in g_loss) and L_D's only the discriminator (x_hat is detached there), so one backward and the
trainer's one AdamW step are a simultaneous gradient step of both, with the same settings for both, as LDM's two
Adam optimizers have. Before ``disc_start`` (counted in the trainer's steps, ``begin_step``) neither adversarial
term is computed and the discriminator gets zero gradients, as under LDM's disc_factor 0: AdamW leaves it as it
is (it would decay it if weight_decay > 0). Zeros rather than none, because multi-process training (DDP) needs
every parameter in every step's backward. What one optimizer does differently: the trainer's gradient clipping
(grad_clip) clips the two networks' gradients as one (LDM does not clip), and its default Adam betas are not
LDM's (0.5, 0.9); both are training settings (``--train-set grad_clip=0 --train-set adam_betas=0.5,0.9``).

Left out of LDM's loss: LPIPS (its pretrained VGG weights cannot be had offline: ``perceptual_weight`` must be 0)
and its learned output log-variance (a scalar initialised at 0, where the loss is the one above).

Sampling, as the AE's: a Gaussian fitted to the training latents (posterior means) at the end of training. With
a KL weight of 1e-6 the posterior is not pulled towards N(0, I) (its latents are far from unit scale, which is
why latent diffusion rescales them), so decoding prior draws would not give images of the data.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from aediff.config import MAX_STAGES, MAX_WIDTH, bounded
from aediff.errors import ConfigError
from aediff.models.adversarial import PatchDiscriminator, adaptive_weight, generator_logits, hinge_d_loss, most_layers
from aediff.models.ae import AEConfig, Autoencoder
from aediff.models.registry import register_model
from aediff.models.vae import VAE, gaussian_posterior
from aediff.modes import LatentKind


@dataclass
class KLAEConfig(AEConfig):
    latent: LatentKind = "spatial"  # LDM's latent: latent_channels x h x w at the encoder's lowest stage
    kl_weight: float = bounded(1e-6, 0)  # weight of KL(q || N(0, I)) per image against the summed L1 (LDM: 1e-6)
    # weight of LPIPS; must be 0: its pretrained VGG weights are not available offline (ConfigError otherwise)
    perceptual_weight: float = bounded(0.0, 0)
    disc_start: int = bounded(1000, 0)  # training steps before the adversarial loss switches on (LDM's disc_start)
    disc_weight: float = bounded(0.5, 0)  # scale of the adaptive weight lambda (LDM: 0.5); 0 = no discriminator
    # stride-2 layers of the PatchGAN (LDM: 3 on 256 px); a new run on smaller images gets the most that fit
    disc_layers: int = bounded(2, 1, MAX_STAGES)
    disc_channels: int = bounded(32, 1, MAX_WIDTH)  # the discriminator's first width, doubled per layer up to 8x

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.perceptual_weight > 0:
            raise ConfigError(
                f"perceptual_weight={self.perceptual_weight:g} asks for LPIPS, whose pretrained VGG weights are not "
                "available offline (aediff downloads nothing): train without it, perceptual_weight=0"
            )


@register_model
class KLAutoencoder(Autoencoder):
    """x: [N, C, H, W] in [-1, 1]; z: the posterior mean, [N, latent_channels, h, w] (or [N, bottleneck_dim]
    with latent="vector"). ``discriminator``: the PatchGAN, saved with the weights (resume is exact), used only
    by ``forward``; None when disc_weight is 0."""

    family = "kl-ae"
    config_class = KLAEConfig
    latent_outputs = 2  # mean and log-variance

    def __init__(self, config: KLAEConfig):
        super().__init__(config)
        self.config: KLAEConfig = config
        self.discriminator = (
            PatchDiscriminator(config.image_channels, config.disc_channels, config.disc_layers, config.image_hw)
            if config.disc_weight > 0
            else None
        )
        self.steps_done = 0  # the trainer's step count (begin_step); not saved: the trainer sets it every step

    @classmethod
    def data_defaults(cls, dataset: Any) -> dict[str, Any]:
        """Images too small for the default discriminator depth: the deepest that fits (one layer on 8x8)."""
        most = most_layers(dataset.resolution)
        return {"disc_layers": most} if 0 < most < KLAEConfig.disc_layers else {}

    def begin_step(self, step: int) -> None:
        self.steps_done = step

    # --- q(z|x) ------------------------------------------------------------------------------
    def encode_distribution(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x -> (mu, logvar), each [N, *latent_shape]."""
        return gaussian_posterior(self.encoder_head(x))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean: the code latent diffusion diffuses in, and the AE-style sampler fits."""
        return self.encode_distribution(x)[0]

    # --- the loss ----------------------------------------------------------------------------
    @property
    def adversarial(self) -> bool:
        """Whether ``forward`` adds the adversarial terms: there is a discriminator, ``disc_start`` is reached,
        and this is a training pass with gradients (lambda is a ratio of gradients; a held-out loss, in eval
        mode, is reconstruction + KL, comparable from step to step, as LDM's validation loss whose lambda is 0)."""
        started = self.steps_done >= self.config.disc_start
        return self.discriminator is not None and started and self.training and torch.is_grad_enabled()

    def reconstruction_terms(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(x_hat [N, C, H, W] decoded from z ~ q(z|x), not clamped; rec = mean |x - x_hat| over every pixel, 0-d;
        KL(q(z|x) || N(0, I)) in nats per image, averaged over the batch, 0-d)."""
        mu, logvar = self.encode_distribution(x)
        z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)  # reparameterization trick
        x_hat = self.decoder_output(z)
        return x_hat, (x - x_hat).abs().mean(), VAE.kl_to_prior(mu, logvar).mean()

    def adversarial_terms(
        self, x: torch.Tensor, x_hat: torch.Tensor, rec: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(lambda * g_loss, whose gradient reaches only the autoencoder; L_D, whose gradient reaches only the
        discriminator; their logs as 0-d tensors). x, x_hat: [N, C, H, W]; rec: the reconstruction loss of x_hat."""
        g_loss = -generator_logits(self.discriminator, x_hat).mean()
        weight = adaptive_weight(rec, g_loss, self.decoder.out_conv.weight, self.config.disc_weight)
        # Two calls, as LDM's: BatchNorm normalises the real and the reconstructed batch each with its own statistics.
        logits_real, logits_fake = self.discriminator(x), self.discriminator(x_hat.detach())
        d_loss = hinge_d_loss(logits_real, logits_fake)
        logs = {"g_loss": g_loss, "d_loss": d_loss, "adaptive_weight": weight,
                "logits_real": logits_real.mean(), "logits_fake": logits_fake.mean()}  # fmt: skip
        return weight * g_loss, d_loss, logs

    def idle_discriminator(self) -> torch.Tensor:
        """0, in the graph of every discriminator parameter: before disc_start they get zero gradients (module
        docstring), never none."""
        return sum(p.sum() for p in self.discriminator.parameters()) * 0.0

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """L_G + L_D (module docstring), 0-d. Logs rec_loss and kl_nats, and once the discriminator is on g_loss,
        d_loss, adaptive_weight (lambda), logits_real and logits_fake (means over patches and images)."""
        x = batch["images"]
        x_hat, rec, kl = self.reconstruction_terms(x)
        loss = rec + self.config.kl_weight * kl / x[0].numel()
        logs = {"rec_loss": rec, "kl_nats": kl}
        if self.adversarial:
            g_term, d_loss, adversarial_logs = self.adversarial_terms(x, x_hat, rec)
            loss = loss + g_term + d_loss
            logs.update(adversarial_logs)
        elif self.discriminator is not None:
            loss = loss + self.idle_discriminator()
        values = torch.stack([v.detach().float() for v in logs.values()]).tolist()  # one device sync
        return loss, dict(zip(logs, values, strict=True))

    # --- as a part of another model ------------------------------------------------------------
    def without_training_parts(self) -> KLAutoencoder:
        """This autoencoder without its discriminator (config: disc_weight 0), sharing its other weights."""
        if self.discriminator is None:
            return self
        with torch.device("meta"):  # no memory and no random draws: every tensor is assigned below
            frozen = KLAutoencoder(dataclasses.replace(self.config, disc_weight=0.0))
        kept = {k: v for k, v in self.state_dict().items() if not k.startswith("discriminator.")}
        frozen.load_state_dict(kept, assign=True)
        return frozen.train(self.training)
