"""Sums and means over the tokens a mask selects (1 = counts, 0 = padding or tool output)."""

from __future__ import annotations

import torch
from torch import Tensor


def masked_sum(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Σ values·mask over `dim` (all elements when None).

    Positions outside the mask are replaced by 0 before multiplying, so a NaN or inf in padding
    (e.g. a log-prob of a pad token) cannot leak into the sum.
    """
    mask = mask.to(values.dtype)
    kept = torch.where(mask != 0, values * mask, torch.zeros((), dtype=values.dtype))
    return kept.sum() if dim is None else kept.sum(dim)


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Σ values·mask / Σ mask over `dim`; 0 (not NaN) where the mask selects nothing."""
    count = mask.to(values.dtype).sum() if dim is None else mask.to(values.dtype).sum(dim)
    return masked_sum(values, mask, dim) / torch.where(count > 0, count, torch.ones_like(count))
