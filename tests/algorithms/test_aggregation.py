"""agg_loss: each mode by hand, and micro-batch accumulation equal to the full batch."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from toolrl.algorithms.losses import (
    LOSS_AGG_MODES,
    POLICY_LOSSES,
    agg_loss,
    num_valid_seqs,
    num_valid_tokens,
    reads_entropy,
)

# Row 0 keeps tokens 1, 2 (sum 3, mean 1.5); row 1 keeps token 4 (sum 4, mean 4); row 2 is fully
# masked and holds NaN / inf, which must not leak. N = 3 tokens, S = 2 sequences, T = 3.
LOSS_MAT = torch.tensor([[1.0, 2.0, math.inf], [4.0, 5.0, 6.0], [math.nan, 8.0, 9.0]])
MASK = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]])


@pytest.mark.parametrize(
    ("mode", "kwargs", "expected"),
    [
        ("token-mean", {}, (1 + 2 + 4) / 3),
        ("token-mean", {"global_num_tokens": 14}, 7 / 14),
        ("seq-mean-token-sum", {}, (3 + 4) / 2),
        ("seq-mean-token-sum", {"global_num_seqs": 7}, 7 / 7),
        ("seq-mean-token-mean", {}, (1.5 + 4) / 2),
        ("seq-mean-token-mean", {"global_num_seqs": torch.tensor(5)}, 5.5 / 5),
        ("seq-mean-token-sum-norm", {}, 7 / (2 * 3)),  # norm_length defaults to T = 3
        ("seq-mean-token-sum-norm", {"norm_length": 4}, 7 / (2 * 4)),
        ("seq-mean-token-sum-norm", {"norm_length": 4, "global_num_seqs": 7}, 7 / (7 * 4)),
    ],
)
def test_modes_hand_computed(mode, kwargs, expected):
    assert agg_loss(LOSS_MAT, MASK, mode, **kwargs).item() == pytest.approx(expected)


def test_normalisers_count_tokens_and_non_empty_rows():
    assert num_valid_tokens(MASK).item() == 3
    assert num_valid_seqs(MASK).item() == 2


@pytest.mark.parametrize("mode", sorted(LOSS_AGG_MODES))
def test_all_masked_is_zero_with_zero_gradient(mode):
    loss_mat = torch.randn(2, 3, requires_grad=True)
    loss = agg_loss(loss_mat, torch.zeros(2, 3), mode)
    loss.backward()
    assert loss.item() == 0
    assert torch.equal(loss_mat.grad, torch.zeros(2, 3))


def test_unknown_mode_lists_choices():
    with pytest.raises(ValueError, match=r"unknown loss_agg_mode 'seq-mean'; valid: .*token-mean"):
        agg_loss(LOSS_MAT, MASK, "seq-mean")


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    batch_size=st.integers(1, 8),
    length=st.integers(1, 6),
    num_micro=st.integers(1, 4),
    mode=st.sampled_from(sorted(LOSS_AGG_MODES)),
    name=st.sampled_from(sorted(POLICY_LOSSES)),
)
def test_micro_batches_sum_to_full_batch(
    make_batch, seed, batch_size, length, num_micro, mode, name
):
    """Accumulating micro-batch losses computed with the mini-batch's normalisers gives the
    full-batch loss and gradient exactly, whatever the split (rows shuffled, uneven sizes)."""
    scale = 1e-3 if name == "gspo" else 0.5  # GSPO's ratios live near 1
    batch = make_batch(seed, batch_size, length, log_ratio_scale=scale, masked_row_prob=0.3)
    loss_fn, mask = POLICY_LOSSES[name], batch["response_mask"]
    rest = (batch["old_log_probs"], batch["advantages"], mask)
    # A loss reading the policy's entropy gets one per token, split with the rows.
    entropy = torch.rand(
        batch_size, length, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    extra = (
        (lambda rows: {"entropy": entropy[rows]}) if reads_entropy(loss_fn) else (lambda rows: {})
    )

    full_input = batch["log_probs"].clone().requires_grad_()
    everything = torch.arange(batch_size)
    full, _ = loss_fn(full_input, *rest, loss_agg_mode=mode, norm_length=9, **extra(everything))
    full.backward()

    micro_input = batch["log_probs"].clone().requires_grad_()
    normalisers = {
        "global_num_tokens": num_valid_tokens(mask),
        "global_num_seqs": num_valid_seqs(mask),
    }
    rows = torch.randperm(batch_size, generator=torch.Generator().manual_seed(seed))
    total = 0.0
    for part in rows.tensor_split(num_micro):
        loss, _ = loss_fn(
            micro_input[part],
            *(value[part] for value in rest),
            loss_agg_mode=mode,
            norm_length=9,
            **normalisers,
            **extra(part),
        )
        loss.backward()
        total += loss.item()
    assert total == pytest.approx(full.item(), abs=1e-10)
    torch.testing.assert_close(micro_input.grad, full_input.grad, rtol=0, atol=1e-10)
