"""Run benchmarks through the agent loop, grade every response in every mode, summarise.

    summaries = evaluate(engine, tokenizer, tools, {"aime24": samples}, config.eval,
                         config.rollout, out_dir="runs/x/eval", reward_cfg=config.reward)
    summaries["aime24"]["metrics"]["acc/mean@32"]        # the trainer logs val-core/aime24/acc/mean@32

For each benchmark, k responses per problem are sampled with the evaluation sampling
(`eval.temperature`, `eval.top_p`) and graded with the same graders as the RL reward: math and
multiple choice in both `strict` and `equivalent` mode, code once. The primary mode
(`reward.math_mode`) gives the `acc/...` metrics; every mode also has `acc_<mode>/...`. Code
tests run with `eval.code_execution` (`official`, LiveCodeBench's harness reproduced in the
sandbox, unless set to `isolated`, the RL reward's), and a summary with code answers says which
in `code_execution`.

With `out_dir`, each benchmark gets `<out_dir>/<name>/samples.jsonl` (one line per response:
prompt, response, pred, score and acc in each mode, tool calls, stop reason) written a chunk of
problems at a time, `run.json` (the settings the responses were sampled with) and
`summary.json`; `<out_dir>/summary.json` and `summary.md` cover all benchmarks. Re-running
with the same `out_dir` skips problems whose k responses are already there (resuming with
different settings is refused). Metrics are in `metrics.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from toolrl.config import EvalConfig, RewardConfig, RolloutConfig, ToolsConfig
from toolrl.data.io import read_jsonl
from toolrl.eval.metrics import benchmark_metrics, normalize_vote, summarize_counts
from toolrl.rewards.base import Grade, run_sync
from toolrl.rewards.registry import Graders
from toolrl.rollout.agent_loop import AgentLoop, settings_from_config
from toolrl.tools.metrics import tool_use_metrics
from toolrl.types import Sample, Trajectory


def evaluate(
    engine,
    tokenizer,
    tools: list[Any],
    benchmarks: dict[str, list[Sample]],
    eval_cfg: EvalConfig,
    rollout_cfg: RolloutConfig,
    out_dir: str | Path | None = None,
    *,
    reward_cfg: RewardConfig | None = None,
    tools_cfg: ToolsConfig | None = None,
    graders: Graders | None = None,
    max_context_length: int = 0,
    seed: int = 0,
    chunk_size: int = 256,
    log: Callable[[str], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Evaluate every benchmark; returns name → summary (see the module docstring).

    `chunk_size` is the number of trajectories rolled out (and then saved) at a time.
    """
    reward_cfg = reward_cfg or RewardConfig()
    graders = graders or Graders(reward_cfg, code_execution=eval_cfg.code_execution)
    settings = settings_from_config(
        rollout_cfg,
        tools=tools_cfg,
        max_context_length=max_context_length,
        seed=seed,
        sampling=eval_cfg,
    )
    loop = AgentLoop(engine, tokenizer, tools, settings)
    fingerprint = _fingerprint(eval_cfg, rollout_cfg, tools, seed)
    summaries = {}
    for name, samples in benchmarks.items():
        bench_dir = Path(out_dir) / name if out_dir is not None else None
        execution = code_execution(samples, graders)
        settings_used = {**fingerprint, "code_execution": execution} if execution else fingerprint
        records = _run_benchmark(
            name, samples, loop, graders, eval_cfg.k, bench_dir, settings_used, chunk_size, log
        )
        summary = summarize(name, samples, records, eval_cfg, reward_cfg.math_mode, execution)
        summaries[name] = summary
        if bench_dir is not None:
            _write_json(bench_dir / "summary.json", summary)
    if out_dir is not None:
        _write_json(Path(out_dir) / "summary.json", summaries)
        (Path(out_dir) / "summary.md").write_text(markdown_table(summaries), encoding="utf-8")
    return summaries


def _fingerprint(
    eval_cfg: EvalConfig, rollout_cfg: RolloutConfig, tools: list[Any], seed: int
) -> dict[str, Any]:
    """The settings a resumed evaluation must share with the records it continues."""
    keys = ("max_turns", "max_response_length", "max_tokens_per_turn")
    truncation = [t.max_output_chars for t in tools if hasattr(t, "max_output_chars")]
    return {
        "k": eval_cfg.k,
        "temperature": eval_cfg.temperature,
        "top_p": eval_cfg.top_p,
        "seed": seed,
        **{key: getattr(rollout_cfg, key) for key in keys},
        "tool_output_max_chars": truncation[0] if truncation else None,
    }


def _run_benchmark(
    name: str,
    samples: list[Sample],
    loop: AgentLoop,
    graders: Graders,
    k: int,
    bench_dir: Path | None,
    fingerprint: dict[str, Any],
    chunk_size: int,
    log: Callable[[str], None] | None,
) -> dict[str, list[dict[str, Any]]]:
    """Sample id → its k records, from disk where finished and from new rollouts otherwise."""
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        duplicates = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"benchmark {name}: duplicate sample ids {duplicates}")
    done = _resume(bench_dir, fingerprint, k) if bench_dir is not None else {}
    todo = [s for s in samples if s.id not in done]
    if log:
        log(f"{name}: {len(samples)} problems, {len(samples) - len(todo)} already done, k={k}")
    per_chunk = max(1, chunk_size // k)
    for start in range(0, len(todo), per_chunk):
        chunk = todo[start : start + per_chunk]
        trajectories = loop.run(chunk, n=k)
        grades = run_sync(_grade_all(trajectories, graders))
        new = [
            _record(name, t, g, loop.tokenizer, graders.config.math_mode)
            for t, g in zip(trajectories, grades, strict=True)
        ]
        for record in new:
            done.setdefault(record["sample_id"], []).append(record)
        if bench_dir is not None:
            _append_jsonl(bench_dir / "samples.jsonl", new)
        if log:
            log(f"{name}: {min(start + per_chunk, len(todo))}/{len(todo)} problems rolled out")
    return done


async def _grade_all(trajectories: list[Trajectory], graders: Graders) -> list[dict[str, Grade]]:
    async def modes_of(traj: Trajectory) -> dict[str, Grade]:
        modes = graders.modes(traj.sample.data_source)
        grades = await asyncio.gather(
            *(graders.agrade(traj.sample, traj.final_text, m) for m in modes)
        )
        return dict(zip(modes, grades, strict=True))

    return list(await asyncio.gather(*(modes_of(t) for t in trajectories)))


def _record(
    name: str, traj: Trajectory, grades: dict[str, Grade], tokenizer, primary: str
) -> dict[str, Any]:
    main = grades.get(primary) or next(iter(grades.values()))
    truth = traj.sample.ground_truth
    return {
        "benchmark": name,
        "sample_id": traj.sample.id,
        "group_index": traj.group_index,
        "data_source": traj.sample.data_source,
        "ground_truth": truth if isinstance(truth, str | int | float) else None,
        "prompt": tokenizer.decode(traj.prompt_ids),
        "response": tokenizer.decode(traj.response_ids),
        "pred": main.pred,
        "score": main.score,
        "acc": main.acc,
        "grades": {mode: g.to_dict() for mode, g in grades.items()},
        "stop_reason": traj.stop_reason,
        "response_length": traj.response_length,
        "num_turns": len(traj.turns),
        "num_tool_calls": traj.num_tool_calls,
        "num_successful_tool_calls": traj.num_successful_tool_calls,
        "tool_calls": [
            {"name": c.name, "arguments": c.arguments, "status": c.status, "result": c.result}
            for c in traj.tool_calls
        ],
    }


# ----------------------------------------------------------------------------------------------
# Resuming


def _resume(bench_dir: Path, fingerprint: dict[str, Any], k: int) -> dict[str, list[dict]]:
    """Finished problems from a previous run; partial ones are dropped from the file."""
    bench_dir.mkdir(parents=True, exist_ok=True)
    run_file, samples_file = bench_dir / "run.json", bench_dir / "samples.jsonl"
    if run_file.exists():
        previous = json.loads(run_file.read_text(encoding="utf-8"))
        if previous != fingerprint:
            changed = {key for key in fingerprint if previous.get(key) != fingerprint[key]}
            raise ValueError(
                f"{run_file}: the responses there were sampled with different settings "
                f"({', '.join(f'{c}: {previous.get(c)} → {fingerprint[c]}' for c in sorted(changed))}); "
                "use another output directory, or delete that one to start over"
            )
    else:
        _write_json(run_file, fingerprint)
    groups: dict[str, list[dict]] = {}
    if samples_file.exists():
        # A line cut short by an interrupted write is skipped: its problem is redone.
        for line, record in read_jsonl(samples_file, skip_bad=True):
            if "sample_id" not in record:
                raise ValueError(f"{samples_file}: line {line}: not a toolrl evaluation record")
            groups.setdefault(str(record["sample_id"]), []).append(record)
    done = {sid: rs for sid, rs in groups.items() if len({r["group_index"] for r in rs}) == k}
    if len(done) != len(groups):  # rewrite without the unfinished problems
        _write_jsonl(samples_file, [r for rs in done.values() for r in rs])
    return done


def _append_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ----------------------------------------------------------------------------------------------
# Summaries


def summarize(
    name: str,
    samples: list[Sample],
    records: dict[str, list[dict[str, Any]]],
    eval_cfg: EvalConfig,
    primary: str,
    code_execution: str | None = None,
) -> dict[str, Any]:
    """The benchmark's metrics from its records (see the module docstring and metrics.py)."""
    groups = [sorted(records[s.id], key=lambda r: r["group_index"]) for s in samples]
    flat = [r for group in groups for r in group]
    # A benchmark may mix kinds (math: strict and equivalent; code: one mode); a row without a
    # mode counts with its own main grade there.
    modes = list(dict.fromkeys(mode for r in flat for mode in r["grades"]))
    main_mode = primary if primary in modes else (modes[0] if modes else primary)

    def grade(record: dict[str, Any], mode: str) -> dict[str, Any]:
        grades = record["grades"]
        if mode in grades:
            return grades[mode]
        return grades[primary] if primary in grades else next(iter(grades.values()))

    resamples, seed = eval_cfg.bootstrap_resamples, eval_cfg.bootstrap_seed
    metrics: dict[str, float] = {}
    intervals: dict[str, list[float]] = {}
    for mode in modes:
        problems = [
            (
                [float(grade(r, mode)["acc"]) for r in group],
                [normalize_vote(grade(r, mode)["pred"]) for r in group],
            )
            for group in groups
        ]
        values, cis = benchmark_metrics(problems, resamples, seed)
        prefixes = ["acc", f"acc_{mode}"] if mode == main_mode else [f"acc_{mode}"]
        for prefix in prefixes:
            metrics.update({f"{prefix}/{key}": v for key, v in values.items()})
            intervals.update({f"{prefix}/{key}": v for key, v in cis.items()})
    n = max(len(flat), 1)
    metrics[f"score/mean@{eval_cfg.k}"] = sum(r["score"] for r in flat) / n
    metrics.update(
        tool_use_metrics([(c["name"], c["status"]) for c in r["tool_calls"]] for r in flat)
    )
    metrics["response_length/mean"] = sum(r["response_length"] for r in flat) / n
    stop_reasons = summarize_counts(r["stop_reason"] for r in flat)
    for reason, count in stop_reasons.items():
        metrics[f"stop_reason/{reason}"] = count / n
    summary = {
        "benchmark": name,
        "num_problems": len(groups),
        "k": eval_cfg.k,
        "primary_mode": main_mode,
        "modes": modes,
        "metrics": metrics,
        "intervals": intervals,
        "stop_reasons": stop_reasons,
    }
    if code_execution:
        summary["code_execution"] = code_execution
    return summary


def code_execution(samples: list[Sample], graders: Graders) -> str | None:
    """How a benchmark's code tests run: `official` or `isolated` (assert tests such as
    HumanEval's always run isolated), both joined by `+` if it has both; None without code."""
    executions = set()
    for sample in samples:
        with contextlib.suppress(ValueError):  # grading reports a malformed sample, named
            executions.add(graders.code_execution_for(sample))
    return "+".join(sorted(e for e in executions if e)) or None


def mode_label(summary: dict[str, Any]) -> str:
    """The grading mode of a summary, with the code execution that produced it if any."""
    execution = summary.get("code_execution")
    mode = summary["primary_mode"]
    return f"{mode} ({execution} execution)" if execution else mode


def markdown_table(summaries: dict[str, dict[str, Any]]) -> str:
    """One row per benchmark: accuracy with 95% intervals, tool use, length, stop reasons."""
    header = (
        "| benchmark | problems | mode | avg@k | pass@1 | pass@k | maj@k | other mode avg@k "
        "| tool calls / response | tool success | mean length | stop reasons |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for name, s in summaries.items():
        m, ci, k = s["metrics"], s["intervals"], s["k"]

        def cell(key: str, m=m, ci=ci) -> str:
            if key not in m:
                return "–"
            low_high = ci.get(key)
            return f"{m[key]:.3f}" + (
                f" [{low_high[0]:.3f}, {low_high[1]:.3f}]" if low_high else ""
            )

        others = [mode for mode in s["modes"] if mode != s["primary_mode"]]
        other = "; ".join(f"{mode} {m[f'acc_{mode}/avg@{k}']:.3f}" for mode in others) or "–"
        stops = ", ".join(f"{r} {c}" for r, c in s["stop_reasons"].items())
        rows.append(
            f"| {name} | {s['num_problems']} | {mode_label(s)} | {cell(f'acc/avg@{k}')} "
            f"| {cell('acc/pass@1')} | {cell(f'acc/pass@{k}')} | {cell(f'acc/maj@{k}')} "
            f"| {other} | {m['tool/calls_per_response']:.2f} | {m['tool/success_rate']:.2f} "
            f"| {m['response_length/mean']:.0f} | {stops} |"
        )
    return f"k = responses per problem; intervals are 95% bootstrap over problems.\n\n{header}" + "\n".join(rows) + "\n"  # fmt: skip
