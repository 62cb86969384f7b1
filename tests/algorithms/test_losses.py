"""Policy losses: hand-computed clips, properties, gradcheck, and a naive loop reference."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from toolrl.algorithms.losses import (
    POLICY_LOSSES,
    get_policy_loss,
    gspo_loss,
    ppo_clip_loss,
    reads_entropy,
)
from toolrl.algorithms.masked import masked_mean

F64 = torch.float64

# One row, ε_low 0.2, ε_high 0.28, c 10; per-token loss l = max(−A·r, −A·clip(r, 0.8, 1.28)),
# then min(l, −A·c) where A < 0. The last token is padding with a −inf log-prob.
#   r     A    l                               d l / d log π = d l / d r · r
#   1.0  +1    −1                              −1
#   1.5  +1    −1.28   ratio clipped high       0
#   0.5  +1    −0.5    (A > 0: no low clip)    −0.5
#   0.5  −1    max(0.5, 0.8) = 0.8  clipped low 0
#   2.0  −1    max(2, 1.28) = 2, < c            2
#   12   −1    max(12, 1.28) = 12 → c = 10      0   dual clip
# token-mean: (−1 − 1.28 − 0.5 + 0.8 + 2 + 10) / 6 = 10.02 / 6
RATIOS = [1.0, 1.5, 0.5, 0.5, 2.0, 12.0]
ADVANTAGES = [1.0, 1.0, 1.0, -1.0, -1.0, -1.0]


def hand_batch():
    log_probs = torch.tensor([[*map(math.log, RATIOS), -math.inf]], dtype=F64, requires_grad=True)
    return {
        "log_probs": log_probs,
        "old_log_probs": torch.zeros(1, 7, dtype=F64),
        "advantages": torch.tensor([[*ADVANTAGES, 5.0]], dtype=F64),
        "response_mask": torch.tensor([[1, 1, 1, 1, 1, 1, 0]], dtype=F64),
    }


def test_ppo_clip_hand_computed():
    batch = hand_batch()
    loss, metrics = ppo_clip_loss(**batch)
    assert loss.item() == pytest.approx(10.02 / 6, abs=1e-12)
    loss.backward()
    expected_grad = torch.tensor([[-1, 0, -0.5, 0, 2, 0, 0]], dtype=F64) / 6
    torch.testing.assert_close(batch["log_probs"].grad, expected_grad, rtol=0, atol=1e-12)
    assert metrics["pg_clipfrac"].item() == pytest.approx(2 / 6)  # tokens 2 and 4
    assert metrics["pg_clipfrac_ratio_high"].item() == pytest.approx(1 / 6)
    assert metrics["pg_clipfrac_ratio_low"].item() == pytest.approx(1 / 6)
    assert metrics["pg_clipfrac_lower"].item() == pytest.approx(1 / 6)  # the dual clip
    # ppo_kl = mean(−log r) = −(0 + ln 1.5 + 2 ln 0.5 + ln 2 + ln 12) / 6 = −ln(1.5·12 / 2) / 6
    assert metrics["ppo_kl"].item() == pytest.approx(-math.log(9) / 6)
    assert metrics["ratio_mean"].item() == pytest.approx(17.5 / 6)
    assert metrics["ratio_max"].item() == pytest.approx(12)
    assert metrics["ratio_min"].item() == pytest.approx(0.5)
    assert all(not value.requires_grad for value in metrics.values())


def test_ppo_clip_without_dual_clip():
    # c = None: the last token's loss is −A·r = 12, so the sum is 12.02 and its gradient is 12.
    batch = hand_batch()
    loss, metrics = ppo_clip_loss(**batch, clip_ratio_c=None)
    assert loss.item() == pytest.approx(12.02 / 6, abs=1e-12)
    loss.backward()
    assert batch["log_probs"].grad[0, 5].item() == pytest.approx(12 / 6)
    assert metrics["pg_clipfrac_lower"].item() == 0


def test_ppo_clip_log_ratio_is_clamped():
    # log r = 30 is clamped to 20: r = e^20 with A > 0 is clipped at 1.28; with A < 0 the dual
    # clip holds it at c; the clamp also zeroes the gradient.
    log_probs = torch.tensor([[30.0, 30.0]], dtype=F64, requires_grad=True)
    zeros = torch.zeros(1, 2, dtype=F64)
    args = (log_probs, zeros, torch.tensor([[1.0, -1.0]], dtype=F64), torch.ones(1, 2))
    loss, metrics = ppo_clip_loss(*args)
    assert loss.item() == pytest.approx((-1.28 + 10) / 2)
    assert metrics["ratio_max"].item() == pytest.approx(math.exp(20))
    loss.backward()
    assert torch.equal(log_probs.grad, torch.zeros(1, 2, dtype=F64))


# GSPO, ε_low 3e-4, ε_high 4e-4, seq-mean-token-mean over three sequences:
#   a: A = +1, log r = [2e-4, 0]          mean 1e-4,   s = e^1e-4 inside the clip → l = −s
#   b: A = +2, log r = [3e-3, 1e-3, −1e-3] mean 1e-3,  s > 1.0004 → l = −2·1.0004 = −2.0008
#   c: A = −1, log r = [−2e-3, (masked)]   mean −2e-3, s < 0.9997 → l = max(s, 0.9997) = 0.9997
# loss = (−e^1e-4 − 2.0008 + 0.9997) / 3; only a's tokens get a gradient: −s / (2 tokens · 3 seqs)
def test_gspo_hand_computed():
    old = torch.full((3, 3), -1.0, dtype=F64)
    log_ratio = torch.tensor([[2e-4, 0, 0], [3e-3, 1e-3, -1e-3], [-2e-3, 7.0, 0]], dtype=F64)
    log_probs = (old + log_ratio).requires_grad_()
    advantages = torch.tensor([1.0, 2.0, -1.0], dtype=F64)[:, None].expand(3, 3)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0]], dtype=F64)
    loss, metrics = gspo_loss(log_probs, old, advantages, mask)
    s_a = math.exp(1e-4)
    assert loss.item() == pytest.approx((-s_a - 2.0008 + 0.9997) / 3, abs=1e-12)
    loss.backward()
    expected = torch.zeros(3, 3, dtype=F64)
    expected[0, :2] = -s_a / 6
    torch.testing.assert_close(log_probs.grad, expected, rtol=0, atol=1e-12)
    # token-weighted: b's 3 tokens clipped high, c's 1 token clipped low, out of 6 tokens
    assert metrics["pg_clipfrac_ratio_high"].item() == pytest.approx(3 / 6)
    assert metrics["pg_clipfrac_ratio_low"].item() == pytest.approx(1 / 6)
    assert metrics["pg_clipfrac_lower"].item() == 0


@pytest.mark.parametrize("loss_fn", [ppo_clip_loss, gspo_loss])
@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_all_masked_batch_gives_zero_not_nan(loss_fn, mode):
    log_probs = torch.randn(2, 3, dtype=F64, requires_grad=True)
    loss, metrics = loss_fn(
        log_probs,
        torch.randn(2, 3, dtype=F64),
        torch.randn(2, 3, dtype=F64),
        torch.zeros(2, 3),
        loss_agg_mode=mode,
    )
    loss.backward()
    assert loss.item() == 0
    assert torch.equal(log_probs.grad, torch.zeros(2, 3, dtype=F64))
    assert all(torch.isfinite(value) for value in metrics.values())


@pytest.mark.parametrize("loss_fn", [ppo_clip_loss, gspo_loss])
def test_nan_log_probs_in_padding_do_not_leak(loss_fn):
    # Fully masked attention rows can give NaN logits, hence NaN log-probs, at padded positions.
    log_probs = torch.tensor(
        [[-1.0, math.nan], [math.nan, math.nan]], dtype=F64, requires_grad=True
    )
    old = torch.tensor([[-1.1, math.nan], [-2.0, math.nan]], dtype=F64)
    mask = torch.tensor([[1, 0], [0, 0]], dtype=F64)
    loss, metrics = loss_fn(log_probs, old, torch.ones(2, 2, dtype=F64), mask)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(log_probs.grad).all()
    assert log_probs.grad[0, 1] == 0 and (log_probs.grad[1] == 0).all()
    assert all(torch.isfinite(value) for value in metrics.values())


def test_dual_clip_constant_must_exceed_one():
    with pytest.raises(ValueError, match="clip_ratio_c must be > 1"):
        ppo_clip_loss(*hand_batch().values(), clip_ratio_c=1.0)


def test_unknown_loss_lists_choices():
    with pytest.raises(
        ValueError, match=r"valid: \['aepo', 'cispo', 'gspo', 'ppo_clip'\]. Did you mean 'ppo_clip'"
    ):
        get_policy_loss("ppo_clp")


# --- properties ------------------------------------------------------------------------------

dims = {
    "seed": st.integers(0, 10_000),
    "batch_size": st.integers(1, 6),
    "length": st.integers(1, 8),
}


@settings(max_examples=40, deadline=None)
@given(**dims, name=st.sampled_from(sorted(POLICY_LOSSES)))
def test_ratio_one_gives_minus_mean_advantage(make_batch, seed, batch_size, length, name):
    batch = make_batch(seed, batch_size, length)
    batch["log_probs"] = batch["old_log_probs"].clone()
    batch["advantages"] = torch.randn(batch_size, length, dtype=F64)  # any per-token advantage
    loss_fn = POLICY_LOSSES[name]
    if reads_entropy(loss_fn):  # a constant entropy: AEPO's standardised entropy is 0
        batch["entropy"] = torch.zeros(batch_size, length, dtype=F64)
    loss, metrics = loss_fn(**batch, loss_agg_mode="token-mean")
    expected = -masked_mean(batch["advantages"], batch["response_mask"])
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-12)
    assert metrics["pg_clipfrac"].item() == 0


@settings(max_examples=40, deadline=None)
@given(
    log_ratios=st.lists(st.floats(-25, 25), min_size=1, max_size=12),
    advantages=st.lists(st.floats(-4, -1e-3), min_size=12, max_size=12),
    clip_ratio_c=st.floats(1.5, 20),
)
def test_dual_clip_bounds_negative_advantage_loss(log_ratios, advantages, clip_ratio_c):
    # Each token alone ([1, 1] batch, token-mean = that token's loss): loss ≤ c·|A| for A < 0.
    for log_ratio, advantage in zip(log_ratios, advantages, strict=False):
        loss, _ = ppo_clip_loss(
            torch.tensor([[log_ratio]], dtype=F64),
            torch.zeros(1, 1, dtype=F64),
            torch.tensor([[advantage]], dtype=F64),
            torch.ones(1, 1),
            clip_ratio_c=clip_ratio_c,
        )
        assert loss.item() <= clip_ratio_c * abs(advantage) * (1 + 1e-12)
        unbounded, _ = ppo_clip_loss(
            torch.tensor([[log_ratio]], dtype=F64),
            torch.zeros(1, 1, dtype=F64),
            torch.tensor([[advantage]], dtype=F64),
            torch.ones(1, 1),
            clip_ratio_c=None,
        )
        # The bound is exactly where the unclipped loss −A·r passes c·|A|.
        assert loss.item() == pytest.approx(min(unbounded.item(), clip_ratio_c * abs(advantage)))


def away_from_kinks(log_ratio: torch.Tensor, kinks: list[float], margin: float = 1e-3):
    """Move log-ratios that sit within `margin` of a kink (where the loss is not differentiable)."""
    for kink in kinks:
        near = (log_ratio - kink).abs() < margin
        log_ratio = torch.where(near, log_ratio + 3 * margin, log_ratio)
    return log_ratio


@settings(max_examples=15, deadline=None)
@given(**dims, mode=st.sampled_from(["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"]))
def test_ppo_clip_gradcheck(make_batch, seed, batch_size, length, mode):
    batch = make_batch(seed, batch_size, length, log_ratio_scale=1.5)
    kinks = [math.log(0.8), math.log(1.28), math.log(10.0)]
    log_ratio = away_from_kinks(batch["log_probs"] - batch["old_log_probs"], kinks)
    batch["log_probs"] = (batch["old_log_probs"] + log_ratio).requires_grad_()

    def loss_of(log_probs):
        return ppo_clip_loss(
            log_probs,
            batch["old_log_probs"],
            batch["advantages"],
            batch["response_mask"],
            loss_agg_mode=mode,
        )[0]

    assert torch.autograd.gradcheck(loss_of, (batch["log_probs"],), eps=1e-6, atol=1e-7)


@settings(max_examples=15, deadline=None)
@given(**dims, mode=st.sampled_from(["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"]))
def test_gspo_gradcheck(make_batch, seed, batch_size, length, mode):
    # The stop-gradient token form must have the gradient of the sequence ratio itself.
    batch = make_batch(seed, batch_size, length, log_ratio_scale=1e-3)
    log_probs = batch["log_probs"].requires_grad_()
    seq_log_ratio = masked_mean(log_probs - batch["old_log_probs"], batch["response_mask"], dim=-1)
    kinks = torch.tensor([math.log(1 - 3e-4), math.log(1 + 4e-4)], dtype=F64)
    if (seq_log_ratio[:, None] - kinks).abs().min() < 1e-5:
        return  # a sequence sits on a clip kink

    def loss_of(log_probs):
        return gspo_loss(
            log_probs,
            batch["old_log_probs"],
            batch["advantages"],
            batch["response_mask"],
            loss_agg_mode=mode,
        )[0]

    assert torch.autograd.gradcheck(loss_of, (log_probs,), eps=1e-7, atol=1e-6)


# --- an independent reference: the published formulas, one token at a time ----------------------


def reference_ppo_clip_token_mean(log_probs, old_log_probs, advantages, mask, eps_low, eps_high, c):
    """Dual-clip PPO objective per token, J_t = min(r A, clip(r) A), and max(J_t, c A) for A < 0
    (Ye et al. 2020); loss = −Σ J_t / N over the N masked-in tokens. Plain Python loops."""
    total, count = 0.0, 0
    for i in range(log_probs.shape[0]):
        for t in range(log_probs.shape[1]):
            if mask[i, t] == 0:
                continue
            log_ratio = torch.clamp(log_probs[i, t] - old_log_probs[i, t], -20.0, 20.0)
            ratio, adv = torch.exp(log_ratio), advantages[i, t]
            objective = min(ratio * adv, min(max(ratio, 1 - eps_low), 1 + eps_high) * adv)
            if adv < 0:
                objective = max(objective, c * adv)
            total, count = total - objective, count + 1
    return total / max(count, 1)


def reference_gspo_seq_mean(log_probs, old_log_probs, advantages, mask, eps_low, eps_high):
    """GSPO as published: J_i = min(s_i A_i, clip(s_i) A_i), s_i = exp(mean_t log r_it), with the
    true gradient of s_i (no stop-gradient trick); loss = −mean over sequences with tokens."""
    total, count = 0.0, 0
    for i in range(log_probs.shape[0]):
        tokens = [t for t in range(log_probs.shape[1]) if mask[i, t] != 0]
        if not tokens:
            continue
        s = torch.exp(sum(log_probs[i, t] - old_log_probs[i, t] for t in tokens) / len(tokens))
        adv = advantages[i, tokens[0]]
        total = total - min(s * adv, min(max(s, 1 - eps_low), 1 + eps_high) * adv)
        count += 1
    return total / max(count, 1)


def gradient(loss, leaf: torch.Tensor) -> torch.Tensor:
    """d loss / d leaf; zero when no token kept a path to the leaf (all clipped or masked)."""
    if torch.is_tensor(loss) and loss.requires_grad:
        loss.backward()
    return torch.zeros_like(leaf) if leaf.grad is None else leaf.grad


@settings(max_examples=25, deadline=None)
@given(**dims, scale=st.sampled_from([0.05, 0.5, 3.0, 15.0]))
def test_ppo_clip_matches_loop_reference(make_batch, seed, batch_size, length, scale):
    batch = make_batch(seed, batch_size, length, log_ratio_scale=scale)
    batch["advantages"] = torch.randn(batch_size, length, dtype=F64)  # per-token advantages
    rest = (batch["old_log_probs"], batch["advantages"], batch["response_mask"])
    ours_input = batch["log_probs"].clone().requires_grad_()
    ref_input = batch["log_probs"].clone().requires_grad_()
    ours, _ = ppo_clip_loss(
        ours_input,
        *rest,
        clip_ratio_low=0.2,
        clip_ratio_high=0.28,
        clip_ratio_c=3.0,
    )
    reference = reference_ppo_clip_token_mean(ref_input, *rest, 0.2, 0.28, 3.0)
    torch.testing.assert_close(ours, torch.as_tensor(reference, dtype=F64), rtol=0, atol=1e-6)
    ours.backward()
    torch.testing.assert_close(ours_input.grad, gradient(reference, ref_input), rtol=0, atol=1e-6)


@settings(max_examples=25, deadline=None)
@given(**dims)
def test_gspo_matches_loop_reference(make_batch, seed, batch_size, length):
    batch = make_batch(seed, batch_size, length, log_ratio_scale=1e-3)
    rest = (batch["old_log_probs"], batch["advantages"], batch["response_mask"])
    ours_input = batch["log_probs"].clone().requires_grad_()
    ref_input = batch["log_probs"].clone().requires_grad_()
    ours, _ = gspo_loss(ours_input, *rest)
    reference = reference_gspo_seq_mean(ref_input, *rest, 3e-4, 4e-4)
    torch.testing.assert_close(ours, torch.as_tensor(reference, dtype=F64), rtol=0, atol=1e-6)
    ours.backward()
    torch.testing.assert_close(ours_input.grad, gradient(reference, ref_input), rtol=0, atol=1e-6)
