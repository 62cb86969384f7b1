"""Miniature experiments on the demo pipeline (`toolrl experiments ...`).

- `rl_gain`: does RL help beyond noise? Held-out avg@k after RL minus after SFT, over seeds,
  with a t-interval on the mean gain. `vary="all"` reruns the whole pipeline per seed (tasks,
  model, SFT, RL); `vary="rl"` keeps one SFT model and varies only the RL seed (cheaper; each seed's RL run
  replaces the previous one in `<out>/rl`, its numbers stay in `stages_seed<N>.json`; a demo
  run directory with the same settings can be given as `out`, its cached stages are reused).
- `insights`: the paper's three findings in miniature, each comparison with the same budget
  and seeds: (i) SFT on real vs stitched trajectories, then the same RL; (ii) GRPO-T vs
  GRPO-TCR from the same SFT model (accuracy and entropy curves); (iii) deliberative vs
  reactive teachers (one well-placed call vs a call plus a re-check), then the same RL: tool
  calls per response against accuracy.

Both lay their pipeline runs out alike (`<out>/seed<N>/` is the demo with seed N; insights adds
`stitched_seed<N>/` and `reactive_seed<N>/`), and each run's record (`stages_<variant>.json`)
is reused when its settings are unchanged: an interrupted experiment resumes, and `insights`
with the `--out` of an `rl-gain` run reuses its seeds' pipelines instead of training them again.
"""

from __future__ import annotations

import json
import shutil
import statistics
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from toolrl.config import load_config
from toolrl.demo.pipeline import DemoSettings, resolved_recipes, run_demo
from toolrl.trainers.tracking import read_metrics

GRPO_T = ["algorithm.clip_ratio_high=0.2", "reward.overlong_shaping=false"]
REACTIVE_TEACHER = "scripted:toolrl.data.tasks.teacher:reactive_policy"


def overall(summary: dict[str, Any], key: str) -> float:
    """Unweighted mean of a metric over the benchmarks of one stage's summary."""
    return statistics.fmean(s["metrics"][key] for s in summary.values())


def stage_summary(record: dict[str, Any], name: str) -> dict[str, Any]:
    return next(s["summary"] for s in record["stages"] if s["name"] == name)


# Student's t 0.975 quantiles by degrees of freedom (few seeds: the normal 1.96 is too narrow).
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
         9: 2.262, 10: 2.228}  # fmt: skip


def mean_ci(values: list[float]) -> tuple[float, float, float]:
    """(mean, low, high): a 95% t-interval on the mean of a few seeds."""
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    t = T_975.get(len(values) - 1, 1.96 + 2.4 / (len(values) - 1))
    half = t * statistics.stdev(values) / len(values) ** 0.5
    return mean, mean - half, mean + half


def run_once(settings: DemoSettings, record: Path, say=print) -> dict[str, Any]:
    """One pipeline run's record (`stages.json`'s content), kept at `record`: read back when it
    was made with the same settings and recipes, else run and written there.

    A config key or setting the earlier record does not have (an option added to toolrl since)
    counts as having today's default: options are added with defaults that keep the old behaviour, so
    the earlier run is the run these settings would make. Every key the record has must match.
    """
    if record.is_file():
        earlier = json.loads(record.read_text())
        recipes = json.loads(json.dumps(resolved_recipes(settings)))
        defaults = json.loads(json.dumps(load_config(None).to_dict()))
        then = {name: _with_defaults(r, defaults) for name, r in earlier.get("recipes", {}).items()}
        now = json.loads(json.dumps(asdict(settings)))
        default_settings = json.loads(json.dumps(asdict(DemoSettings())))
        same_settings = _with_defaults(earlier.get("settings"), default_settings) == now
        if same_settings and then == recipes:
            say(f"reusing {record} (same settings and recipes)")
            return earlier
    stages = run_demo(settings, say=say).stages
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(stages, indent=2) + "\n")
    return stages


def _with_defaults(earlier: Any, defaults: Any) -> Any:
    """`earlier` with the keys of `defaults` it lacks filled in from `defaults`, recursively."""
    if not isinstance(earlier, dict) or not isinstance(defaults, dict):
        return earlier
    filled = {key: _with_defaults(value, defaults.get(key)) for key, value in earlier.items()}
    return {**{k: v for k, v in defaults.items() if k not in filled}, **filled}


def rl_gain(
    out: str | Path,
    seeds: list[int],
    base: DemoSettings,
    *,
    vary: str = "all",
    fresh: bool = False,
    say=print,
) -> dict[str, Any]:
    """Per-seed SFT and RL avg@k on the held-out tasks and the mean gain with its interval;
    `fresh` deletes `out` first (else earlier runs with the same settings are reused)."""
    out = Path(out)
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
    rows = []
    for seed in seeds:
        if vary == "all":
            settings = replace(base, out=str(out / f"seed{seed}"), seed=seed, skip_base_eval=True)
            record_path = out / f"seed{seed}" / "stages_real.json"
        else:  # one SFT model (seed of `base`), cached in `out`; the RL seed varies
            settings = replace(base, out=str(out), skip_base_eval=True,
                               rl_overrides=[*base.rl_overrides, f"trainer.seed={seed}"])  # fmt: skip
            record_path = out / f"stages_seed{seed}.json"
        record = run_once(settings, record_path, say=say)
        k = record["k"]
        key = f"acc/avg@{k}"
        sft_summary, rl_summary = (stage_summary(record, s) for s in ("sft", "rl"))
        sft, rl = overall(sft_summary, key), overall(rl_summary, key)
        by_benchmark = {
            name: rl_summary[name]["metrics"][key] - sft_summary[name]["metrics"][key]
            for name in record["benchmarks"]
        }
        rows.append({"seed": seed, "sft": sft, "rl": rl, "gain": rl - sft, "gain_by_benchmark": by_benchmark})  # fmt: skip
        say(f"seed {seed}: avg@{k} SFT {sft:.3f} → RL {rl:.3f} (gain {rl - sft:+.3f})")
    mean, low, high = mean_ci([r["gain"] for r in rows])
    per_benchmark = {}
    for name in rows[0]["gain_by_benchmark"]:
        b_mean, b_low, b_high = mean_ci([r["gain_by_benchmark"][name] for r in rows])
        per_benchmark[name] = {"mean": b_mean, "ci95": [b_low, b_high]}
    result = {"vary": vary, "seeds": rows, "gain": {"mean": mean, "ci95": [low, high]},
              "gain_by_benchmark": per_benchmark}  # fmt: skip
    (out / "rl_gain.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def rl_gain_markdown(result: dict[str, Any]) -> str:
    lines = ["| seed | avg@k after SFT | avg@k after RL | gain |", "|---|---|---|---|"]
    lines += [f"| {r['seed']} | {r['sft']:.3f} | {r['rl']:.3f} | {r['gain']:+.3f} |" for r in result["seeds"]]  # fmt: skip
    g = result["gain"]
    lines.append(f"\nmean gain {g['mean']:+.3f}, 95% t-interval [{g['ci95'][0]:+.3f}, {g['ci95'][1]:+.3f}] over {len(result['seeds'])} seeds (vary: {result['vary']}; the unweighted mean of the benchmarks)")  # fmt: skip
    for name, b in result.get("gain_by_benchmark", {}).items():
        lines.append(f"- {name}: {b['mean']:+.3f} [{b['ci95'][0]:+.3f}, {b['ci95'][1]:+.3f}]")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# Insights


def insight_variants(base: DemoSettings) -> dict[str, DemoSettings]:
    """The runs the three comparisons need; `real` (GRPO-TCR) is shared by all three."""
    return {
        "real": base,
        "stitched": replace(base, stitched=True),
        "grpo_t": replace(
            base, rl_overrides=[*base.rl_overrides, *GRPO_T, "trainer.run_name=rl_grpo_t"]
        ),
        "reactive": replace(base, teacher=REACTIVE_TEACHER),
    }


COMPARISONS = {
    "(i) SFT data": ("real", "stitched"),
    "(ii) algorithm": ("real", "grpo_t"),
    "(iii) reasoning mode": ("real", "reactive"),
}
LABELS = {"real": "real trajectories, GRPO-TCR (deliberative)", "stitched": "stitched trajectories, GRPO-TCR",
          "grpo_t": "real trajectories, GRPO-T", "reactive": "reactive teacher, GRPO-TCR"}  # fmt: skip


def insights(
    out: str | Path,
    seeds: list[int],
    base: DemoSettings,
    *,
    fresh: bool = False,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run every variant for every seed (the `grpo_t` runs reuse `real`'s cached SFT); returns
    per-variant, per-seed numbers and writes `insights.json`, `insights.md` and plots; `fresh`
    deletes `out` first (else earlier runs with the same settings are reused)."""
    out = Path(out)
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
    runs: dict[str, list[dict[str, Any]]] = {}
    for name, variant in insight_variants(base).items():
        for seed in seeds:
            # `real` is rl-gain's `seed<N>/`; grpo_t shares its directory (hence its cached
            # data and SFT), with its RL run in `rl_grpo_t/` beside `real`'s `rl/`.
            where = out / (f"seed{seed}" if name in ("real", "grpo_t") else f"{name}_seed{seed}")
            settings = replace(variant, out=str(where), seed=seed, skip_base_eval=True)
            record = run_once(settings, where / f"stages_{name}.json", say=say)
            runs.setdefault(name, []).append(_run_numbers(record, where / record["rl_run_dir"]))
    result = {"seeds": seeds, "runs": runs}
    (out / "insights.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "insights.md").write_text(insights_markdown(result))
    plot_insights(result, out)
    return result


def _run_numbers(record: dict[str, Any], rl_dir: Path) -> dict[str, Any]:
    k = record["k"]
    sft, rl = stage_summary(record, "sft"), stage_summary(record, "rl")
    metrics = read_metrics(rl_dir)
    return {
        "sft_avg": overall(sft, f"acc/avg@{k}"),
        "rl_avg": overall(rl, f"acc/avg@{k}"),
        "rl_pass": overall(rl, f"acc/pass@{k}"),
        "tool_calls": overall(rl, "tool/calls_per_response"),
        "tool_success": overall(rl, "tool/success_rate"),
        "length": overall(rl, "response_length/mean"),
        "curve_acc": [m.get("acc/mean") for m in metrics],
        "curve_entropy": [m.get("actor/entropy") for m in metrics],
    }


def insights_markdown(result: dict[str, Any]) -> str:
    """One table: each comparison's two variants, mean ± spread over seeds."""
    lines = [
        f"Each row: mean over seeds {result['seeds']} (min–max). Same tasks, model, SFT and RL budget within a comparison.\n",
        "| comparison | variant | avg@k after SFT | avg@k after RL | pass@k after RL | tool calls / resp | tool success | resp length | final train entropy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for comparison, names in COMPARISONS.items():
        for name in names:
            runs = result["runs"].get(name, [])
            if not runs:
                continue
            cells = [_spread([r[key] for r in runs]) for key in ("sft_avg", "rl_avg", "rl_pass", "tool_calls", "tool_success", "length")]  # fmt: skip
            entropy = [r["curve_entropy"][-1] for r in runs if r["curve_entropy"] and r["curve_entropy"][-1] is not None]  # fmt: skip
            cells.append(_spread(entropy) if entropy else "–")
            lines.append(f"| {comparison} | {LABELS[name]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    fmt = ".3f" if max(abs(v) for v in values) < 10 else ".0f"
    return f"{mean:{fmt}} ({min(values):{fmt}}–{max(values):{fmt}})"


def plot_insights(result: dict[str, Any], out: Path) -> None:
    """insights_curves.png (RL train accuracy and entropy per step, GRPO-T vs TCR, real vs
    stitched) and insights_tools.png (tool calls per response against accuracy)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, runs in result["runs"].items():
        for i, run in enumerate(runs):
            style = {"label": LABELS[name] if i == 0 else None, "color": f"C{list(LABELS).index(name)}", "alpha": 0.8}  # fmt: skip
            axes[0].plot(range(1, len(run["curve_acc"]) + 1), run["curve_acc"], **style)
            axes[1].plot(range(1, len(run["curve_entropy"]) + 1), run["curve_entropy"], **style)
    axes[0].set(xlabel="RL step", ylabel="train accuracy (acc/mean)")
    axes[1].set(xlabel="RL step", ylabel="policy entropy (actor/entropy)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "insights_curves.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, runs in result["runs"].items():
        ax.scatter([r["tool_calls"] for r in runs], [r["rl_avg"] for r in runs], label=LABELS[name])
    ax.set(xlabel="tool calls per response (after RL)", ylabel="held-out avg@k (after RL)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "insights_tools.png", dpi=110)
    plt.close(fig)
