"""How a vector quantiser uses its codebook, from how often each code was picked.

``counts`` [K] holds, for each of the K codes, how many latent vectors were assigned to it (a batch's, or a
data set's summed over batches). Two numbers summarise it:

- usage: the share of the K codes picked at least once, in [0, 1] (a collapsed codebook: near 1 / K);
- perplexity: exp of the entropy of the code frequencies p_k = counts_k / sum(counts), in [1, K]: the number of
  equally used codes that would have the same entropy (the diagnostic of van den Oord et al. 2017's successors,
  e.g. Razavi et al. 2019; Dhariwal et al. 2020).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["codebook_perplexity", "codebook_usage"]


def codebook_usage(counts: Tensor) -> Tensor:
    """Share of the codes with a count above zero, a 0-d float tensor in [0, 1]; counts [K] (any number type)."""
    return (counts > 0).float().mean()


def codebook_perplexity(counts: Tensor) -> Tensor:
    """exp(-sum_k p_k log p_k) with p_k = counts_k / sum(counts), a 0-d float tensor in [1, K]; 1 with no counts
    (nothing picked: no spread)."""
    total = counts.sum().clamp_min(1)
    p = counts.double() / total
    # 0 log 0 = 0: xlogy gives it without a NaN
    return torch.exp(-torch.special.xlogy(p, p).sum()).float()
