"""Evaluation metrics over problems with n sampled responses each.

For one problem with n responses of which c are correct:

- **avg@n** (verl's `mean@n`): c / n.
- **pass@k** (Chen et al. 2021, the unbiased estimator): the probability that at least one of
  k responses drawn without replacement from the n is correct,

      pass@k = 1 − C(n−c, k) / C(n, k) = 1 − ∏_{i=n−c+1}^{n} (1 − k/i)      (1 if n − c < k)

  computed in the product form, which never forms the huge binomials.
- **maj@n**: the answer given most often among the n (predictions normalised by
  `normalize_vote`; responses without an answer do not vote) is checked. Ties: when m answers
  share the most votes, maj@n is the mean correctness over those m answers, i.e. the expected
  score of breaking the tie uniformly at random; an answer's correctness is the mean `acc` of
  the responses that gave it (they agree unless grading is not deterministic). No answer at all
  scores 0.
- **verl's bootstrap** (`process_validation_metrics`, for comparability with published tables):
  for each subset size s in 2, 4, 8, … < n and n, draw 1000 subsets of s responses *with
  replacement* (numpy's legacy generator seeded with 42, reseeded for every problem and size)
  and report the mean and std over subsets of best@s (max acc), worst@s (min acc) and maj@s
  (the acc of the first response with the most common prediction, ties to the prediction seen
  first in the subset; a missing prediction is the empty string and votes like any other).
  Because subsets are drawn with replacement, best@s under-reports pass@s: with 1 correct
  response in 4, best@4 ≈ 1 − (3/4)^4 ≈ 0.68 while pass@4 = 1.
- **confidence intervals**: percentile bootstrap over problems (resample problems with
  replacement, 1000 times, seed 42) of the mean of a per-problem metric; 95% by default.

Benchmark values are means over problems.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem: 1 − ∏_{i=n−c+1}^{n} (1 − k/i)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def avg_at_k(correct: Sequence[float]) -> float:
    """Mean correctness of one problem's responses."""
    return float(np.mean(correct)) if len(correct) else 0.0


_VOTE_SPACES = re.compile(r"\s+")
_VOTE_NOISE = re.compile(r"\\left|\\right|\\!|\\,|\\;|\\:|\\displaystyle|\\text\{\s*\}")


def normalize_vote(pred: str | None) -> str | None:
    """The form answers are grouped by for voting: whitespace and LaTeX spacing removed,
    `\\dfrac`/`\\tfrac` as `\\frac`, a trailing full stop dropped. None stays None."""
    if pred is None:
        return None
    text = _VOTE_NOISE.sub("", str(pred))
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = _VOTE_SPACES.sub("", text).rstrip(".")
    return text


def maj_at_k(votes: Sequence[str | None], correct: Sequence[float]) -> float:
    """Majority-vote correctness of one problem's responses (ties: see the module docstring)."""
    groups: dict[str, list[float]] = {}
    for vote, ok in zip(votes, correct, strict=True):
        if vote is not None:
            groups.setdefault(vote, []).append(float(ok))
    if not groups:
        return 0.0
    most = max(len(v) for v in groups.values())
    tied = [float(np.mean(v)) for v in groups.values() if len(v) == most]
    return float(np.mean(tied))


def subset_sizes(n: int) -> list[int]:
    """verl's subset sizes: 2, 4, 8, … below n, then n (none when n = 1)."""
    sizes, s = [], 2
    while s < n:
        sizes.append(s)
        s *= 2
    return [*sizes, n] if n > 1 else []


def bootstrap_best_worst_maj(
    correct: Sequence[float],
    votes: Sequence[str | None],
    subset_size: int,
    resamples: int = 1000,
    seed: int = 42,
) -> dict[str, float]:
    """verl's bootstrap for one problem and one subset size: mean and std of best, worst and
    maj over `resamples` subsets drawn with replacement (module docstring)."""
    values = np.asarray(correct, dtype=np.float64)
    # Identical to `np.random.seed(seed)` then `np.random.choice(n, s)` once per resample.
    idx = np.random.RandomState(seed).randint(0, len(values), size=(resamples, subset_size))
    subsets = values[idx]
    vote_codes = _codes(["" if v is None else v for v in votes])
    codes = vote_codes[idx]
    rows = np.arange(resamples)[:, None]
    tally = np.zeros((resamples, int(vote_codes.max()) + 1), dtype=np.int64)
    np.add.at(tally, (rows, codes), 1)
    counts = tally[rows, codes]  # at each position: how often its vote occurs in the subset
    # The first position holding a most-voted prediction is that prediction's first occurrence,
    # and the earliest-seen one among tied predictions: verl's `max` over an insertion-ordered dict.
    first_top = np.argmax(counts == counts.max(axis=1, keepdims=True), axis=1)
    maj = subsets[np.arange(resamples), first_top]
    best, worst = subsets.max(axis=1), subsets.min(axis=1)
    return {
        "best/mean": float(best.mean()),
        "best/std": float(best.std()),
        "worst/mean": float(worst.mean()),
        "worst/std": float(worst.std()),
        "maj/mean": float(maj.mean()),
        "maj/std": float(maj.std()),
    }


def _codes(votes: Sequence[str]) -> np.ndarray:
    index: dict[str, int] = {}
    return np.asarray([index.setdefault(v, len(index)) for v in votes], dtype=np.int64)


def bootstrap_ci(
    per_problem: Sequence[float], resamples: int = 1000, seed: int = 42, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean over problems."""
    values = np.asarray(per_problem, dtype=np.float64)
    if len(values) == 0:
        return (0.0, 0.0)
    idx = np.random.RandomState(seed).randint(0, len(values), size=(resamples, len(values)))
    means = values[idx].mean(axis=1)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def problem_metrics(
    correct: Sequence[float],
    votes: Sequence[str | None],
    resamples: int = 1000,
    seed: int = 42,
) -> dict[str, float]:
    """Every per-problem metric, keyed as the benchmark summary reports them."""
    n, c = len(correct), sum(bool(x) for x in correct)
    out: dict[str, float] = {f"mean@{n}": avg_at_k(correct), f"avg@{n}": avg_at_k(correct)}
    out[f"std@{n}"] = float(np.std(correct))
    for k in sorted({1, *subset_sizes(n)}):
        out[f"pass@{k}"] = pass_at_k(n, c, k)
    out[f"maj@{n}"] = maj_at_k(votes, correct)
    for s in subset_sizes(n):
        for name, value in bootstrap_best_worst_maj(correct, votes, s, resamples, seed).items():
            kind, stat = name.split("/")
            out[f"{kind}@{s}/{stat}"] = value
    return out


def benchmark_metrics(
    problems: Sequence[tuple[Sequence[float], Sequence[str | None]]],
    resamples: int = 1000,
    seed: int = 42,
    ci_keys: Sequence[str] = ("avg", "pass", "maj"),
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """(metrics, intervals): the mean over problems of each per-problem metric, and 95%
    bootstrap intervals for the avg@n, pass@k and maj@n entries. Problems with a different
    number of responses than the most common one are an error (the keys would not line up)."""
    per_problem = [problem_metrics(c, v, resamples, seed) for c, v in problems]
    if not per_problem:
        return {}, {}
    keys = per_problem[0].keys()
    if any(p.keys() != keys for p in per_problem):
        sizes = sorted({len(c) for c, _ in problems})
        raise ValueError(f"problems have different numbers of responses: {sizes}")
    metrics = {key: float(np.mean([p[key] for p in per_problem])) for key in keys}
    intervals: dict[str, list[float]] = {}
    for key in keys:
        if key.split("@")[0] in ci_keys and "/" not in key:
            values = [p[key] for p in per_problem]
            intervals[key] = list(bootstrap_ci(values, resamples, seed))
    return metrics, intervals


def summarize_counts(values: Sequence[Any]) -> dict[str, int]:
    """How often each value occurs (stop reasons), most frequent first."""
    counts: dict[str, int] = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))
