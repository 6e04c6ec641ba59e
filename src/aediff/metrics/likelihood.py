"""Likelihood bookkeeping: nats to bits/dim, the dequantisation offset, log-mean-exp.

Negative log-likelihoods (NLLs) for images are reported in bits per dimension (bits/dim), the NLL in
bits divided by the number of dimensions ``D = C * H * W`` (Theis, van den Oord & Bethge, "A note on the
evaluation of generative models", ICLR 2016; van den Oord et al., "Pixel Recurrent Neural Networks",
ICML 2016). Continuous models (VAEs, diffusion models) of dequantised data give an upper bound on the
discrete bits/dim once the change of variables and bin width are accounted for, see
:func:`continuous_nll_to_discrete_bpd`.
"""

from __future__ import annotations

import math
from typing import TypeVar

import torch
from torch import Tensor

from aediff.errors import ConfigError

__all__ = [
    "bits_per_dim",
    "continuous_nll_to_discrete_bpd",
    "dequantization_offset_bits",
    "logmeanexp",
]

NLL = TypeVar("NLL", Tensor, float)

_LN2 = math.log(2.0)


def _check_dims(num_dims: int, fn: str) -> None:
    if int(num_dims) != num_dims or num_dims < 1:
        raise ConfigError(f"{fn}: num_dims must be a positive integer (C * H * W), got {num_dims}.")


def bits_per_dim(nll_nats: NLL, num_dims: int) -> NLL:
    """Convert an NLL in nats per example to bits per dimension: ``nll / (num_dims * ln 2)``.

    Args:
        nll_nats: NLL in nats per example, a float or a tensor of any shape (e.g. ``[N]``).
        num_dims: dimensions per example, ``C * H * W`` (784 for MNIST, 3072 for CIFAR-10).

    Returns:
        Same type and shape as ``nll_nats``, in bits/dim.
    """
    _check_dims(num_dims, "bits_per_dim")
    return nll_nats / (num_dims * _LN2)


def dequantization_offset_bits(num_bits: int = 8) -> float:
    """Bits/dim to add to a continuous NLL on ``[-1, 1]`` to bound the NLL of the ``num_bits``-bit data.

    Setting (Uria, Murray & Larochelle, "RNADE", NeurIPS 2013; Theis et al., ICLR 2016): pixel values
    are integers ``k in {0, ..., 2^b - 1}``, ``b = num_bits``. Uniform dequantisation gives
    ``y = (k + u) / 2^b`` in ``[0, 1]`` with ``u ~ U[0, 1)^D``, and aediff's images are
    ``x = 2 y - 1`` in ``[-1, 1]``. Let ``p(x)`` be the model's continuous density on ``[-1, 1]^D``.

    1. Change of variables: ``|dx/dy| = 2`` per dimension, so the density of ``y`` is
       ``q(y) = p(x) * 2^D``.
    2. Each bin ``[k / 2^b, (k + 1) / 2^b)^D`` in ``y`` has volume ``2^{-bD}``, so the discrete model
       ``P(k) = int_bin q(y) dy = 2^{-bD} E_u[q(y)]`` and, by Jensen,
       ``-log2 P(k) <= E_u[-log2 q(y)] + b D = E_u[-log2 p(x)] - D + b D``.
    3. Per dimension: ``bits/dim(k) <= E_u[-log2 p(x)] / D + (b - 1)``.

    So the offset is ``b - 1`` (7 bits for 8-bit data). Check: the uniform density on ``[-1, 1]^D``,
    ``p(x) = 2^{-D}``, gives ``1 + (b - 1) = b`` bits/dim, the cost of coding ``b``-bit pixels uniformly.

    The bound is exact only for this dequantisation (bin width ``2 / 2^b`` in ``x``); for data mapped as
    ``x = k / 127.5 - 1`` (bin width ``2 / 255``) the offset differs by ``log2(256 / 255) ~ 0.006`` bits.
    """
    if int(num_bits) != num_bits or num_bits < 1:
        raise ConfigError(f"dequantization_offset_bits: num_bits must be a positive integer, got {num_bits}.")
    return float(num_bits - 1)


def continuous_nll_to_discrete_bpd(nll_nats_per_image: NLL, num_dims: int, num_bits: int = 8) -> NLL:
    """Discrete bits/dim bound from a continuous NLL on ``[-1, 1]^D``.

    ``bpd = nll_nats_per_image / (D ln 2) + (num_bits - 1)``, i.e. ``-log2 p(x) / D + (b - 1)``; see
    :func:`dequantization_offset_bits` for the derivation (``x = 2 y - 1``, ``y = (k + u) / 2^b``, bin
    width ``2^{-b}`` in ``y``, Jacobian ``|dx/dy| = 2`` per dimension).

    Args:
        nll_nats_per_image: ``-log p(x)`` in nats per image for uniformly dequantised ``x`` in ``[-1, 1]``
            (a float or a tensor, e.g. ``[N]``); for VAEs/diffusion models a negative ELBO, giving a
            looser upper bound.
        num_dims: ``D = C * H * W``.
        num_bits: bit depth of the original data (8 for MNIST/CIFAR-10).

    Returns:
        Upper bound on the discrete NLL in bits/dim, same type and shape as the input.
    """
    return bits_per_dim(nll_nats_per_image, num_dims) + dequantization_offset_bits(num_bits)


def logmeanexp(x: Tensor, dim: int, keepdim: bool = False) -> Tensor:
    """Numerically stable ``log(mean(exp(x), dim))`` = ``logsumexp(x, dim) - log(x.shape[dim])``.

    Used for importance-weighted likelihood estimates (Burda, Grosse & Salakhutdinov, "Importance
    Weighted Autoencoders", ICLR 2016): ``log p(x) ~ logmeanexp(log w_k, dim=k)``.
    """
    if not isinstance(x, Tensor):
        x = torch.as_tensor(x, dtype=torch.get_default_dtype())
    count = x.shape[dim]
    if count == 0:
        raise ConfigError("logmeanexp: cannot average over an empty dimension.")
    return torch.logsumexp(x, dim=dim, keepdim=keepdim) - math.log(count)
