"""Random policy-loss batches for the algorithm tests, built from a seed so hypothesis can shrink."""

from __future__ import annotations

import pytest
import torch


def random_batch(
    seed: int,
    batch_size: int,
    length: int,
    *,
    log_ratio_scale: float = 0.5,
    masked_row_prob: float = 0.2,
    dtype: torch.dtype = torch.float64,
) -> dict[str, torch.Tensor]:
    """log_probs, old_log_probs, per-sequence advantages and a response mask with ragged rows.

    Rows are right-padded to random lengths; some rows are fully masked (e.g. a trajectory the
    trainer dropped), and some tokens inside a row are masked (tool output).
    """
    g = torch.Generator().manual_seed(seed)
    old = -torch.rand(batch_size, length, generator=g, dtype=dtype) * 4 - 0.01
    log_ratio = torch.randn(batch_size, length, generator=g, dtype=dtype) * log_ratio_scale
    advantages = torch.randn(batch_size, 1, generator=g, dtype=dtype).expand(-1, length)
    lengths = torch.randint(1, length + 1, (batch_size,), generator=g)
    mask = (torch.arange(length) < lengths[:, None]).to(dtype)
    mask = mask * (torch.rand(batch_size, length, generator=g) > 0.15).to(dtype)  # tool output
    mask[torch.rand(batch_size, generator=g) < masked_row_prob] = 0
    return {
        "log_probs": old + log_ratio,
        "old_log_probs": old,
        "advantages": advantages.contiguous(),
        "response_mask": mask,
    }


@pytest.fixture(scope="session")
def make_batch():
    return random_batch
