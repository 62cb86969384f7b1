"""Outcome advantage estimators: one score per trajectory → one advantage per trajectory.

Every estimator takes `scores: [B]` and `group_ids: [B]` (trajectories sampled from the same
prompt share an id; ids need not be contiguous or sorted) and returns advantages `[B]`. They are
registered in `ADVANTAGE_ESTIMATORS`; `broadcast_to_tokens` spreads them over the response.

One rule holds for every estimator: **a group whose scores are all equal gets exactly 0**, and a
singleton group is such a group. Nothing in it can be compared, so it carries no signal:

- Singletons: there is no baseline. verl's loop implementations use mean 0 / std 1 instead, so a
  singleton's advantage is its raw score (its vectorised RLOO gives 0). We choose 0, so a group
  shrunk to one member (e.g. after dropping a sandbox failure) neither pushes nor pulls the policy.
- Equal scores: the group mean is sum/count, which rounding can leave a hair away from the common
  score (0.1·3/3 ≠ 0.1); that error is not divided by a near-zero std and turned into a signal.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

import torch
from torch import Tensor

AdvantageEstimator = Callable[..., Tensor]


def _group_index(scores: Tensor, group_ids: Tensor) -> tuple[Tensor, int]:
    """(dense group number 0..G−1 of each trajectory, G)."""
    if scores.dim() != 1 or group_ids.shape != scores.shape:
        raise ValueError(
            f"scores and group_ids must be 1-D and of the same length; got shapes "
            f"{tuple(scores.shape)} and {tuple(group_ids.shape)}"
        )
    if not torch.isfinite(scores).all():
        bad = torch.nonzero(~torch.isfinite(scores)).flatten().tolist()
        raise ValueError(
            f"scores must be finite; rows {bad[:10]} are NaN or inf (check the reward)"
        )
    unique, index = torch.unique(group_ids, return_inverse=True)
    return index, unique.numel()


def _group_sum(values: Tensor, index: Tensor, num_groups: int) -> Tensor:
    """Σ of `values` over each trajectory's group, broadcast back to shape [B]."""
    return values.new_zeros(num_groups).index_add(0, index, values)[index]


def _comparable(scores: Tensor, index: Tensor, num_groups: int) -> Tensor:
    """[B] bool: the trajectory's group has two different scores (so ≥ 2 members)."""
    empty = scores.new_zeros(num_groups)
    highest = empty.scatter_reduce(0, index, scores, reduce="amax", include_self=False)[index]
    lowest = empty.scatter_reduce(0, index, scores, reduce="amin", include_self=False)[index]
    return highest > lowest


def _as_float(scores: Tensor) -> Tensor:
    return scores if scores.is_floating_point() else scores.to(torch.get_default_dtype())


def grpo_advantages(scores: Tensor, group_ids: Tensor, *, adv_eps: float = 1e-6) -> Tensor:
    """GRPO (Shao et al. 2024, arXiv 2402.03300): A_i = (r_i − mean_g) / (std_g + ε), ε = `adv_eps`.

    std_g is the unbiased (Bessel-corrected, n − 1) standard deviation of the group's scores, as
    `torch.std` and verl compute it. Singleton and all-equal groups get 0 (module docstring).
    """
    scores = _as_float(scores)
    index, num_groups = _group_index(scores, group_ids)
    count = _group_sum(torch.ones_like(scores), index, num_groups)
    deviation = scores - _group_sum(scores, index, num_groups) / count
    # Two passes (mean, then squared deviations) as torch.std does: no sum-of-squares cancellation.
    variance = _group_sum(deviation**2, index, num_groups) / (count - 1).clamp(min=1)
    advantages = deviation / (variance.sqrt() + adv_eps)
    return torch.where(_comparable(scores, index, num_groups), advantages, 0.0)


def dr_grpo_advantages(scores: Tensor, group_ids: Tensor) -> Tensor:
    """Dr. GRPO (Liu et al. 2025, arXiv 2503.20783): A_i = r_i − mean_g, no division by the std.

    Removes GRPO's question-difficulty bias (groups with a small std are not up-weighted).
    Singleton and all-equal groups get 0 (module docstring).
    """
    scores = _as_float(scores)
    index, num_groups = _group_index(scores, group_ids)
    count = _group_sum(torch.ones_like(scores), index, num_groups)
    advantages = scores - _group_sum(scores, index, num_groups) / count
    return torch.where(_comparable(scores, index, num_groups), advantages, 0.0)


def rloo_advantages(scores: Tensor, group_ids: Tensor) -> Tensor:
    """RLOO (Ahmadian et al. 2024, arXiv 2402.14740): A_i = r_i − (Σ_{j≠i} r_j) / (n − 1).

    The baseline of each trajectory is the mean of the *other* members of its group, so it does
    not depend on r_i itself. Equals n/(n − 1)·(r_i − mean_g). Singleton and all-equal groups get 0.
    """
    scores = _as_float(scores)
    index, num_groups = _group_index(scores, group_ids)
    count = _group_sum(torch.ones_like(scores), index, num_groups)
    others = _group_sum(scores, index, num_groups) - scores
    advantages = scores - others / (count - 1).clamp(min=1)
    return torch.where(_comparable(scores, index, num_groups), advantages, 0.0)


ADVANTAGE_ESTIMATORS: dict[str, AdvantageEstimator] = {
    "grpo": grpo_advantages,
    "dr_grpo": dr_grpo_advantages,
    "rloo": rloo_advantages,
}


def get_advantage_estimator(name: str) -> AdvantageEstimator:
    """The estimator registered as `name`; a clear error naming the valid choices otherwise."""
    if name not in ADVANTAGE_ESTIMATORS:
        close = difflib.get_close_matches(name, ADVANTAGE_ESTIMATORS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown advantage estimator {name!r}; valid: {sorted(ADVANTAGE_ESTIMATORS)}.{hint}"
        )
    return ADVANTAGE_ESTIMATORS[name]


def broadcast_to_tokens(advantages: Tensor, response_mask: Tensor) -> Tensor:
    """[B] advantages → [B, T]: every response token of trajectory i gets A_i; 0 where mask is 0."""
    if advantages.dim() != 1 or response_mask.dim() != 2:
        raise ValueError(
            f"expected advantages [B] and response_mask [B, T]; got shapes "
            f"{tuple(advantages.shape)} and {tuple(response_mask.shape)}"
        )
    return advantages.unsqueeze(-1) * response_mask.to(advantages.dtype)
