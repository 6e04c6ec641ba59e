"""The model family, one file each; importing this package registers every family."""

from aediff.models import ae, classifier, dae, diffusion, vae  # noqa: F401  (registration side effect)
from aediff.models.ae import AEConfig, Autoencoder
from aediff.models.classifier import Classifier, ClassifierConfig
from aediff.models.corruptions import Corruption
from aediff.models.dae import DAE, DAEConfig
from aediff.models.diffusion import DiffusionConfig, DiffusionModel
from aediff.models.registry import MODELS, build_model, model_class, register_model
from aediff.models.unet import UNet, UNetConfig
from aediff.models.vae import VAE, VAEConfig

__all__ = [
    "AEConfig", "Autoencoder", "Classifier", "ClassifierConfig", "Corruption", "DAE", "DAEConfig",
    "DiffusionConfig", "DiffusionModel",
    "MODELS", "UNet", "UNetConfig", "VAE", "VAEConfig", "build_model", "model_class", "register_model",
]
