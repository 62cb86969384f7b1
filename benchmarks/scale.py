"""Scale-out on this machine, side by side in one run: 1 vs 2 Ray workers, and the Ray path's
overhead against the single-process path.

1. Rollout throughput (sampled tokens/s) of `RayRollout` over 1 and 2 rollout workers running
   the embedded tiny model, on the same prompts, seeds and settings; the ratio 2 / 1.
2. Sandbox throughput (calls/s) of `PooledTool` over 1 and 2 sandbox workers running the real
   code interpreter (`print(1)`, 8 calls in flight); the ratio 2 / 1.
3. One RL step (the tiny recipe of the tests, 2 prompts × 4 rollouts) single-process vs
   `cluster.backend=ray` with 1 training rank and 1 rollout worker (the same work: what Ray
   adds) and with 2 + 2; the warm step's `timing/step` and the run's wall time with start-up.

Usage: python benchmarks/scale.py [--prompts 8] [--n 4] [--tokens 64] [--calls 48]
On a 2-core machine 2 workers can at best double throughput; other load on the machine makes
the ratio lower. Timings are comparable only within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import ray

from toolrl.config import load_config
from toolrl.distributed.launch import fit_on_backend
from toolrl.distributed.rollout import RayRollout, RolloutWorker
from toolrl.distributed.sandbox import PooledTool
from toolrl.models.tiny import write_tiny
from toolrl.tools.code_interpreter import CodeInterpreter
from toolrl.trainers.rl_setup import load_prompts
from toolrl.trainers.tracking import read_metrics


def write_data(root: Path, count: int) -> Path:
    path = root / "train.jsonl"
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Add {i} and {i + 1}."}],
            "data_source": "toy",
            "reward_model": {"ground_truth": str(2 * i + 1)},
        }
        for i in range(count)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_config(root: Path, args, *extra: str):
    return load_config(
        None,
        [
            f"model.path={root / 'tiny'}",
            "model.dtype=float32",
            f"data.train_files=[{root / 'train.jsonl'}]",
            "data.train_batch_size=2",
            "rollout.engine=hf",
            f"rollout.n={args.n}",
            f"rollout.max_response_length={args.tokens}",
            "rollout.max_turns=2",
            f"reward.overlong_buffer={args.tokens // 4}",
            "trainer.ppo_mini_batch_size=1",
            "trainer.micro_batch_size=4",
            f"trainer.output_dir={root / 'runs'}",
            "trainer.save_every=0",
            "trainer.val_every=0",
            "trainer.loggers=[jsonl]",
            "cluster.gpus_per_node=0",
            *extra,
        ],
    )


def rollout_throughput(config, samples, n: int, workers: int) -> float:
    """Sampled tokens per second over `workers` rollout workers (after one warm-up run)."""

    def start():
        return ray.remote(RolloutWorker).options(num_cpus=0.01).remote(config.to_dict(), None)

    rollout = RayRollout(start, workers)
    try:
        rollout.run(samples[:workers], 1, seed=1)  # warm-up: first forwards allocate
        started = time.perf_counter()
        trajectories = rollout.run(samples, n, seed=1)
        wall = time.perf_counter() - started
    finally:
        rollout.shutdown()
    return sum(sum(t.loss_mask) for t in trajectories) / wall


def sandbox_throughput(config, workers: int, calls: int) -> float:
    """Code-interpreter calls per second over a pool of `workers` (8 calls in flight)."""
    tools_cfg = config.tools
    pool = PooledTool.start(lambda: CodeInterpreter.from_config(tools_cfg), workers, num_cpus=0.01)

    async def run(k: int) -> None:
        slots = asyncio.Semaphore(8)

        async def one():
            async with slots:
                result = await pool.call({"code": "print(1)"})
                assert result.status == "success", result.text

        await asyncio.gather(*(one() for _ in range(k)))

    asyncio.run(run(8))  # warm-up: sandbox start-up
    started = time.perf_counter()
    asyncio.run(run(calls))
    wall = time.perf_counter() - started
    for worker in pool.workers:
        ray.kill(worker)
    return calls / wall


def rl_step_times(config, name: str, backend: str, ranks: int = 1, workers: int = 1) -> dict:
    """Wall time of a 2-step run (with start-up) and its warm step's `timing/step`."""
    config = dataclasses.replace(
        config,
        trainer=dataclasses.replace(config.trainer, run_name=name, total_steps=2),
        cluster=dataclasses.replace(
            config.cluster, backend=backend, ranks_per_node=ranks, rollout_workers=workers
        ),
    )
    started = time.perf_counter()
    run_dir = fit_on_backend(config, tools=[])
    wall = time.perf_counter() - started
    metrics = read_metrics(run_dir)
    return {
        "wall": wall,
        "step": metrics[-1]["timing/step"],
        "rollout": metrics[-1]["timing/rollout"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--calls", type=int, default=48)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_tiny(root / "tiny", seed=0)
        write_data(root, max(args.prompts, 2))
        config = tiny_config(root, args)
        from toolrl.models.tiny import build_tokenizer

        samples, _ = load_prompts(config, build_tokenizer(), [])
        samples = samples[: args.prompts]
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        print(f"machine: {os.cpu_count()} CPUs; ray {ray.__version__}; tiny model", flush=True)

        tokens = {w: rollout_throughput(config, samples, args.n, w) for w in (1, 2)}
        print(f"\nrollout ({args.prompts} prompts x {args.n}, <= {args.tokens} tokens each)")
        print(f"  1 worker : {tokens[1]:8.1f} sampled tokens/s")
        print(
            f"  2 workers: {tokens[2]:8.1f} sampled tokens/s   ratio 2/1 = {tokens[2] / tokens[1]:.2f}"
        )

        calls = {w: sandbox_throughput(config, w, args.calls) for w in (1, 2)}
        print(f"\nsandbox ({args.calls} x print(1), 8 in flight)")
        print(f"  1 worker : {calls[1]:8.1f} calls/s")
        print(f"  2 workers: {calls[2]:8.1f} calls/s   ratio 2/1 = {calls[2] / calls[1]:.2f}")

        local = rl_step_times(config, "local", "local")
        ray1 = rl_step_times(config, "ray1", "ray", 1, 1)
        ray2 = rl_step_times(config, "ray2", "ray", 2, 2)
        print("\nRL step (2 prompts x 4 rollouts); warm step = step 2's timing/step")
        print(f"  {'path':<22}{'warm step s':>12}{'rollout s':>11}{'2-step run s':>14}")
        for label, t in (
            ("single process", local),
            ("ray 1 rank + 1 worker", ray1),
            ("ray 2 ranks + 2 workers", ray2),
        ):
            print(f"  {label:<22}{t['step']:>12.2f}{t['rollout']:>11.2f}{t['wall']:>14.1f}")
        print(
            f"  ray overhead (1+1 vs single process): warm step x{ray1['step'] / local['step']:.2f}, "
            f"+{ray1['step'] - local['step']:.2f} s; run with start-up +{ray1['wall'] - local['wall']:.1f} s"
        )
        ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
