"""AediffPipeline: diffusers' scheduler driving an aediff denoiser (copied as pipeline.py into a folder that
``aediff export RUN --format diffusers`` writes; see aediff.export.diffusers)."""

from __future__ import annotations

import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput


class AediffPipeline(DiffusionPipeline):
    """denoiser: D(x, sigma[, class_labels]) -> x0 estimate, x = x0 + sigma * eps; scheduler: one whose
    sigmas are variance-exploding and which takes an x0 estimate (prediction_type "sample")."""

    def __init__(self, denoiser, scheduler):
        super().__init__()
        self.register_modules(denoiser=denoiser, scheduler=scheduler)

    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        num_inference_steps: int = 20,
        generator: torch.Generator | None = None,
        latents: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ):
        """latents: the initial noise at unit scale [N, *space] (None: drawn from ``generator``);
        output_type: "pil", "np" ([N, H, W, C] in [0, 1]) or "pt" ([N, C, H, W] in [0, 1])."""
        device = self.device
        if latents is None:
            latents = torch.randn((batch_size, *self.denoiser.space_shape), generator=generator, device=device)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        x = latents.to(device) * self.scheduler.init_noise_sigma
        for t in self.progress_bar(self.scheduler.timesteps):
            self.scheduler.scale_model_input(x, t)  # sets the step index; the denoiser takes x unscaled
            sigma = self.scheduler.sigmas[self.scheduler.step_index]
            denoised = self.denoiser(x, sigma.to(x.dtype), class_labels=class_labels)
            x = self.scheduler.step(denoised, t, x, return_dict=False)[0]
        images = (self.denoiser.to_images(x) + 1) / 2
        if output_type == "pt":
            out = images
        else:
            out = images.clamp(0, 1).permute(0, 2, 3, 1).cpu().float().numpy()
            if output_type == "pil":
                out = self.numpy_to_pil(out)
        return ImagePipelineOutput(images=out) if return_dict else (out,)
