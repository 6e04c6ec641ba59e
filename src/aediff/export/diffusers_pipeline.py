"""AediffPipeline: diffusers' scheduler driving an aediff denoiser (copied as pipeline.py into a folder that
``aediff export RUN --format diffusers`` writes; see aediff.export.diffusers)."""

from __future__ import annotations

import torch
from diffusers import (
    DDIMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    ImagePipelineOutput,
)


class AediffPipeline(DiffusionPipeline):
    """denoiser: D(x, sigma[, class_labels]) -> x0 estimate, x = x0 + sigma * eps (variance-exploding view);
    scheduler: EulerDiscreteScheduler, DDIMScheduler or DPMSolverMultistepScheduler taking an x0 estimate
    (prediction_type "sample"), as the export configures them."""

    def __init__(self, denoiser, scheduler):
        super().__init__()
        self.register_modules(denoiser=denoiser, scheduler=scheduler)

    def noise_level(self, i: int, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sigma, scale) of step i at timestep t: the variance-exploding noise level, and the factor that
        turns the scheduler's state into the denoiser's x (Euler keeps x itself; DDIM and DPM-Solver keep
        the variance-preserving x * sqrt(abar), abar = 1 / (1 + sigma^2))."""
        if isinstance(self.scheduler, DDIMScheduler):
            alpha_bar = self.scheduler.alphas_cumprod[int(t)]
            return ((1 - alpha_bar) / alpha_bar).sqrt(), alpha_bar.rsqrt()
        sigma = self.scheduler.sigmas[i]
        if isinstance(self.scheduler, EulerDiscreteScheduler):
            return sigma, torch.ones_like(sigma)
        if isinstance(self.scheduler, DPMSolverMultistepScheduler):
            return sigma, (1 + sigma**2).sqrt()
        raise TypeError(
            f"AediffPipeline drives an aediff denoiser with EulerDiscreteScheduler, DDIMScheduler or "
            f"DPMSolverMultistepScheduler, not {type(self.scheduler).__name__}"
        )

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
        sigma, scale = self.noise_level(0, self.scheduler.timesteps[0])
        state = latents.to(device) * (sigma / scale).to(device)  # x = sigma_max * noise, as aediff starts
        for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            self.scheduler.scale_model_input(state, t)  # sets the step index; the denoiser takes x unscaled
            sigma, scale = self.noise_level(i, t)
            x = state * scale.to(device=device, dtype=state.dtype)
            denoised = self.denoiser(x, sigma.to(device=device, dtype=x.dtype), class_labels=class_labels)
            state = self.scheduler.step(denoised, t, state, return_dict=False)[0]
        images = (self.denoiser.to_images(state) + 1) / 2  # every scheduler ends at sigma 0, where scale is 1
        if output_type == "pt":
            out = images
        else:
            out = images.clamp(0, 1).permute(0, 2, 3, 1).cpu().float().numpy()
            if output_type == "pil":
                out = self.numpy_to_pil(out)
        return ImagePipelineOutput(images=out) if return_dict else (out,)
