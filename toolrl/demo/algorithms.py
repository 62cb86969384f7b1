"""`toolrl experiments algorithms`: GRPO-TCR against the neighbouring papers' options, side by side.

Every variant starts from the same SFT model (the demo pipeline's, trained once in `<out>`) and
gets the same RL budget, data and held-out evaluation; only the RL overrides differ. Each
(variant, seed) is one RL run in `<out>/rl_<variant>_s<seed>/` with its record in
`<out>/stages_<variant>_s<seed>.json` (reused while its settings are unchanged, so an interrupted
comparison resumes). The result: per variant, held-out avg@k and pass@k after RL with 95%
t-intervals over seeds, the paired difference from GRPO-TCR (same seed, same SFT model), tool
calls per response, tool success, response length, final training entropy, the fraction of
tokens a clip acted on, and the RL wall time;
`algorithms.md`, `algorithms.json` and `algorithms_curves.png` (training accuracy and entropy
per step, mean over seeds).
"""

from __future__ import annotations

import json
import shutil
import statistics
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from toolrl.demo.experiments import mean_ci, overall, run_once, stage_summary
from toolrl.demo.pipeline import DemoSettings
from toolrl.trainers.tracking import read_metrics


@dataclass(frozen=True)
class Variant:
    label: str
    overrides: tuple[str, ...]
    source: str


VARIANTS: dict[str, Variant] = {
    "grpo_tcr": Variant("GRPO-TCR (default)", (), "the paper (arXiv 2510.11701)"),
    "cispo": Variant("CISPO", ("algorithm.policy_loss=cispo",), "MiniMax-M1 (arXiv 2506.13585)"),
    "grpo_roc": Variant(
        "GRPO-RoC", ("algorithm.roc.enabled=true",), "rStar2-Agent (arXiv 2508.20722)"
    ),
    "arpo": Variant(
        "ARPO (entropy-guided branching)",
        ("rollout.branching.mode=arpo",),
        "ARPO (arXiv 2507.19849)",
    ),
    "aepo": Variant(
        "AEPO (balanced branching + its loss)",
        ("rollout.branching.mode=aepo", "algorithm.policy_loss=aepo"),
        "AEPO (arXiv 2510.14545)",
    ),
    "spear": Variant(
        "SPEAR (self-imitation; buffer scaled to 20 steps)",
        (
            "algorithm.self_imitation.enabled=true",
            "algorithm.self_imitation.buffer_size=32",
            "algorithm.self_imitation.capacity=256",
            "algorithm.self_imitation.warmup_steps=10",
            "algorithm.self_imitation.tool_reward_steps=20",
        ),
        "SPEAR (arXiv 2509.22601); the release's buffer of 2048 and 300 warm-up steps would "
        "never replay in the demo's 20 steps of 128 trajectories",
    ),
    "async_k1": Variant(
        "GRPO-TCR, asynchronous (k = 1)",
        ("trainer.mode=async", "trainer.max_staleness=1"),
        "toolrl's asynchronous mode (README, Asynchronous RL)",
    ),
}
BASELINE = "grpo_tcr"


def algorithms(
    out: str | Path,
    seeds: list[int],
    base: DemoSettings,
    *,
    only: list[str] | None = None,
    fresh: bool = False,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every (variant, seed), GRPO-TCR's always, and write the comparison (module docstring)."""
    out = Path(out)
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
    # The options first, GRPO-TCR last (its runs may come from another process meanwhile).
    names = [*[n for n in (only or VARIANTS) if n != BASELINE], BASELINE]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; valid: {list(VARIANTS)}")
    runs: dict[str, list[dict[str, Any]]] = {}
    for name in names:
        for seed in seeds:
            run_name = f"rl_{name}_s{seed}"
            overrides = [*base.rl_overrides, *VARIANTS[name].overrides,
                         f"trainer.seed={seed}", f"trainer.run_name={run_name}"]  # fmt: skip
            settings = replace(base, out=str(out), skip_base_eval=True, rl_overrides=overrides)
            say(f"== {name}, seed {seed}")
            record = run_once(settings, out / f"stages_{name}_s{seed}.json", say=say)
            runs.setdefault(name, []).append(run_numbers(record, out / record["rl_run_dir"]))
    runs = {BASELINE: runs.pop(BASELINE), **runs}  # the baseline's row first
    result = {"seeds": seeds, "k": record["k"], "runs": runs, "table": summarise(runs)}
    (out / "algorithms.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "algorithms.md").write_text(algorithms_markdown(result))
    plot_curves(result, out / "algorithms_curves.png")
    return result


def run_numbers(record: dict[str, Any], rl_dir: Path) -> dict[str, Any]:
    """One run's held-out numbers after RL (unweighted mean over benchmarks) and its curves."""
    k = record["k"]
    rl = stage_summary(record, "rl")
    metrics = read_metrics(rl_dir)
    return {
        "sft_avg": overall(stage_summary(record, "sft"), f"acc/avg@{k}"),
        "avg": overall(rl, f"acc/avg@{k}"),
        "pass": overall(rl, f"acc/pass@{k}"),
        "tool_calls": overall(rl, "tool/calls_per_response"),
        "tool_success": overall(rl, "tool/success_rate"),
        "length": overall(rl, "response_length/mean"),
        "rl_seconds": record["timings"]["rl"],
        # How often a clip acted at all: where it never does, CISPO's and AEPO's clips equal
        # the PPO clip (their gradients differ only on clipped tokens).
        "clip_fraction": _mean_or_nan([m.get("actor/pg_clipfrac") for m in metrics]),
        "curve_acc": [m.get("acc/mean") for m in metrics],
        "curve_entropy": [m.get("actor/entropy") for m in metrics],
    }


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per variant: mean and 95% interval of avg@k and pass@k, the paired difference from the
    baseline (seed by seed), and means of the rest."""
    base = runs[BASELINE]
    table = {}
    for name, rows in runs.items():
        entry: dict[str, Any] = {}
        for key in ("avg", "pass"):
            mean, low, high = mean_ci([r[key] for r in rows])
            entry[key] = {"mean": mean, "ci95": [low, high]}
            if name != BASELINE:
                paired = [r[key] - b[key] for r, b in zip(rows, base, strict=True)]
                mean, low, high = mean_ci(paired)
                entry[f"{key}_minus_baseline"] = {"mean": mean, "ci95": [low, high]}
        for key in ("tool_calls", "tool_success", "length", "clip_fraction", "rl_seconds"):
            entry[key] = statistics.fmean(r[key] for r in rows)
        # The last step that logged an entropy (a step without an update logs none).
        final = [
            next((v for v in reversed(r["curve_entropy"]) if v is not None), None) for r in rows
        ]
        entry["final_entropy"] = _mean_or_nan(final)
        table[name] = entry
    return table


def _mean_or_nan(values: list[float | None]) -> float:
    present = [v for v in values if v is not None]
    return statistics.fmean(present) if present else float("nan")


def reading(entry: dict[str, Any]) -> str:
    """ "better", "worse" or "no difference at this scale": does the paired 95% interval of the
    avg@k difference from GRPO-TCR exclude 0?"""
    if "avg_minus_baseline" not in entry:
        return "baseline"
    low, high = entry["avg_minus_baseline"]["ci95"]
    if low != low:  # one seed: no interval
        return "one seed: no interval"
    if low > 0:
        return "better"
    if high < 0:
        return "worse"
    return "no difference at this scale"


def algorithms_markdown(result: dict[str, Any]) -> str:
    k, seeds = result["k"], result["seeds"]
    lines = [
        f"Held-out avg@{k} / pass@{k} after RL (unweighted mean of the benchmarks), mean and 95% t-interval over seeds {seeds}; Δ is the paired difference from GRPO-TCR (same seed, same SFT model). Tool use and length are of the held-out responses after RL; entropy is the last RL step's, on the trajectories it trained (GRPO-RoC's selection keeps confident ones, so it reads lower); clipped is the mean fraction of response tokens a clip acted on in the policy updates; time is the RL stage's wall time.\n",
        f"| variant | avg@{k} | Δ avg@{k} vs GRPO-TCR | pass@{k} | tool calls / resp | tool success | resp length | final entropy | clipped | RL time (s) | reading |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for name, entry in result["table"].items():
        delta = entry.get("avg_minus_baseline")
        cells = [
            _interval(entry["avg"]),
            _interval(delta, signed=True) if delta else "–",
            _interval(entry["pass"]),
            f"{entry['tool_calls']:.2f}",
            f"{entry['tool_success']:.2f}",
            f"{entry['length']:.0f}",
            f"{entry['final_entropy']:.3f}",
            f"{100 * entry['clip_fraction']:.2f}%",
            f"{entry['rl_seconds']:.0f}",
            reading(entry),
        ]
        lines.append(f"| {VARIANTS[name].label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _interval(value: dict[str, Any], *, signed: bool = False) -> str:
    fmt = "+.3f" if signed else ".3f"
    low, high = value["ci95"]
    if low != low:
        return f"{value['mean']:{fmt}}"
    return f"{value['mean']:{fmt}} [{low:{fmt}}, {high:{fmt}}]"


def plot_curves(result: dict[str, Any], path: Path) -> None:
    """Training accuracy and policy entropy per RL step, mean over seeds, one line a variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for i, (name, rows) in enumerate(result["runs"].items()):
        for ax, key in zip(axes, ("curve_acc", "curve_entropy"), strict=True):
            curves = [[v for v in r[key] if v is not None] for r in rows]
            steps = min(len(c) for c in curves)
            mean = [statistics.fmean(c[s] for c in curves) for s in range(steps)]
            ax.plot(range(1, steps + 1), mean, label=VARIANTS[name].label, color=f"C{i}")
    axes[0].set(xlabel="RL step", ylabel="train accuracy (acc/mean)")
    axes[1].set(xlabel="RL step", ylabel="policy entropy (actor/entropy)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
