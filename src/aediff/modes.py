"""The names of every mode a user chooses between, written once. Configs, samplers and the command line all
take their choices from here (this module imports nothing heavy, so `aediff -h` stays fast)."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

Family = Literal[
    "ae", "vae", "kl-ae", "dae", "vqvae", "diffusion", "latent-diffusion", "classifier"
]  # registered models
LatentKind = Literal["vector", "spatial"]  # an autoencoder's bottleneck shape
Likelihood = Literal["gaussian", "bernoulli"]  # a VAE's p(x|z)
SamplerName = Literal["ddpm", "ddim", "euler", "heun", "dpm++", "consistency"]
# diffusers' schedulers aediff drives in process (--sampler diffusers:NAME; aediff.diffusion.diffusers_schedulers)
DiffusersScheduler = Literal[
    "DDIMScheduler", "DDIMParallelScheduler", "DDPMScheduler", "DDPMParallelScheduler", "PNDMScheduler",
    "LCMScheduler", "TCDScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
    "HeunDiscreteScheduler", "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler", "LMSDiscreteScheduler",
    "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler", "DEISMultistepScheduler",
    "UniPCMultistepScheduler", "SASolverScheduler", "EDMEulerScheduler", "EDMDPMSolverMultistepScheduler",
]  # fmt: skip
DiffusersSampler = Literal["euler", "ddim", "dpm++"]  # the samplers a diffusers export reproduces with its scheduler
DistillMethodName = Literal["progressive", "consistency"]  # aediff distill --method
ScheduleKind = Literal["linear", "cosine", "sigmoid", "edm"]
# the denoiser's network: aediff's U-Net, diffusers' UNet2DModel or denoising-diffusion-pytorch's Unet
NetworkKind = Literal["aediff", "diffusers-unet2d", "ddpm-pytorch-unet"]
Parameterization = Literal["eps", "x0", "v", "edm"]


class LossWeighting(StrEnum):
    """The weight w(sigma) of the diffusion loss (aediff.diffusion.losses); the values are configs' JSON spelling."""

    UNIFORM = "uniform"  # uniform in the network's own target (eps, x0, v or edm's)
    MIN_SNR = "min_snr"  # min(SNR, gamma) on ||D - x0||^2 (Hang et al. 2023)


ConditionKind = Literal["none", "class", "text"]
# what a class-conditioned model draws when no class is asked: every class in turn, or the null class
SampledClasses = Literal["cycle", "null"]
TextEncoderKind = Literal["learned", "minilm", "clip"]
# "auto": bf16 where the hardware computes it natively (CPUs with AVX512-BF16 / AMX, CUDA GPUs that support it), else no
MixedPrecision = Literal["auto", "no", "fp16", "bf16"]
Split = Literal["train", "test", "all"]
TrackerName = Literal["wandb", "mlflow"]  # experiment trackers besides TensorBoard (training/trackers.py)
LogTarget = Literal["tensorboard", "wandb", "mlflow"]  # what --log-with names
