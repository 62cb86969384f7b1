"""Per-token sample estimators of KL(π ‖ π_ref) (J. Schulman, "Approximating KL divergence", 2020).

Tokens are sampled from π (the policy being trained); with log r = log π_ref(y) − log π(y):

- k1 = −log r                 unbiased, high variance, can be negative
- k2 = ½ (log r)²             biased, low variance, always ≥ 0
- k3 = (r − 1) − log r        unbiased, low variance, always ≥ 0 (verl's `low_var_kl`)

Each takes `log_probs` (π) and `ref_log_probs` (π_ref), both [B, T], and returns [B, T]; reduce
with `agg_loss`. Registered in `KL_ESTIMATORS`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

import torch
from torch import Tensor

KLEstimator = Callable[[Tensor, Tensor], Tensor]

# As verl's low_var_kl: the log-ratio is clamped before exp, the estimate to ±10, so one token the
# reference finds absurd cannot dominate the loss.
K3_LOG_RATIO_CLAMP = 20.0
K3_CLAMP = 10.0


def kl_k1(log_probs: Tensor, ref_log_probs: Tensor) -> Tensor:
    """k1 = log π(y) − log π_ref(y)."""
    return log_probs - ref_log_probs


def kl_k2(log_probs: Tensor, ref_log_probs: Tensor) -> Tensor:
    """k2 = ½ (log π(y) − log π_ref(y))²."""
    return 0.5 * (log_probs - ref_log_probs).square()


def kl_k3(log_probs: Tensor, ref_log_probs: Tensor) -> Tensor:
    """k3 = exp(log r) − log r − 1 with log r = clamp(log π_ref(y) − log π(y), ±20); result in ±10."""
    log_ratio = torch.clamp(ref_log_probs - log_probs, -K3_LOG_RATIO_CLAMP, K3_LOG_RATIO_CLAMP)
    # expm1(x) − x, not exp(x) − x − 1: the latter rounds to small negatives when π ≈ π_ref.
    return torch.clamp(torch.expm1(log_ratio) - log_ratio, -K3_CLAMP, K3_CLAMP)


KL_ESTIMATORS: dict[str, KLEstimator] = {"k1": kl_k1, "k2": kl_k2, "k3": kl_k3}


def get_kl_estimator(name: str) -> KLEstimator:
    """The estimator registered as `name`; a clear error naming the valid choices otherwise."""
    if name not in KL_ESTIMATORS:
        close = difflib.get_close_matches(name, KL_ESTIMATORS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown KL estimator {name!r}; valid: {sorted(KL_ESTIMATORS)}.{hint}")
    return KL_ESTIMATORS[name]
