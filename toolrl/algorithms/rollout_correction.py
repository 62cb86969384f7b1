"""The rollout engine's log-probs against the trainer's: how far apart, and corrections for it.

A rollout engine (vLLM: other kernels, precisions, batch shapes) never computes exactly the
trainer's probabilities. With δ_t = log π_old(y_t) − log π_rollout(y_t) on the response tokens
(π_old: the trainer's log-probs before the step's updates, π_rollout: the engine's while it
sampled) and ρ_t = exp(δ_t):

Measurement (`MismatchTally`, every step, for every engine; verl's names where it has them):
- `rollout_corr/logprob_abs_diff_mean`, `.../logprob_abs_diff_max`: mean and max of |δ_t|;
- `training/rollout_probs_diff_mean`, `.../max`: of |π_old(y_t) − π_rollout(y_t)| (verl's);
- `rollout_corr/kl`: k1 = mean(−δ_t), and `rollout_corr/k3_kl`: k3 = mean(ρ_t − 1 − δ_t), both
  estimating KL(π_rollout ‖ π_old) from the engine's samples (Schulman's k1 / k3);
- `rollout_corr/ratio_outside_frac`: the fraction of tokens with ρ_t outside [0.5, 2].

Correction (`correct`, with `algorithm.rollout_correction`; Liu, Li et al. 2025, "When Speed
Kills Stability", and verl's rollout_corr_helper):
- importance weights, multiplying each token's policy loss (detached, never differentiated):
  `token` w_t = min(ρ_t, C) (truncated IS, TIS); `sequence` w_t = min(exp(Σ_s δ_s), C), the
  same on every token of a trajectory;
- rejection, by a mask: `token` drops tokens with ρ_t ∉ [lower, upper]; `sequence` drops
  trajectories with exp(Σ_s δ_s) ∉ [lower, upper]; `geometric` those with exp(mean_s δ_s) ∉
  [lower, upper]. Rejected tokens leave the loss and its denominator (the trainer trains on the
  returned mask, and every normaliser counts it).
Log-ratios are clamped to [−20, 20] before exp, as verl does, so weights stay finite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

LOG_RATIO_BOUND = 20.0
OUTSIDE = (0.5, 2.0)
"""The ratio band of `rollout_corr/ratio_outside_frac`."""


@dataclass
class MismatchTally:
    """Sums over the measured response tokens, added up over a step's forwards and ranks."""

    tokens: float = 0.0
    abs_diff: float = 0.0
    max_abs_diff: float = 0.0
    prob_diff: float = 0.0
    max_prob_diff: float = 0.0
    k1: float = 0.0
    k3: float = 0.0
    outside: float = 0.0

    def add(self, old_logprobs: Tensor, rollout_logprobs: Tensor, mask: Tensor) -> None:
        """Count the tokens where `mask` is set (old / rollout: [rows, tokens] log-probs)."""
        valid = mask != 0
        if not valid.any():
            return
        delta = (old_logprobs - rollout_logprobs)[valid].double()
        prob_diff = (old_logprobs.exp() - rollout_logprobs.exp())[valid].double().abs()
        ratio = delta.clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND).exp()
        self.tokens += float(valid.sum())
        self.abs_diff += float(delta.abs().sum())
        self.max_abs_diff = max(self.max_abs_diff, float(delta.abs().max()))
        self.prob_diff += float(prob_diff.sum())
        self.max_prob_diff = max(self.max_prob_diff, float(prob_diff.max()))
        self.k1 += float((-delta).sum())
        self.k3 += float((ratio - 1 - delta).sum())
        self.outside += float(((ratio < OUTSIDE[0]) | (ratio > OUTSIDE[1])).sum())

    def reduce(self, parallel) -> MismatchTally:
        """The tally over every rank of `parallel` (a DataParallel: sums by `all_sum`; each
        maximum through one slot per rank, so a sum is all it takes)."""
        world, rank = parallel.world_size, parallel.rank
        values = torch.zeros(6 + 2 * world, dtype=torch.float64)
        values[:6] = torch.tensor(
            [self.tokens, self.abs_diff, self.prob_diff, self.k1, self.k3, self.outside]
        )
        values[6 + rank], values[6 + world + rank] = self.max_abs_diff, self.max_prob_diff
        total = parallel.all_sum(values)
        return MismatchTally(
            tokens=float(total[0]),
            abs_diff=float(total[1]),
            max_abs_diff=float(total[6 : 6 + world].max()),
            prob_diff=float(total[2]),
            max_prob_diff=float(total[6 + world :].max()),
            k1=float(total[3]),
            k3=float(total[4]),
            outside=float(total[5]),
        )

    def metrics(self) -> dict[str, float]:
        n = max(self.tokens, 1.0)
        return {
            "rollout_corr/measured_tokens": self.tokens,
            "rollout_corr/logprob_abs_diff_mean": self.abs_diff / n,
            "rollout_corr/logprob_abs_diff_max": self.max_abs_diff,
            "training/rollout_probs_diff_mean": self.prob_diff / n,
            "training/rollout_probs_diff_max": self.max_prob_diff,
            "rollout_corr/kl": self.k1 / n,
            "rollout_corr/k3_kl": self.k3 / n,
            "rollout_corr/ratio_outside_frac": self.outside / n,
        }


def correct(
    old_logprobs: Tensor,
    rollout_logprobs: Tensor,
    mask: Tensor,
    *,
    rollout_is: str | None = None,
    rollout_is_threshold: float = 2.0,
    rollout_rs: str | None = None,
    rollout_rs_threshold: float | None = None,
    rollout_rs_threshold_lower: float | None = None,
) -> tuple[Tensor | None, Tensor, dict[str, float]]:
    """(importance weights or None, the mask without rejected tokens, counts) for [rows, tokens]
    log-probs; see the module docstring for the formulas. Weights are 0 outside the new mask.
    The counts add up over ranks; `correction_rates` turns their sum into the step's metrics."""
    valid = mask != 0
    delta = torch.where(valid, old_logprobs - rollout_logprobs, 0.0).double()
    token_log_ratio = delta.clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND)
    seq_log_ratio = delta.sum(-1).clamp(-LOG_RATIO_BOUND, LOG_RATIO_BOUND)
    lengths = valid.sum(-1)
    seq_mean = delta.sum(-1) / lengths.clamp(min=1)
    counts = {"tokens": float(valid.sum()), "seqs": float((lengths > 0).sum())}

    keep = valid
    if rollout_rs is not None:
        upper = rollout_is_threshold if rollout_rs_threshold is None else rollout_rs_threshold
        lower = 1 / upper if rollout_rs_threshold_lower is None else rollout_rs_threshold_lower
        low, high = math.log(max(lower, 1e-300)), math.log(upper)
        if rollout_rs == "token":
            inside = (token_log_ratio >= low) & (token_log_ratio <= high)
        else:
            statistic = seq_log_ratio if rollout_rs == "sequence" else seq_mean
            inside = ((statistic >= low) & (statistic <= high)).unsqueeze(-1).expand_as(valid)
        keep = valid & inside
        counts["rejected_tokens"] = float(valid.sum() - keep.sum())
        counts["rejected_seqs"] = float(((lengths > 0) & (keep.sum(-1) == 0)).sum())

    weights = None
    if rollout_is is not None:
        log_w = token_log_ratio if rollout_is == "token" else seq_log_ratio.unsqueeze(-1)
        raw = log_w.expand_as(delta).exp()
        weights = torch.where(keep, raw.clamp(max=rollout_is_threshold), 0.0)
        counts["kept_tokens"] = float(keep.sum())
        counts["is_weight_sum"] = float(weights.sum())
        counts["is_truncated_tokens"] = float((keep & (raw > rollout_is_threshold)).sum())
        weights = weights.to(old_logprobs.dtype)
    return weights, keep.to(mask.dtype), counts


def correction_rates(counts: dict[str, float]) -> dict[str, float]:
    """The step's correction metrics from `correct`'s counts (summed over ranks)."""
    out = {}
    if "rejected_tokens" in counts:
        out["rollout_corr/rejected_token_frac"] = counts["rejected_tokens"] / max(
            counts["tokens"], 1
        )
        out["rollout_corr/rejected_seq_frac"] = counts["rejected_seqs"] / max(counts["seqs"], 1)
    if "is_weight_sum" in counts:
        kept = max(counts["kept_tokens"], 1)
        out["rollout_corr/is_weight_mean"] = counts["is_weight_sum"] / kept
        out["rollout_corr/is_truncated_frac"] = counts["is_truncated_tokens"] / kept
    return out
