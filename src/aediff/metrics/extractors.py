"""Feature extractors for the feature-space metrics (``distances.py``): ``extract_features`` runs any
``images -> [N, D]`` network over a set in batches, and ``inception_extractor`` loads Inception-v3's pool
features through torch-fidelity (the published FID/KID convention) when its weights are on disk."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from aediff.errors import ConfigError

__all__ = [
    "INCEPTION_WEIGHTS_ENV",
    "INCEPTION_WEIGHTS_FILENAME",
    "default_inception_weights_path",
    "extract_features",
    "inception_extractor",
]


def _module_device(module: torch.nn.Module) -> torch.device | None:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return None


def extract_features(
    extractor: Callable[[Tensor], Tensor],
    images: Tensor,
    batch_size: int = 256,
) -> Tensor:
    """Run ``extractor`` over ``images`` in batches without gradients.

    Args:
        extractor: maps an image batch ``[B, C, H, W]`` in ``[-1, 1]`` to features ``[B, D]`` (outputs
            with more dimensions are flattened to ``[B, -1]``). If it is an ``nn.Module``, each batch is
            moved to the device of its parameters and the module is put in eval mode for the call (its
            previous mode is restored afterwards); a plain callable gets batches on ``images.device`` and
            must move them itself (as :func:`inception_extractor`'s callable does).
        images: ``[N, C, H, W]`` floating point images in ``[-1, 1]``.
        batch_size: images per forward pass.

    Returns:
        ``[N, D]`` float32 features on the CPU.
    """
    if not isinstance(images, Tensor) or images.ndim != 4:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ConfigError(f"extract_features: expected images [N, C, H, W], got {shape}.")
    if images.shape[0] == 0:
        raise ConfigError("extract_features: no images given; pass at least one image.")
    if batch_size < 1:
        raise ConfigError(f"extract_features: batch_size must be >= 1, got {batch_size}; use 256.")
    device = None
    was_training = False
    if isinstance(extractor, torch.nn.Module):
        device = _module_device(extractor)
        was_training = extractor.training
        extractor.eval()
    chunks = []
    try:
        with torch.no_grad():
            for start in range(0, images.shape[0], batch_size):
                batch = images[start : start + batch_size]
                if device is not None:
                    batch = batch.to(device)
                out = extractor(batch)
                if not isinstance(out, Tensor) or out.shape[0] != batch.shape[0]:
                    raise ConfigError(
                        "extract_features: the extractor must return a tensor with one row per image, got "
                        f"{type(out).__name__} {tuple(getattr(out, 'shape', ()))} for a batch of "
                        f"{batch.shape[0]}."
                    )
                chunks.append(out.reshape(out.shape[0], -1).to("cpu", torch.float32))
    finally:
        if was_training:
            extractor.train()
    return torch.cat(chunks, dim=0)


# --- Inception-v3 through torch-fidelity --------------------------------------------------------------

#: File name torch-fidelity (>= 0.2) downloads its FID Inception-v3 weights to, under
#: ``torch.hub.get_dir()/checkpoints/`` (``load_state_dict_from_url`` of URL_INCEPTION_V3 in
#: ``torch_fidelity/feature_extractor_inceptionv3.py``).
INCEPTION_WEIGHTS_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
#: Environment variable that may point at the weights file explicitly (e.g. copied from another machine).
INCEPTION_WEIGHTS_ENV = "AEDIFF_INCEPTION_WEIGHTS"


def default_inception_weights_path() -> Path:
    """Where torch-fidelity caches its Inception weights: ``$TORCH_HOME/hub/checkpoints/<file>``.

    ``torch.hub.get_dir()`` honours ``torch.hub.set_dir``, ``$TORCH_HOME`` and ``$XDG_CACHE_HOME``
    (default ``~/.cache/torch/hub``).
    """
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILENAME


class _InceptionFeatures:
    """Callable: images ``[N, 1|3, H, W]`` in ``[-1, 1]`` -> Inception-v3 pool features ``[N, 2048]``."""

    name = "inception-v3-compat"

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.model = model
        self.device = device

    def __call__(self, images: Tensor) -> Tensor:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ConfigError(f"inception_extractor: expected images [N, 1 or 3, H, W], got {tuple(images.shape)}.")
        # torch-fidelity expects uint8 RGB of any size; it resizes to 299x299 itself with TF1-compatible
        # bilinear interpolation and normalises (x - 128) / 128 internally.
        pixels = ((images.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
        if pixels.shape[1] == 1:
            pixels = pixels.repeat(1, 3, 1, 1)
        with torch.no_grad():
            (feats,) = self.model(pixels.to(self.device))
        return feats.float()


def inception_extractor(
    device: str | torch.device | None = None,
    weights_path: str | os.PathLike[str] | None = None,
) -> Callable[[Tensor], Tensor]:
    """Inception-v3 pool (2048-d) features as used for published FID/KID, via torch-fidelity.

    Never downloads anything. The weights file is looked up at ``weights_path``, else
    ``$AEDIFF_INCEPTION_WEIGHTS``, else torch-fidelity's own cache
    (:func:`default_inception_weights_path`).

    Args:
        device: where to run the network (default: CUDA if available, else CPU).
        weights_path: explicit path to ``weights-inception-2015-12-05-6726825d.pth``.

    Returns:
        A callable mapping images ``[N, 1|3, H, W]`` in ``[-1, 1]`` (any size; grey images are repeated
        to 3 channels, pixels are quantised to uint8 and torch-fidelity resizes to 299x299) to float32
        features ``[N, 2048]`` on ``device``; its ``name`` attribute is ``"inception-v3-compat"``.
        Use it with :func:`extract_features`.

    Raises:
        ConfigError: torch-fidelity is not installed or the weights file is not on disk.
    """
    if weights_path is not None:
        path = Path(weights_path).expanduser()
    elif os.environ.get(INCEPTION_WEIGHTS_ENV):
        path = Path(os.environ[INCEPTION_WEIGHTS_ENV]).expanduser()
    else:
        path = default_inception_weights_path()
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError:
        missing = "torch-fidelity is not installed"
    else:
        missing = "" if path.is_file() else f"the Inception-v3 weights are not on disk (looked for {path})"
    if missing:
        raise ConfigError(
            f"Inception features are unavailable: {missing}. FID/KID are computed with the dataset "
            "classifier's features instead (train it with `aediff train classifier`); those numbers are "
            "not comparable with published Inception FIDs. To use Inception, on a machine with internet run "
            "`pip install aediff[inception]` and then once "
            '`python -c "from torch_fidelity.feature_extractor_inceptionv3 import '
            "FeatureExtractorInceptionV3 as F; F('inception-v3-compat', ['2048'])\"` to download "
            f"{INCEPTION_WEIGHTS_FILENAME} into {default_inception_weights_path().parent}; or copy that file "
            f"to this machine and point ${INCEPTION_WEIGHTS_ENV} at it."
        )
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    model = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    model = model.to(device).eval()
    return _InceptionFeatures(model, device)
