"""Model-aware RL data: each problem's pass rate under the model that will be trained.

The paper keeps problems the model neither always nor never solves: with GRPO a group whose k
rollouts all score the same has zero advantage and teaches nothing, so 0% and 100% problems are
dropped. The rest are labelled by difficulty (easy: pass rate >= 0.75, hard: <= 0.25, medium
between) and can be resampled to a target difficulty histogram.

    rates = pass_rates(engine, tokenizer, tools, samples, k=8, settings=..., reward_cfg=...)
    kept = [r for r in rates if r.kept]
    picked = resample([r.difficulty for r in kept], {"easy": .2, "medium": .5, "hard": .3})

Pass rates are graded with the RL reward's graders (`acc`); rollouts whose sandbox failed are
left out of the denominator (a problem with no valid rollout is dropped as `infra_error`).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

from toolrl.config import RewardConfig
from toolrl.rewards.registry import Graders, reward_batch
from toolrl.rollout.agent_loop import AgentLoop, LoopSettings
from toolrl.rollout.engines.base import Engine
from toolrl.types import Sample

Difficulty = Literal["easy", "medium", "hard"]
DIFFICULTIES: tuple[Difficulty, ...] = ("easy", "medium", "hard")


@dataclass
class PassRate:
    """One problem under the model: k rollouts, how many were correct, and the verdict."""

    index: int
    """Row number in the source file."""
    sample_id: str
    data_source: str
    k: int
    correct: int
    infra_errors: int
    pass_rate: float | None
    difficulty: Difficulty | None
    drop_reason: str | None
    """None = kept; `never_solved`, `always_solved` or `infra_error`."""

    @property
    def kept(self) -> bool:
        return self.drop_reason is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def difficulty(pass_rate: float, easy: float = 0.75, hard: float = 0.25) -> Difficulty:
    """easy if pass_rate >= `easy`, hard if <= `hard`, else medium."""
    if pass_rate >= easy:
        return "easy"
    if pass_rate <= hard:
        return "hard"
    return "medium"


def pass_rates(
    engine: Engine,
    tokenizer,
    tools: list[Any],
    samples: list[Sample],
    *,
    k: int = 8,
    settings: LoopSettings | None = None,
    reward_cfg: RewardConfig | None = None,
    graders: Graders | None = None,
    easy: float = 0.75,
    hard: float = 0.25,
) -> list[PassRate]:
    """Roll every sample out k times, grade, and judge it (one PassRate per sample, in order)."""
    settings = settings or LoopSettings()
    trajectories = AgentLoop(engine, tokenizer, tools, settings).run(samples, n=k)
    # Only `acc` matters here: shaping is switched off.
    plain = replace(reward_cfg or RewardConfig(), overlong_shaping=False, tool_shaping=False)
    reward_batch(trajectories, plain, settings.max_response_length, graders=graders)
    out = []
    for i, sample in enumerate(samples):
        group = trajectories[i * k : (i + 1) * k]
        valid = [t for t in group if not t.excluded_from_training]
        broken = len(group) - len(valid)
        correct = sum(bool(t.reward_info.get("acc")) for t in valid)
        out.append(judge(i, sample, k, correct, broken, easy=easy, hard=hard))
    return out


def judge(
    index: int,
    sample: Sample,
    k: int,
    correct: int,
    infra_errors: int = 0,
    *,
    easy: float = 0.75,
    hard: float = 0.25,
) -> PassRate:
    """The verdict for `correct` successes out of `k - infra_errors` valid rollouts."""
    valid = k - infra_errors
    rate = correct / valid if valid else None
    if rate is None:
        reason = "infra_error"
    elif correct == 0:
        reason = "never_solved"
    elif correct == valid:
        reason = "always_solved"
    else:
        reason = None
    return PassRate(
        index=index,
        sample_id=sample.id,
        data_source=sample.data_source,
        k=k,
        correct=correct,
        infra_errors=infra_errors,
        pass_rate=rate,
        difficulty=difficulty(rate, easy, hard) if rate is not None else None,
        drop_reason=reason,
    )


def parse_target(text: str) -> dict[str, float]:
    """`easy=0.2,medium=0.5,hard=0.3` -> normalised weights; ValueError names what is wrong."""
    target: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name.strip() not in DIFFICULTIES:
            raise ValueError(f"target {part!r}: expected easy=W, medium=W, hard=W")
        try:
            target[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"target {part!r}: {value!r} is not a number") from None
    total = sum(target.values())
    if total <= 0 or any(w < 0 for w in target.values()):
        raise ValueError(f"target {text!r}: weights must be >= 0 and not all 0")
    return {name: w / total for name, w in target.items()}


def resample(
    labels: list[str], target: dict[str, float], *, size: int | None = None, seed: int = 0
) -> list[int]:
    """Indices into `labels` whose label histogram follows `target` (weights summing to 1).

    Without `size`: the largest subset, drawn without replacement, whose proportions match
    (the scarcest bucket relative to its weight sets the total). With `size`: round(size * w)
    per label, drawn without replacement while a bucket has enough and with replacement beyond
    (upsampling repeats problems). Returned in source order, repeats adjacent.
    """
    rng = random.Random(seed)
    buckets: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        buckets.setdefault(label, []).append(i)
    wanted = {name: w for name, w in target.items() if w > 0}
    if size is None:
        if any(not buckets.get(name) for name in wanted):
            missing = [name for name in wanted if not buckets.get(name)]
            raise ValueError(f"no {', '.join(missing)} problems to resample from")
        total = min(len(buckets[name]) / w for name, w in wanted.items())
        counts = {name: int(total * w + 1e-9) for name, w in wanted.items()}
    else:
        counts = _apportion(size, wanted)
    picked: list[int] = []
    for name, count in counts.items():
        pool = buckets.get(name, [])
        if count and not pool:
            raise ValueError(f"target asks for {count} {name} problems but there are none")
        if count <= len(pool):
            picked += rng.sample(pool, count)
        else:
            picked += pool + rng.choices(pool, k=count - len(pool))
    return sorted(picked)


def _apportion(size: int, weights: dict[str, float]) -> dict[str, int]:
    """Integer counts summing to `size`, proportional to `weights` (largest remainders)."""
    exact = {name: size * w for name, w in weights.items()}
    counts = {name: int(v) for name, v in exact.items()}
    leftovers = sorted(weights, key=lambda name: exact[name] - counts[name], reverse=True)
    for name in leftovers[: size - sum(counts.values())]:
        counts[name] += 1
    return counts


def summary(rates: list[PassRate]) -> dict[str, Any]:
    """Counts by verdict and difficulty, and the pass-rate histogram (by number correct)."""
    kept = [r for r in rates if r.kept]
    return {
        "problems": len(rates),
        "kept": len(kept),
        "dropped": dict(Counter(r.drop_reason for r in rates if not r.kept).most_common()),
        "difficulty_kept": {d: sum(r.difficulty == d for r in kept) for d in DIFFICULTIES},
        "correct_histogram": {
            str(c): n
            for c, n in sorted(Counter(r.correct for r in rates if r.pass_rate is not None).items())
        },
    }


def plot_pass_rates(
    rates: list[PassRate], path: str | Path, *, easy: float = 0.75, hard: float = 0.25
) -> Path:
    """A bar chart of problems by pass rate, coloured by verdict (matplotlib's Agg canvas, no
    pyplot: nothing global is switched)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    values = sorted({r.pass_rate for r in rates if r.pass_rate is not None})
    colours = {
        "never_solved": "#9e9e9e",
        "always_solved": "#9e9e9e",
        "hard": "#d62728",
        "medium": "#ff7f0e",
        "easy": "#2ca02c",
    }
    fig = Figure(figsize=(7, 3.5), dpi=120)
    ax = fig.subplots()
    width = 0.8 / max((r.k for r in rates), default=1)  # pass rates are multiples of 1/k
    for value in values:
        group = [r for r in rates if r.pass_rate == value]
        verdict = group[0].drop_reason or group[0].difficulty
        ax.bar(
            value,
            len(group),
            width=width,
            color=colours[verdict or "medium"],
            edgecolor="black",
            linewidth=0.4,
        )
    for x in (hard, easy):
        ax.axvline(x, color="black", linestyle=":", linewidth=0.8)
    legend = [("hard", "hard"), ("medium", "medium"), ("easy", "easy"), ("never_solved", "dropped")]
    ax.legend(handles=[Patch(color=colours[k], label=label) for k, label in legend], fontsize=7)
    ax.set_xlabel("pass rate under the model")
    ax.set_ylabel("problems")
    s = summary(rates)
    ax.set_title(
        f"{s['problems']} problems, {s['kept']} kept "
        f"(easy {s['difficulty_kept']['easy']}, medium {s['difficulty_kept']['medium']}, "
        f"hard {s['difficulty_kept']['hard']}); grey = dropped (0% / 100%)",
        fontsize=8,
    )
    ax.set_xlim(-0.05, 1.05)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def annotate_row(row: dict[str, Any], rate: PassRate) -> dict[str, Any]:
    """The source row with `extra_info.pass_rate` and `extra_info.difficulty` added (an
    `extra_info` stored as a JSON string stays a JSON string)."""
    import json

    row = dict(row)
    extra = row.get("extra_info") or {}
    as_string = isinstance(extra, str)
    extra = json.loads(extra) if as_string else dict(extra)
    extra.update(pass_rate=rate.pass_rate, difficulty=rate.difficulty)
    row["extra_info"] = json.dumps(extra, ensure_ascii=False) if as_string else extra
    return row
