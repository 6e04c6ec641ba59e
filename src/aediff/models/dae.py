"""Denoising autoencoder (Vincent et al. 2008, 2010): trained on corrupted input to return the clean image.

Same network as the AE; only the training pair changes: (corrupt(x), x) instead of (x, x). A diffusion
model is the continuation of this idea: one network for every noise level, told which level it faces.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from aediff.models.ae import AEConfig, Autoencoder
from aediff.models.corruptions import Corruption
from aediff.models.registry import register_model


@dataclass
class DAEConfig(AEConfig):
    corruption: str = "gaussian:0.5"  # training corruption, e.g. gaussian:0.5, gaussian:0.1-0.8, mask:0.3

    def __post_init__(self) -> None:
        super().__post_init__()
        Corruption.parse(self.corruption)  # a bad spec is refused with the config, not when training starts


@register_model
class DAE(Autoencoder):
    """x: [N, C, H, W] in [-1, 1]. ``denoise(corrupted)`` -> the clean estimate in [-1, 1]."""

    family = "dae"
    config_class = DAEConfig

    def __init__(self, config: DAEConfig):
        super().__init__(config)
        self.config: DAEConfig = config
        self.corruption = Corruption.parse(config.corruption)  # validates the spec when the model is built

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss: MSE between the reconstruction of the corrupted image and the clean image."""
        x = batch["images"]
        mse = F.mse_loss(self.decoder_output(self.encode(self.corruption(x))), x)
        return mse, {"mse": mse.item()}

    @torch.no_grad()
    def preview(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Clean, corrupted and denoised rows."""
        x = batch["images"][:16]
        noisy = self.corruption(x)
        return {"denoising": torch.cat([x, noisy.clamp(-1, 1), self.denoise(noisy)])}
