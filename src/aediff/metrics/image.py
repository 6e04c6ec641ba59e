"""Per-image reconstruction metrics: MSE, PSNR and SSIM.

All functions take two image batches ``x`` and ``y`` of identical shape ``[N, C, H, W]`` (floating point)
and return one value per image, a tensor of shape ``[N]``. Nothing is averaged over the batch, so callers
can report means, medians or per-class values.

Pixel ranges: ``mse`` and ``psnr`` take aediff images as they are, in ``[-1, 1]`` (``psnr``'s
``data_range = 2.0``). ``ssim`` follows Wang et al. (2004) and takes images in ``[0, 1]``
(``data_range = 1.0``): its luminance term is not shift-invariant, so SSIM of ``[-1, 1]`` images with
``data_range = 2`` is a different (non-standard) number. Convert aediff images with
``((x + 1) / 2).clamp(0, 1)`` before calling ``ssim``; it rejects images clearly outside ``[0, 1]``.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from aediff.errors import ConfigError

__all__ = ["mse", "psnr", "ssim"]

# Gaussian windows are truncated at this many standard deviations, as in scipy.ndimage / scikit-image
# (``truncate=3.5``) and torchmetrics: sigma=1.5 gives the 11-tap window of Wang et al. (2004).
_TRUNCATE = 3.5


def _check_pair(
    x: Tensor, y: Tensor, fn: str, convert: str = "x.float() / 127.5 - 1", pixel_range: str = "[-1, 1]"
) -> None:
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise ConfigError(f"{fn}: expected two torch tensors, got {type(x).__name__} and {type(y).__name__}.")
    if x.ndim != 4 or x.shape != y.shape:
        raise ConfigError(
            f"{fn}: expected two image batches of identical shape [N, C, H, W], got {tuple(x.shape)} and "
            f"{tuple(y.shape)}; add a batch/channel dimension with x[None] / x[:, None] or compare "
            "matching batches."
        )
    if x.shape[0] == 0:
        raise ConfigError(f"{fn}: the image batch is empty; pass at least one image.")
    if not (x.is_floating_point() and y.is_floating_point()):
        raise ConfigError(
            f"{fn}: expected floating point images in {pixel_range}, got {x.dtype} and {y.dtype}; "
            f"convert uint8 images with {convert}."
        )


def _work_dtype(x: Tensor, y: Tensor) -> torch.dtype:
    dtype = torch.promote_types(x.dtype, y.dtype)
    return torch.float64 if dtype == torch.float64 else torch.float32


def mse(x: Tensor, y: Tensor) -> Tensor:
    """Per-image mean squared error.

    Args:
        x, y: image batches ``[N, C, H, W]``, same shape, floating point (aediff range ``[-1, 1]``).

    Returns:
        ``[N]`` tensor, ``mean over (C, H, W) of (x - y)^2``; in ``[0, 4]`` for images in ``[-1, 1]``.
    """
    _check_pair(x, y, "mse")
    dtype = _work_dtype(x, y)
    return (x.to(dtype) - y.to(dtype)).pow(2).flatten(1).mean(dim=1)


def psnr(x: Tensor, y: Tensor, data_range: float = 2.0) -> Tensor:
    """Per-image peak signal-to-noise ratio in dB: ``10 * log10(data_range^2 / mse(x, y))``.

    Args:
        x, y: image batches ``[N, C, H, W]``, same shape.
        data_range: max - min of the pixel range; 2.0 for aediff's ``[-1, 1]`` images (255 for uint8-valued
            floats, 1.0 for ``[0, 1]``).

    Returns:
        ``[N]`` tensor of PSNR values in dB. **Identical images have mse 0 and give ``+inf``.** Average
        only the finite values (``v[torch.isfinite(v)].mean()``) or clamp (e.g. ``v.clamp(max=100)``)
        before reporting a batch mean.
    """
    if data_range <= 0:
        raise ConfigError(f"psnr: data_range must be positive, got {data_range}; use 2.0 for images in [-1, 1].")
    err = mse(x, y)
    return 10.0 * torch.log10(float(data_range) ** 2 / err)


def region_psnr(x: Tensor, y: Tensor, region: Tensor, data_range: float = 2.0) -> Tensor:
    """Per-image PSNR in dB over the pixels of ``region`` only (every channel of them): a restoration's score on
    what was missing, where the known pixels would flatter it.

    Args:
        x, y: image batches ``[N, C, H, W]``, same shape; region: ``[N or 1, 1, H, W]`` bool, at least one pixel
            per image; data_range: as ``psnr``.

    Returns:
        ``[N]`` tensor in dB (``+inf`` where x equals y on the region); all True gives ``psnr(x, y)``.
    """
    _check_pair(x, y, "region_psnr")
    if region.dtype != torch.bool or region.ndim != 4 or region.shape[1] != 1 or region.shape[2:] != x.shape[2:]:
        raise ConfigError(
            f"region_psnr: the region is [N or 1, 1, H, W] bool, got {tuple(region.shape)} {region.dtype}"
        )
    weight = region.expand(x.shape[0], x.shape[1], -1, -1).to(_work_dtype(x, y))
    counts = weight.flatten(1).sum(1)
    if bool((counts == 0).any()):
        raise ConfigError("region_psnr: an image's region is empty; score the images with pixels in the region")
    dtype = _work_dtype(x, y)
    err = ((x.to(dtype) - y.to(dtype)).pow(2) * weight).flatten(1).sum(1) / counts
    return 10.0 * torch.log10(float(data_range) ** 2 / err)


def _gaussian_1d(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    coords = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-0.5 * (coords / sigma) ** 2)
    return g / g.sum()


def _check_range(x: Tensor, y: Tensor, data_range: float) -> None:
    """Reject images clearly outside [0, data_range]: the old aediff convention passed [-1, 1] images."""
    low = min(float(x.min()), float(y.min()))
    high = max(float(x.max()), float(y.max()))
    if low < -0.01 * data_range or high > 1.01 * data_range:
        if data_range == 1.0:
            fix = "convert aediff images with (x + 1) / 2 and clamp"
        else:
            fix = f"convert aediff images with (x + 1) / 2 * {data_range:g} and clamp, or pass the right data_range"
        raise ConfigError(
            f"ssim expects images in [0, {data_range:g}] (Wang et al.); {fix} "
            f"(got pixel values in [{low:.3g}, {high:.3g}] with data_range={data_range:g})."
        )


def ssim(
    x: Tensor,
    y: Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
) -> Tensor:
    """Per-image structural similarity (SSIM) with a Gaussian window, in Wang et al.'s convention.

    Wang, Bovik, Sheikh & Simoncelli, "Image quality assessment: from error visibility to structural
    similarity", IEEE TIP 13(4), 2004. Images are in ``[0, L]`` with ``L = data_range`` (default ``[0, 1]``);
    constants ``K1 = 0.01``, ``K2 = 0.03``, ``C1 = (K1 L)^2``, ``C2 = (K2 L)^2``; local statistics are
    weighted by a normalised, separable Gaussian window of ``window_size`` taps and standard deviation
    ``sigma``, using population (not sample) covariances.

    Pixel range: aediff images live in ``[-1, 1]``; convert them with ``((x + 1) / 2).clamp(0, 1)``. The
    luminance term ``(2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1)`` is not shift-invariant, so passing
    ``[-1, 1]`` images with ``data_range = 2`` gives a different, non-standard value (lower wherever local
    means straddle 0). Images with a pixel below ``-0.01 L`` or above ``1.01 L`` are rejected (the slack
    admits round-off and unclamped decoder outputs, not a different convention).

    Border convention: the SSIM map is evaluated only at *valid* positions, where the whole window lies
    inside the image (an ``(H - w + 1) x (W - w + 1)`` map; no padding), and averaged over those positions
    and over channels, as in the authors' reference MATLAB code (``filter2(..., 'valid')``). This equals
    scikit-image's ``structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=1.0)`` (it filters with reflect padding, then crops
    ``(w - 1) / 2`` pixels from every border before averaging) to floating point precision. torchmetrics'
    ``structural_similarity_index_measure`` (>= 1.x, default Gaussian kernel, ``data_range=1.0``) computes
    the same map at the valid positions, but reflect-pads the images and averages over *all* ``H x W``
    positions, border included, so its scalar differs (by up to a few 0.1 on 28x28 noise images); cropping
    its ``return_full_image=True`` map by ``(w - 1) / 2`` on each side reproduces this function.
    Small images: if ``min(H, W)`` is smaller than ``window_size`` (e.g. 8x8 digits), the window is
    shrunk to the largest odd size ``w <= min(H, W)`` and sigma is reduced to ``min(sigma, r / 3.5)`` with
    ``r = (w - 1) / 2``, so the window keeps the 3.5-sigma truncation that scikit-image and torchmetrics
    derive their window size from (pass that sigma to them to reproduce the value; for 8x8 images:
    ``w = 7``, ``sigma = 3 / 3.5``, a 2x2 valid map). Images smaller than 3x3 are rejected.

    Args:
        x, y: image batches ``[N, C, H, W]``, same shape, floating point, pixels in ``[0, data_range]``.
        data_range: ``L``, the width of the pixel range; 1.0 for ``[0, 1]`` images (255 for uint8-valued
            floats in ``[0, 255]``).
        window_size: odd number of Gaussian taps (11 in Wang et al.).
        sigma: standard deviation of the Gaussian window in pixels (1.5 in Wang et al.).

    Returns:
        ``[N]`` tensor of mean SSIM per image, at most 1 (1 for identical images); typically in ``[0, 1]``,
        negative values are possible for anti-correlated images.
    """
    _check_pair(x, y, "ssim", convert="x.float() / 255", pixel_range="[0, 1]")
    if data_range <= 0:
        raise ConfigError(f"ssim: data_range must be positive, got {data_range}; use 1.0 for images in [0, 1].")
    if window_size < 1 or window_size % 2 == 0:
        raise ConfigError(f"ssim: window_size must be a positive odd integer, got {window_size}; use 11.")
    if sigma <= 0:
        raise ConfigError(f"ssim: sigma must be positive, got {sigma}; use 1.5.")
    _check_range(x, y, float(data_range))
    _, channels, height, width = x.shape
    side = min(height, width)
    if side < 3:
        raise ConfigError(
            f"ssim: images of size {height}x{width} are too small for a structural comparison (need at "
            "least 3x3); use mse/psnr for such images."
        )
    if window_size > side:
        window_size = side if side % 2 == 1 else side - 1
        sigma = min(sigma, ((window_size - 1) // 2) / _TRUNCATE)

    dtype = _work_dtype(x, y)
    x = x.to(dtype)
    y = y.to(dtype)
    g = _gaussian_1d(window_size, sigma, dtype, x.device)
    kernel_h = g.view(1, 1, window_size, 1).expand(channels, 1, window_size, 1)
    kernel_w = g.view(1, 1, 1, window_size).expand(channels, 1, 1, window_size)

    def blur(t: Tensor) -> Tensor:  # separable Gaussian, 'valid' positions only
        return F.conv2d(F.conv2d(t, kernel_h, groups=channels), kernel_w, groups=channels)

    n = x.shape[0]
    stats = blur(torch.cat([x, y, x * x, y * y, x * y], dim=0))
    mu_x, mu_y, e_xx, e_yy, e_xy = stats.split(n, dim=0)
    mu_xx, mu_yy, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    var_x = (e_xx - mu_xx).clamp_min(0.0)
    var_y = (e_yy - mu_yy).clamp_min(0.0)
    cov_xy = e_xy - mu_xy

    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    ssim_map = ((2 * mu_xy + c1) * (2 * cov_xy + c2)) / ((mu_xx + mu_yy + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(dim=1)
