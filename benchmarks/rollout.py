"""Agent-loop throughput against plain generation, side by side in one run.

A random tiny model never writes a tool call, so the loop is driven by a script that decides
each turn's text (some reasoning of varying length, then a real tool call; the last turn an
answer) while the tiny model still decodes every one of those tokens through the continuous-
batching HF engine: the compute is real, only the choice of tokens is scripted.

Compared, with the same engine and the same number of sampled tokens per trajectory:
  plain      one generation per trajectory, no tools, as many tokens as the loop sampled;
  sandbox    the agent loop with the real sandboxed code interpreter (a few ms a call);
  instant    the agent loop with a tool that answers at once (the loop's own overhead);
  200 ms     the agent loop with a tool that takes 200 ms.
Targets: loop throughput >= 0.85x plain with the real sandbox; with 200 ms tools, wall time
well below the lockstep bound (a lockstep loop adds turns x 200 ms to every batch).

Each thread count (`--threads`) is a setting of its own, every mode measured in it. By default:
every core, then every core but one. The sandbox runs on the CPU, ~10 ms of CPU a run: where
decoding takes every core, that CPU is taken from decoding (on a 2-core host no loop can hide
it); leaving it a core is what `toolrl demo` does for its sandboxed rollouts. The last line
compares the fastest sandboxed loop with the fastest plain generation, whatever their settings.

There are more trajectories than decoding slots (64 and 16 by default), as in an RL step: a
slot a trajectory leaves for its tool call is refilled by another trajectory at once. (With
fewer trajectories than slots no loop can hide a tool's latency: each trajectory's own calls
lie on its own critical path.)

Run: .venv/bin/python benchmarks/rollout.py [--trajectories 16] [--turns 3] [--threads 2,1]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

from toolrl.chat import encode, end_of_turn_token
from toolrl.config import ToolsConfig
from toolrl.models.tiny import write_tiny
from toolrl.rollout.agent_loop import AgentLoop, LoopSettings
from toolrl.rollout.engines import hf as hf_engine
from toolrl.rollout.engines.base import GenerationRequest
from toolrl.rollout.engines.hf import HFEngine
from toolrl.tools.base import ToolResult
from toolrl.tools.code_interpreter import CodeInterpreter
from toolrl.types import Sample


class ScriptedTokens:
    """Continuous-batching engine whose tokens follow a script: the inner HF engine runs its
    forward and its sampler as usual, then the script's token replaces the sampled one. So the
    model computes (and caches) exactly the tokens that are returned, and the loop's next turn
    can reuse that cache like a real one."""

    def __init__(self, inner: HFEngine, tokenizer, policy):
        self.inner, self.tokenizer, self.policy = inner, tokenizer, policy
        self.eot = tokenizer.convert_tokens_to_ids(end_of_turn_token(tokenizer))

    def serve(self, take, done):
        scripts = {}  # id(forced request) -> (the request, its script's remaining tokens)

        def take_forced(room):
            forced = []
            for key, request in take(room):
                context = self.tokenizer.decode(request.prompt_ids)
                ids = [*encode(self.tokenizer, self.policy(context, request.seed)), self.eot]
                ids = ids[: request.max_new_tokens]
                stop = (self.eot,) if ids[-1] == self.eot else ()
                request = dataclasses.replace(request, max_new_tokens=len(ids), stop_token_ids=stop)
                scripts[id(request)] = (request, iter(ids))
                forced.append((key, request))
            return forced

        def forced_sample(logits, requests, noises):
            real_sample(logits, requests, noises)  # the real sampler's work, then the script
            chosen = torch.tensor([next(scripts[id(r)][1]) for r in requests])
            temperature = torch.tensor([r.temperature for r in requests])[:, None]
            logprobs = torch.log_softmax(logits / temperature, dim=-1)
            return chosen, logprobs.gather(-1, chosen[:, None]).squeeze(-1)

        real_sample = hf_engine.sample
        hf_engine.sample = forced_sample
        try:
            self.inner.serve(take_forced, done)
        finally:
            hf_engine.sample = real_sample


def make_policy(turns: int, seed: int, per_request: bool = False):
    """Turn k of a trajectory: 20-80 characters of reasoning, then a tool call; then an answer.
    `per_request`: the turn also depends on the request's seed (rollouts of one prompt differ)."""

    def policy(context: str, request_seed: int | None = None) -> str:
        done_turns = context.count("<tool_response>")
        key = context.split("Problem ", 1)[1].split(":", 1)[0] if "Problem " in context else "0"
        if per_request:
            key += f"/{request_seed}"
        rng = random.Random(f"{seed}/{key}/{context.count('<|im_start|>assistant')}/{done_turns}")
        thought = "Let me work this out. " * rng.randint(1, 4)
        if done_turns >= turns:
            return thought + "The answer is \\boxed{42}."
        code = f"print({rng.randint(10, 99)} * {rng.randint(10, 99)})"
        return (
            thought
            + "\n<tool_call>\n"
            + json.dumps({"name": "code_interpreter", "arguments": {"code": code}})
            + "\n</tool_call>"
        )

    return policy


class SlowTool:
    """The code interpreter's schema, answering after a fixed delay."""

    name = "code_interpreter"

    def __init__(self, schema, delay_s: float):
        self.schema, self.delay_s = schema, delay_s

    async def call(self, arguments):
        await asyncio.sleep(self.delay_s)
        return ToolResult("1234", "success", self.delay_s)


def run_loop(engine, tokenizer, tool, samples) -> tuple[float, list]:
    agent = AgentLoop(
        engine, tokenizer, [tool], LoopSettings(max_response_length=4096, max_turns=16)
    )
    start = time.perf_counter()
    trajectories = agent.run(samples)
    return time.perf_counter() - start, trajectories


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trajectories", type=int, default=64)
    parser.add_argument(
        "--batch-size", type=int, default=16, help="the engine's decoding slots (max_batch_size)"
    )
    parser.add_argument("--turns", type=int, default=3, help="tool calls per trajectory")
    parser.add_argument(
        "--threads",
        default=f"{os.cpu_count()},{max(1, (os.cpu_count() or 2) - 1)}",
        help="comma-separated torch thread counts to measure, each a setting of its own "
        "(default: every core, then every core but one, which toolrl demo leaves the sandbox)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of each mode")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = write_tiny(Path(tmp) / "tiny", seed=0)
        inner = HFEngine.from_path(str(model_dir), max_batch_size=args.batch_size)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    engine = ScriptedTokens(inner, tokenizer, make_policy(args.turns, seed=0))
    samples = [
        Sample(f"p{i}", [{"role": "user", "content": f"Problem {i}: multiply."}], "bench", "42")
        for i in range(args.trajectories)
    ]
    sandbox_tool = CodeInterpreter.from_config(ToolsConfig())
    results = {}
    for threads in dict.fromkeys(int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        results[threads] = measure(args, engine, inner, tokenizer, sandbox_tool, samples)
    sandbox_tool.sandbox.close()
    plain_best = min(r["plain"] for r in results.values())
    loop_best = min(r["sandbox"] for r in results.values())
    print(
        f"\nfastest loop with the real sandbox ({loop_best:.2f}s) vs fastest plain generation "
        f"({plain_best:.2f}s), each at its best thread count: {plain_best / loop_best:.2f}x"
    )


def measure(args, engine, inner, tokenizer, sandbox_tool, samples) -> dict[str, float]:
    """Every mode at the current torch thread count, interleaved; prints a table and ratios and
    returns each mode's best wall time."""
    threads = torch.get_num_threads()
    load_before = os.getloadavg()[0]
    run_loop(engine, tokenizer, sandbox_tool, samples[:2])  # warm up the sandbox and the engine
    _, trajectories = run_loop(engine, tokenizer, sandbox_tool, samples)
    # Plain generation: each trajectory's prompt, and exactly as many sampled tokens as the
    # loop sampled for it (trajectories differ in length in both runs).
    requests = [
        GenerationRequest(t.prompt_ids, sum(t.loss_mask), stop_token_ids=(), seed=i)
        for i, t in enumerate(trajectories)
    ]

    def plain():
        start = time.perf_counter()
        inner.generate(requests)
        return time.perf_counter() - start, trajectories

    runs = {
        "plain": plain,
        "sandbox": lambda: run_loop(engine, tokenizer, sandbox_tool, samples),
        "instant": lambda: run_loop(engine, tokenizer, SlowTool(sandbox_tool.schema, 0), samples),
        "slow": lambda: run_loop(engine, tokenizer, SlowTool(sandbox_tool.schema, 0.2), samples),
    }
    # Interleaved repeats, best wall time of each: another process's burst on a shared machine
    # slows one repeat, not every repeat of one mode.
    walls: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            wall, produced = run()
            walls[name].append(wall)
            assert [sum(t.loss_mask) for t in produced] == [r.max_new_tokens for r in requests]
    plain_wall, sandbox_wall, instant_wall, slow_wall = (min(walls[name]) for name in runs)
    sampled = sum(r.max_new_tokens for r in requests)  # every mode, as asserted above
    calls = sum(t.num_tool_calls for t in trajectories)
    per_trajectory = sampled // len(samples)

    # A lockstep loop runs the trajectories a batch of slots at a time and, every turn, waits
    # for the batch's 200 ms calls before anyone decodes on: turns x 0.2 s added per batch to
    # the loop with instant tools.
    batches = -(-len(samples) // args.batch_size)
    added = batches * args.turns * 0.2
    lockstep_bound = instant_wall + added
    print(
        f"\nbest of {args.repeats} interleaved runs, {threads} torch thread(s); "
        f"load average before: {load_before:.2f}"
    )
    print(
        f"{len(samples)} trajectories ({args.batch_size} decoding slots) x {args.turns} tool turns + answer, {per_trajectory} sampled tokens each on average, tiny Qwen3, CPU"
    )
    print(f"{'':28}{'wall (s)':>10}{'tokens/s':>10}")
    print(f"{'plain generation':28}{plain_wall:>10.2f}{sampled / plain_wall:>10.0f}")
    print(
        f"{'loop, real sandbox':28}{sandbox_wall:>10.2f}{sampled / sandbox_wall:>10.0f}   ({calls} sandbox runs)"
    )
    print(f"{'loop, instant tool':28}{instant_wall:>10.2f}{sampled / instant_wall:>10.0f}")
    print(f"{'loop, 200 ms tool':28}{slow_wall:>10.2f}{sampled / slow_wall:>10.0f}")
    ratio = (sampled / sandbox_wall) / (sampled / plain_wall)
    print(
        f"loop/plain throughput with the real sandbox: {ratio:.2f}x (target >= 0.85) {'OK' if ratio >= 0.85 else 'BELOW TARGET'}"
    )
    print(
        f"200 ms tools: {slow_wall:.2f}s vs lockstep bound {lockstep_bound:.2f}s "
        f"(instant-tool loop + {batches} batches x {args.turns} turns x 0.2 s); tool time hidden: "
        f"{(lockstep_bound - slow_wall) / added:.0%} of the {added:.1f}s a lockstep loop adds"
    )
    print(f"the loop's own cost (instant tool / plain): {plain_wall / instant_wall:.2f}x")
    return {"plain": plain_wall, "sandbox": sandbox_wall, "instant": instant_wall}


if __name__ == "__main__":
    main()
