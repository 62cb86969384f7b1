"""Policy-gradient losses, the loss aggregation modes, and entropy from logits.

Every policy loss takes per-token tensors of shape [B, T] — `log_probs` (current policy, with
gradient), `old_log_probs` (the policy that sampled the batch), `advantages` (already broadcast to
tokens) and `response_mask` (1 = a token the policy sampled; 0 = prompt padding, tool output or
template tokens) — and returns `(loss, metrics)`. They are registered in `POLICY_LOSSES`.

The per-token losses match verl's `compute_policy_loss_vanilla` / `compute_policy_loss_gspo`, and,
with `clip_ratio_c=None` and |log-ratio| ≤ 20, TRL's GRPO loss (TRL has no dual clip and no
clamp). The argument order is ours: new log-probs first. Aggregation (`agg_loss`) is shared by
all losses; see its docstring for micro-batching and for which rows count in a seq-mean.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from toolrl.algorithms.masked import masked_mean, masked_sum

PolicyLoss = Callable[..., tuple[Tensor, dict[str, Tensor]]]
Normaliser = int | float | Tensor | None

# exp(±20) ≈ 5e8: keeps the ratio finite when the two policies disagree wildly (as verl does).
LOG_RATIO_CLAMP = 20.0
# GSPO's sequence log-ratio is clamped above only, at e^10 (as verl's GSPO does).
SEQ_LOG_RATIO_MAX = 10.0


# --- aggregation -------------------------------------------------------------------------


def num_valid_tokens(loss_mask: Tensor) -> Tensor:
    """Number of tokens that count: Σ loss_mask. Pass the mini-batch's as `global_num_tokens`."""
    return loss_mask.sum()


def num_valid_seqs(loss_mask: Tensor) -> Tensor:
    """Number of rows with ≥ 1 counted token. Pass the mini-batch's as `global_num_seqs`.

    A fully masked row (e.g. a trajectory the trainer masked out after a sandbox failure) is
    treated as absent: it adds nothing to the loss and is not counted in the seq-mean.
    """
    return (loss_mask.sum(-1) > 0).sum()


def _normaliser(given: Normaliser, default: Tensor) -> Tensor:
    value = default if given is None else torch.as_tensor(given)
    # Zero only when nothing counts, and then the numerator is 0 too: 0/1, not 0/0.
    return torch.where(value > 0, value, torch.ones_like(value))


# mode → f(loss_mat, loss_mask, N, S, norm_length); agg_loss resolves the normalisers N and S.
LOSS_AGG_MODES: dict[str, Callable[[Tensor, Tensor, Tensor, Tensor, float], Tensor]] = {
    "token-mean": lambda loss, mask, n, s, length: masked_sum(loss, mask) / n,
    "seq-mean-token-sum": lambda loss, mask, n, s, length: masked_sum(loss, mask) / s,
    "seq-mean-token-mean": lambda loss, mask, n, s, length: (
        masked_mean(loss, mask, dim=-1).sum() / s  # a fully masked row's mean is 0
    ),
    "seq-mean-token-sum-norm": lambda loss, mask, n, s, length: (
        masked_sum(loss, mask) / (s * length)
    ),
}


def agg_loss(
    loss_mat: Tensor,
    loss_mask: Tensor,
    mode: str,
    *,
    global_num_tokens: Normaliser = None,
    global_num_seqs: Normaliser = None,
    norm_length: int | None = None,
) -> Tensor:
    """Reduce a [B, T] per-token loss to a scalar. With N = Σ mask and S = rows with ≥ 1 token:

    - `token-mean`:              Σ_i Σ_t l_it / N  (DAPO; the paper's token-level loss)
    - `seq-mean-token-sum`:      Σ_i Σ_t l_it / S
    - `seq-mean-token-mean`:     Σ_i (Σ_t l_it / n_i) / S  (original GRPO; GSPO)
    - `seq-mean-token-sum-norm`: Σ_i Σ_t l_it / (S · norm_length)  (Dr. GRPO, arXiv 2503.20783;
      `norm_length` should be a constant such as the max response length; default: T)

    Micro-batching: pass the mini-batch's `global_num_tokens` (= `num_valid_tokens`) and
    `global_num_seqs` (= `num_valid_seqs`); each micro-batch's loss is then its share, and the
    sum of micro-batch losses and gradients equals the full mini-batch's exactly. When None, the
    normalisers are computed from this call's `loss_mask`. Under data parallelism with gradient
    averaging, pass the global counts divided by the world size. Fully masked rows add 0, are not
    counted in S (as verl counts them itself; TRL's `grpo` / `dr_grpo` divide by all B rows, and
    verl's `seq-mean-token-sum-norm` by no S at all) and never produce NaN.
    """
    if mode not in LOSS_AGG_MODES:
        raise ValueError(f"unknown loss_agg_mode {mode!r}; valid: {list(LOSS_AGG_MODES)}")
    loss_mask = loss_mask.to(loss_mat.dtype)
    num_tokens = _normaliser(global_num_tokens, num_valid_tokens(loss_mask))
    num_seqs = _normaliser(global_num_seqs, num_valid_seqs(loss_mask))
    length = loss_mask.shape[-1] if norm_length is None else norm_length
    return LOSS_AGG_MODES[mode](loss_mat, loss_mask, num_tokens, num_seqs, length)


# --- policy losses -----------------------------------------------------------------------


def _clipped_surrogate(
    ratio: Tensor,
    advantages: Tensor,
    clip_ratio_low: float,
    clip_ratio_high: float,
    clip_ratio_c: float | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-token dual-clip PPO loss, and where the ratio clip and the dual clip are active.

    l = max(−A·r, −A·clip(r, 1 − ε_low, 1 + ε_high)); where A < 0: l = min(l, −A·c).
    The dual clip (Ye et al. 2020, arXiv 1912.09729) bounds the loss of a negative-advantage token
    whose ratio has exploded (r > c): without it, l = −A·r grows without limit.
    """
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_ratio_low, 1 + clip_ratio_high)
    pg_losses = torch.maximum(unclipped, clipped)
    # The clip changed the loss: A > 0 and r > 1 + ε_high, or A < 0 and r < 1 − ε_low.
    is_clipped = clipped > unclipped
    if clip_ratio_c is None:
        return pg_losses, is_clipped, torch.zeros_like(is_clipped)
    if clip_ratio_c <= 1:
        raise ValueError(f"clip_ratio_c must be > 1 (dual-clip bound c·|A|), got {clip_ratio_c}")
    negative = advantages < 0
    dual_bound = -advantages * clip_ratio_c
    is_dual_clipped = negative & (pg_losses > dual_bound)
    pg_losses = torch.where(negative, torch.minimum(pg_losses, dual_bound), pg_losses)
    return pg_losses, is_clipped, is_dual_clipped


def _fraction(flags: Tensor, mask: Tensor) -> Tensor:
    return masked_mean(flags.float(), mask)


def _masked_extreme(values: Tensor, valid: Tensor, *, largest: bool) -> Tensor:
    """Max (or min) of `values` where `valid`; 1 (no change) when nothing is valid."""
    fill = -torch.inf if largest else torch.inf
    # The extra element keeps the reduction defined for a micro-batch with no rows at all.
    candidates = torch.cat(
        [torch.where(valid, values, fill).flatten(), values.new_full((1,), fill)]
    )
    extreme = candidates.amax() if largest else candidates.amin()
    return torch.where(valid.any(), extreme, 1.0)


@torch.no_grad()
def _policy_metrics(
    ratio: Tensor,
    log_ratio: Tensor,
    mask: Tensor,
    clipped_high: Tensor,
    clipped_low: Tensor,
    is_dual_clipped: Tensor,
) -> dict[str, Tensor]:
    """Masked token means (detached). The ratio extremes are 1 when no token counts.

    `clipped_high` / `clipped_low`: tokens where the clip at 1 + ε_high / 1 − ε_low acted (for
    the PPO clip: changed the loss; for CISPO: bounded the weight).
    """
    valid = mask != 0
    return {
        "pg_clipfrac": _fraction(clipped_high | clipped_low, mask),  # either side (as verl)
        "pg_clipfrac_ratio_high": _fraction(clipped_high, mask),  # r > 1 + ε_high
        "pg_clipfrac_ratio_low": _fraction(clipped_low, mask),  # r < 1 − ε_low
        "pg_clipfrac_lower": _fraction(is_dual_clipped, mask),  # dual clip: A < 0, r > c (as verl)
        "ppo_kl": masked_mean(-log_ratio, mask),  # k1 estimate of KL(π_old ‖ π)
        "ratio_mean": masked_mean(ratio, mask),
        "ratio_max": _masked_extreme(ratio, valid, largest=True),
        "ratio_min": _masked_extreme(ratio, valid, largest=False),
    }


def _token_ratio(log_probs: Tensor, old_log_probs: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
    """(log r, r) per token, r = exp(clamp(log π − log π_old, ±20)); 0 and 1 outside the mask,
    so garbage log-probs of padding cannot put NaN into the gradient."""
    log_ratio = torch.where(valid, log_probs - old_log_probs, 0.0)
    log_ratio = torch.clamp(log_ratio, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    return log_ratio, torch.exp(log_ratio)


def _aggregate(pg_losses: Tensor, response_mask: Tensor, is_weights, mode, norms) -> Tensor:
    """agg_loss(w·l) with w the rollout-correction importance weights (detached; 1 without)."""
    if is_weights is not None:
        pg_losses = pg_losses * is_weights.detach()
    return agg_loss(pg_losses, response_mask, mode, **norms)


def ppo_clip_loss(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    *,
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.28,
    clip_ratio_c: float | None = 10.0,
    loss_agg_mode: str = "token-mean",
    global_num_tokens: Normaliser = None,
    global_num_seqs: Normaliser = None,
    norm_length: int | None = None,
    is_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Token-level PPO clip with clip-higher and dual clip (GRPO-T / GRPO-TCR, arXiv 2510.11701).

    r_t = exp(clamp(log π(y_t) − log π_old(y_t), −20, 20))
    l_t = max(−A_t·r_t, −A_t·clip(r_t, 1 − ε_low, 1 + ε_high)), and where A_t < 0, min(l_t, −A_t·c)

    Asymmetric clipping ("clip-higher", DAPO arXiv 2503.14476) lets low-probability tokens with
    A > 0 grow further, which keeps entropy up. `clip_ratio_c=None` disables the dual clip (TRL's
    GRPO loss). The loss is `agg_loss(w·l, response_mask, loss_agg_mode, ...)` with w the
    rollout-correction importance weights (`is_weights`, detached; 1 without them); metrics are
    in `_policy_metrics`.
    """
    log_ratio, ratio = _token_ratio(log_probs, old_log_probs, response_mask != 0)
    pg_losses, is_clipped, is_dual_clipped = _clipped_surrogate(
        ratio, advantages, clip_ratio_low, clip_ratio_high, clip_ratio_c
    )
    norms = _norms(global_num_tokens, global_num_seqs, norm_length)
    loss = _aggregate(pg_losses, response_mask, is_weights, loss_agg_mode, norms)
    high, low = is_clipped & (advantages > 0), is_clipped & (advantages < 0)
    return loss, _policy_metrics(ratio, log_ratio, response_mask, high, low, is_dual_clipped)


def gspo_loss(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    *,
    clip_ratio_low: float = 3e-4,
    clip_ratio_high: float = 4e-4,
    loss_agg_mode: str = "seq-mean-token-mean",
    global_num_tokens: Normaliser = None,
    global_num_seqs: Normaliser = None,
    norm_length: int | None = None,
    is_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Sequence-level clip (GSPO, arXiv 2507.18071; the paper's GRPO-SCR).

    s_i = exp((1/|y_i|) Σ_t log π(y_it)/π_old(y_it)), the length-normalised sequence ratio, used in
    its token form s_it = sg[s_i] · π(y_it) / sg[π(y_it)]: its value is s_i and its gradient is
    s_i·∇log π(y_it) (0 for a row whose s_i hit the clamp at e^10, as in verl). GSPO's own
    objective is `seq-mean-token-mean` (each sequence's tokens averaged, then the sequences):
    the default; the other modes weight sequences by their length (verl's GSPO always uses
    seq-mean-token-mean; toolrl honours `loss_agg_mode`). Then
    l_it = max(−A·s_it, −A·clip(s_it, 1 − ε_low, 1 + ε_high)); ε is tiny (3e-4 / 4e-4) because a
    length-normalised ratio moves little. GSPO has no dual clip, so `algorithm.clip_ratio_c`
    does not apply. `is_weights` (rollout correction) multiply l_it, as
    in `ppo_clip_loss`. Metrics are token-weighted, as for `ppo_clip_loss`.
    """
    valid = response_mask != 0
    log_ratio = torch.where(valid, log_probs - old_log_probs, 0.0)
    seq_log_ratio = masked_mean(log_ratio, response_mask, dim=-1)
    # Value: log s_i on every token; gradient: that of log π(y_it) alone.
    own_log_prob = torch.where(valid, log_probs - log_probs.detach(), 0.0)
    token_log_ratio = own_log_prob + seq_log_ratio.detach().unsqueeze(-1)
    ratio = torch.exp(torch.clamp(token_log_ratio, max=SEQ_LOG_RATIO_MAX))
    pg_losses, is_clipped, is_dual_clipped = _clipped_surrogate(
        ratio, advantages, clip_ratio_low, clip_ratio_high, None
    )
    norms = _norms(global_num_tokens, global_num_seqs, norm_length)
    loss = _aggregate(pg_losses, response_mask, is_weights, loss_agg_mode, norms)
    high, low = is_clipped & (advantages > 0), is_clipped & (advantages < 0)
    return loss, _policy_metrics(ratio, log_ratio, response_mask, high, low, is_dual_clipped)


def cispo_loss(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    *,
    cispo_clip_low: float = 1.0,
    cispo_clip_high: float = 0.28,
    loss_agg_mode: str = "token-mean",
    global_num_tokens: Normaliser = None,
    global_num_seqs: Normaliser = None,
    norm_length: int | None = None,
    is_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """CISPO: clip the importance weight, never a token's gradient (MiniMax-M1, arXiv 2506.13585).

    J = token-mean of sg(r̂_t)·A_t·log π(y_t),  r̂_t = clip(r_t, 1 − ε_low, 1 + ε_high)

    so every token keeps the gradient r̂_t·A_t·∇log π(y_t): a PPO clip zeroes the gradient of a
    token whose ratio left the trust region (often a rare "wait"/"recheck" token), CISPO only
    bounds its weight. The loss is written l_t = −sg(r̂_t)·A_t·π/sg(π) (= −sg(r̂_t)·A_t·r_t/sg(r_t)):
    the same gradient as the paper's −sg(r̂_t)·A_t·log π, and the value −r̂_t·A_t, which is the
    PPO surrogate's value wherever no clip acts (so `actor/pg_loss` reads like ppo_clip's). The
    paper's and verl's form −sg(r̂)·A·log π has the same gradient at the current parameters
    (checked against verl's `compute_policy_loss_cispo`: equal) and a value lower by
    A·(log π − 1)·r̂ per token.

    Defaults: MiniMax-M1 puts no lower bound on the weight ("ε_low large": `cispo_clip_low=1`
    makes it 0) and tunes only ε_high, without publishing its value; toolrl's default ε_high =
    0.28 is GRPO-TCR's clip-higher, so a comparison with ppo_clip differs only in what a clip
    does to the gradient. No dual clip (the weight is already bounded above). verl's CISPO reads
    the PPO clip_ratio_low/high; toolrl gives CISPO its own knobs because its ε_low default
    differs. `is_weights` multiply l_t, as in `ppo_clip_loss`.
    """
    valid = response_mask != 0
    log_ratio, ratio = _token_ratio(log_probs, old_log_probs, valid)
    weight = torch.clamp(ratio, 1 - cispo_clip_low, 1 + cispo_clip_high).detach()
    own = _unit_with_log_prob_gradient(log_probs, valid)
    pg_losses = -weight * advantages * own
    norms = _norms(global_num_tokens, global_num_seqs, norm_length)
    loss = _aggregate(pg_losses, response_mask, is_weights, loss_agg_mode, norms)
    high, low = ratio > 1 + cispo_clip_high, ratio < 1 - cispo_clip_low
    metrics = _policy_metrics(ratio, log_ratio, response_mask, high, low, torch.zeros_like(high))
    return loss, metrics


def aepo_loss(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    *,
    entropy: Tensor,
    clip_ratio_low: float = 0.2,
    clip_ratio_high: float = 0.28,
    clip_ratio_c: float | None = 10.0,
    aepo_entropy_advantage: float = 0.2,
    loss_agg_mode: str = "token-mean",
    global_num_tokens: Normaliser = None,
    global_num_seqs: Normaliser = None,
    norm_length: int | None = None,
    is_weights: Tensor | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """AEPO's entropy-balanced policy optimisation (Dong et al., arXiv 2510.14545, Sec. 3.3).

    Two changes to the token-level clipped loss of `ppo_clip_loss`:

    1. Gradient-preserving high clip. A token with A_t > 0 whose ratio passed 1 + ε_high — the
       rare, high-entropy tokens clip-higher exists for — keeps a gradient instead of none:
       l_t = −A_t·(1 + ε_high)·r_t/sg(r_t), value −A_t·(1 + ε_high) (the clipped value),
       gradient −A_t·(1 + ε_high)·∇log π(y_t). Everything else is ppo_clip's (the low clip,
       and the dual clip for A < 0).
    2. Entropy-aware advantage: Â_t = A_t·max(0, 1 + α·z_t), z_t the token's entropy
       standardised over its own trajectory's sampled tokens, (H_t − mean H)/(std H + 1e-6),
       with H the policy's entropy at this forward, detached (`entropy`); α =
       `aepo_entropy_advantage` (0.2). High-uncertainty tokens get more of the advantage.

    Checked against the authors' code as carried by the public fork zzfoutofspace/ATPO
    (98e60f6, AEPO/verl_aepo_entropy/verl/trainer/ppo/core_algos.py,
    `compute_policy_loss_entropy_balanced_clipping`; the stored snapshots of RUC-NLPIR/ARPO
    predate AEPO): part 1 is the same (equal to 4e-15 in an independent check), and α = 0.2 is
    theirs. Departures, stated: their z is standardised over the whole micro-batch (unbiased
    std, no epsilon), so their loss depends on how rows are split into micro-batches; toolrl
    standardises each trajectory over its own tokens, so micro-batches add up to the mini-batch
    loss exactly. Their factor has no floor; toolrl's is floored at 0 so an advantage never
    changes sign (with α = 0.2 only a token 5 std below its trajectory's mean entropy would
    flip). The ±20 clamp of log r (as in `ppo_clip_loss`) is not in their code. The dual clip
    is kept, as in their function.
    """
    valid = response_mask != 0
    log_ratio, ratio = _token_ratio(log_probs, old_log_probs, valid)
    with torch.no_grad():
        z = _standardised_per_row(entropy.detach(), response_mask)
        scaled = advantages * torch.clamp(1 + aepo_entropy_advantage * z, min=0.0)
    pg_losses, is_clipped, is_dual_clipped = _clipped_surrogate(
        ratio, scaled, clip_ratio_low, clip_ratio_high, clip_ratio_c
    )
    high = is_clipped & (scaled > 0)
    own = _unit_with_log_prob_gradient(log_probs, valid)
    preserved = -scaled * (1 + clip_ratio_high) * own
    pg_losses = torch.where(high, preserved, pg_losses)
    norms = _norms(global_num_tokens, global_num_seqs, norm_length)
    loss = _aggregate(pg_losses, response_mask, is_weights, loss_agg_mode, norms)
    low = is_clipped & (scaled < 0)
    metrics = _policy_metrics(ratio, log_ratio, response_mask, high, low, is_dual_clipped)
    metrics["entropy_advantage_scale"] = masked_mean(scaled.abs(), response_mask) / masked_mean(
        advantages.abs(), response_mask
    ).clamp(min=1e-12)
    return loss, metrics


def _unit_with_log_prob_gradient(log_probs: Tensor, valid: Tensor) -> Tensor:
    """π/sg(π) per token: value 1, gradient ∇log π (1 with no gradient outside the mask)."""
    return torch.exp(torch.where(valid, log_probs - log_probs.detach(), 0.0))


def _standardised_per_row(values: Tensor, mask: Tensor) -> Tensor:
    """(v − mean)/(std + 1e-6) over each row's masked entries (population std; 0 outside)."""
    mean = masked_mean(values, mask, dim=-1).unsqueeze(-1)
    centred = torch.where(mask != 0, values - mean, 0.0)
    var = masked_mean(centred**2, mask, dim=-1).unsqueeze(-1)
    return centred / (var.sqrt() + 1e-6)


def _norms(global_num_tokens, global_num_seqs, norm_length) -> dict[str, Normaliser]:
    return {
        "global_num_tokens": global_num_tokens,
        "global_num_seqs": global_num_seqs,
        "norm_length": norm_length,
    }


POLICY_LOSSES: dict[str, PolicyLoss] = {
    "ppo_clip": ppo_clip_loss,
    "gspo": gspo_loss,
    "cispo": cispo_loss,
    "aepo": aepo_loss,
}


def reads_entropy(loss: PolicyLoss) -> bool:
    """Whether a policy loss takes the policy's per-token entropy (`entropy=`, detached)."""
    return "entropy" in inspect.signature(loss).parameters


def get_policy_loss(name: str) -> PolicyLoss:
    """The policy loss registered as `name`; a clear error naming the valid choices otherwise."""
    if name not in POLICY_LOSSES:
        close = difflib.get_close_matches(name, POLICY_LOSSES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown policy loss {name!r}; valid: {sorted(POLICY_LOSSES)}.{hint}")
    return POLICY_LOSSES[name]


# --- entropy -----------------------------------------------------------------------------


def _entropy_rows(logits: Tensor) -> Tensor:
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    # Entropy is shift-invariant; shifting by the row max avoids lse ≈ Σp·z ≈ 1e4 cancelling.
    shifted = logits - logits.amax(dim=-1, keepdim=True).detach()
    # A −inf logit (a banned token) would give p·z = 0·(−inf) = NaN; the dtype's min gives 0.
    shifted = shifted.clamp(min=torch.finfo(shifted.dtype).min)
    probs = torch.softmax(shifted, dim=-1)
    return torch.logsumexp(shifted, dim=-1) - (probs * shifted).sum(dim=-1)


def entropy_from_log_probs(log_probs: Tensor) -> Tensor:
    """Entropy of a normalised distribution given as log-probabilities: H = −Σ p log p.

    [..., V] → [...]. For callers that already hold log_softmax(z) (the trainer does, to read
    the sampled tokens' log-probs): four passes over [..., V] instead of the ten of
    `entropy_from_logits`. Tokens with p = 0 (log p = −inf) contribute 0.
    """
    finite = log_probs.clamp(min=torch.finfo(log_probs.dtype).min)
    return -(log_probs.exp() * finite).sum(dim=-1)


def entropy_from_logits(logits: Tensor, chunk_size: int = 1024) -> Tensor:
    """Entropy of softmax(logits) over the last dim: H = −Σ p log p = logsumexp(z) − Σ softmax(z)·z.

    [..., V] → [...]. Rows are processed `chunk_size` at a time, so the extra memory is that of
    one chunk's probabilities, not of the whole [..., V] tensor; when a gradient is needed each
    chunk is checkpointed, so the backward pass recomputes it instead of keeping every chunk's
    softmax alive. Half-precision logits are computed in float32.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    rows = logits.reshape(-1, logits.shape[-1])
    needs_graph = torch.is_grad_enabled() and logits.requires_grad
    pieces = [
        checkpoint(_entropy_rows, chunk, use_reentrant=False)
        if needs_graph
        else _entropy_rows(chunk)
        for chunk in rows.split(chunk_size)
    ]
    if not pieces:  # no rows at all
        dtype = torch.float32 if logits.dtype in (torch.float16, torch.bfloat16) else logits.dtype
        return logits.new_zeros(logits.shape[:-1], dtype=dtype)
    return torch.cat(pieces).reshape(logits.shape[:-1])
