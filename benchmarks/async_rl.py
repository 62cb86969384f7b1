"""Synchronous against asynchronous RL (k = 1, k = 2) with a long-tailed tool, side by side.

The tool answers after a lognormal delay with median 0.3 s and 1% of calls >= 5 s (as slow
programs and search APIs behave): μ = ln 0.3, σ = (ln 5 − ln 0.3) / 2.326 ≈ 1.21. The policy is
the demo's SFT model (it calls the tool; run `toolrl demo` first, or pass --model and --data),
trained with the tiny recipe's GRPO-TCR step and toolrl's graders. Each mode runs `--steps`
steps of `--prompts` prompts × `--n` rollouts, the whole `fit` timed (model load included, the
same for every mode); modes are interleaved over `--rounds` rounds, medians and ranges reported.

Printed per mode: trajectories per second, optimizer steps per minute, the ratio to sync, and
from the run's metrics the mean staleness, the partial-trajectory fraction, the time the
trainer waited for its batch, and the time its steps spent on everything else (rewards, π_old,
updates: "busy"; the rest of the wall time is model loading and, under Ray, starting actors). Target (issue 23): async k = 1 >= 1.5x sync.

`--backend ray` runs every mode under `cluster.backend=ray` on a local Ray cluster (started
once, before the timed runs): one gloo training rank and `--workers` rollout workers (actors),
each holding its own engine and a copy of the tool; a mode's time then includes starting its
actors (the same for every mode). Tool calls are counted from the run's metrics
(`tool/calls_per_response`), so the count is the same whichever process made the calls.

`k0` is the asynchronous trainer at k = 0: the synchronous schedule (each batch starts after the
previous update) through the producer's path (its own copy of the weights, batched `generate`
calls). `sync` is the synchronous trainer (the trained model's continuously batching engine).
The ratio to k0 is the gain of running ahead alone; the ratio to sync also contains the
difference between the two generation paths.

Run: .venv/bin/python benchmarks/async_rl.py [--steps 6] [--rounds 2] [--modes sync,k1,k2]
     [--backend ray] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import statistics
import tempfile
import time
from pathlib import Path

from toolrl.chat import CODE_INTERPRETER_SCHEMA
from toolrl.config import load_config
from toolrl.distributed.launch import fit_on_backend
from toolrl.tools.base import ToolResult
from toolrl.trainers.tracking import read_metrics

MEDIAN_S, TAIL_S, TAIL_P_Z = 0.3, 5.0, 2.326  # z of the 99th percentile
SIGMA = (math.log(TAIL_S) - math.log(MEDIAN_S)) / TAIL_P_Z


class LongTailTool:
    """The code interpreter's name and schema; answers "ok" after a lognormal delay."""

    name = "code_interpreter"
    schema = CODE_INTERPRETER_SCHEMA

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.delays: list[float] = []

    async def call(self, arguments):
        delay = self.rng.lognormvariate(math.log(MEDIAN_S), SIGMA)
        self.delays.append(delay)
        await asyncio.sleep(delay)
        return ToolResult("ok\n", "success", elapsed_s=delay)


MODES = {
    "sync": ["trainer.mode=sync"],
    "k0": ["trainer.mode=async", "trainer.max_staleness=0"],
    "k1": ["trainer.mode=async", "trainer.max_staleness=1"],
    "k2": ["trainer.mode=async", "trainer.max_staleness=2"],
}


BACKENDS = {
    "local": lambda args: [],
    "ray": lambda args: [
        "cluster.backend=ray",
        "cluster.gpus_per_node=0",
        "cluster.ranks_per_node=1",
        f"cluster.rollout_workers={args.workers}",
    ],
}


def run_mode(mode: str, args, out: Path, round_index: int) -> dict[str, float]:
    overrides = [
        f"model.path={args.model}",
        f"data.train_files=[{args.data}]",
        f"data.train_batch_size={args.prompts}",
        f"rollout.n={args.n}",
        "trainer.ppo_mini_batch_size=" + str(args.prompts),
        f"trainer.total_steps={args.steps}",
        "trainer.save_every=0",
        "trainer.val_every=0",
        "trainer.loggers=[jsonl]",
        "algorithm.old_log_probs=recompute",  # the same π_old work in every mode
        f"trainer.output_dir={out}",
        f"trainer.run_name={mode}_{round_index}",
        *MODES[mode],
        *BACKENDS[args.backend](args),
    ]
    config = load_config("tiny", overrides)
    tool = LongTailTool(seed=round_index)
    start = time.perf_counter()
    run_dir = fit_on_backend(config, tools=[tool])
    wall = time.perf_counter() - start
    rows = read_metrics(run_dir)
    per_step = args.prompts * args.n
    trajectories = args.steps * per_step
    return {
        "traj_per_s": trajectories / wall,
        "steps_per_min": args.steps / wall * 60,
        "wall_s": wall,
        "calls": round(sum(r["tool/calls_per_response"] * per_step for r in rows)),
        "staleness": statistics.mean(r.get("async/staleness/mean", 0.0) for r in rows),
        "partial": statistics.mean(r.get("async/partial_frac", 0.0) for r in rows),
        "wait_s": sum(r.get("async/trainer_wait_s", r.get("timing/rollout", 0.0)) for r in rows),
        "steps_s": sum(r["timing/step"] for r in rows),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="runs/demo/sft_model")
    parser.add_argument("--data", default="runs/demo/data/train.jsonl")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--modes", default="sync,k0,k1,k2")
    parser.add_argument("--backend", choices=sorted(BACKENDS), default="local")
    parser.add_argument("--workers", type=int, default=2, help="Ray rollout workers")
    args = parser.parse_args()
    if not Path(args.model, "config.json").is_file() or not Path(args.data).is_file():
        print(f"needs the demo's SFT model and data ({args.model}, {args.data}): run toolrl demo")
        return 2
    args.model, args.data = Path(args.model).resolve(), Path(args.data).resolve()  # for actors
    if args.backend == "ray":
        import ray

        ray.init(include_dashboard=False, log_to_driver=False)
    modes = args.modes.split(",")
    results: dict[str, list[dict[str, float]]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as out:
        for r in range(args.rounds):
            for mode in modes:
                results[mode].append(run_mode(mode, args, Path(out), r))
                last = results[mode][-1]
                print(f"round {r} {mode:4s}: {last['wall_s']:.1f} s, {last['calls']} tool calls")
    where = "one process"
    if args.backend == "ray":
        where = f"Ray, 1 training rank, {args.workers} rollout workers"
    print(
        f"\n{where}; {args.steps} steps × {args.prompts} prompts × {args.n} rollouts; tool "
        f"latency lognormal, median {MEDIAN_S} s, 1% >= {TAIL_S} s; {args.rounds} rounds "
        "interleaved"
    )
    print(
        "mode  traj/s (median [range])     steps/min  /sync   /k0  staleness  partial  "
        "trainer wait s  trainer busy s"
    )
    base = statistics.median(x["traj_per_s"] for x in results[modes[0]])
    k0 = statistics.median(x["traj_per_s"] for x in results.get("k0", results[modes[0]]))
    for mode, runs in results.items():
        rates = [x["traj_per_s"] for x in runs]
        median = statistics.median(rates)
        print(
            f"{mode:5s} {median:6.2f} [{min(rates):.2f} .. {max(rates):.2f}]"
            f"      {statistics.median(x['steps_per_min'] for x in runs):6.2f}"
            f"  {median / base:5.2f}x {median / k0:5.2f}x"
            f"  {statistics.median(x['staleness'] for x in runs):9.2f}"
            f"  {statistics.median(x['partial'] for x in runs):7.2f}"
            f"  {statistics.median(x['wait_s'] for x in runs):14.1f}"
            f"  {statistics.median(x['steps_s'] - x['wait_s'] for x in runs):14.1f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
