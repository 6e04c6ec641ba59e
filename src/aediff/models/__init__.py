"""The model family, one file each; importing this package registers every family.

``interface.py`` declares what a model can do (``Capability``) and the methods each capability promises
(``Model``); callers dispatch on ``model.can(...)``, never on a family's name.
"""

from aediff.models import ae, classifier, dae, diffusion, kl_ae, latent_diffusion, vae, vqvae  # noqa: F401  (registration)
from aediff.models.ae import AEConfig, Autoencoder
from aediff.models.classifier import Classifier, ClassifierConfig
from aediff.models.corruptions import Corruption
from aediff.models.dae import DAE, DAEConfig
from aediff.models.diffusion import DiffusionConfig, DiffusionModel
from aediff.models.interface import Capability, CapabilityError, Condition, Model, model_device
from aediff.models.kl_ae import KLAEConfig, KLAutoencoder
from aediff.models.latent_diffusion import LatentDiffusionConfig, LatentDiffusionModel
from aediff.models.registry import MODELS, build_model, model_class, register_model
from aediff.models.text_encoder import TextEmbedding, TextEncoder, build_text_encoder
from aediff.models.unet import UNet, UNetConfig
from aediff.models.vae import VAE, VAEConfig
from aediff.models.vqvae import VQVAE, VectorQuantizer, VQVAEConfig

__all__ = [
    "AEConfig",
    "Autoencoder",
    "Capability",
    "CapabilityError",
    "Classifier",
    "ClassifierConfig",
    "Condition",
    "Corruption",
    "DAE",
    "DAEConfig",
    "DiffusionConfig",
    "DiffusionModel",
    "KLAEConfig",
    "KLAutoencoder",
    "LatentDiffusionConfig",
    "LatentDiffusionModel",
    "MODELS",
    "Model",
    "TextEmbedding",
    "TextEncoder",
    "UNet",
    "UNetConfig",
    "VAE",
    "VAEConfig",
    "VQVAE",
    "VQVAEConfig",
    "VectorQuantizer",
    "build_model",
    "build_text_encoder",
    "model_class",
    "model_device",
    "register_model",
]
