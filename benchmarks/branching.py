"""Branching rollouts (ARPO) against independent samples (GRPO), and branches that reuse their
parent's keys and values against branches that prefill their prefix again: one run, interleaved.

The tiny model decodes every token through the continuous-batching HF engine while a script
chooses them (benchmarks/rollout.py's `ScriptedTokens`: reasoning, a tool call per turn, then an
answer, varying with each request's seed), so the compute is real and every trajectory calls its
tool; the tool answers at once, so the timings are the rollout's own. Each mode produces the same number of trajectories, rollout.n
per prompt:
  grpo          n independent samples per prompt (rollout.branching.mode=none);
  arpo reuse    ARPO with α = 1, β = 0 (every branch point branches, so the budget is always
                spent on branches): N = n/2 global samples, n/2 branches, each branch lending its
                parent's keys and values up to the branch point (rollout.branching.reuse_prefix);
  arpo prefill  the same tree, each branch prefilling its prefix again (reuse_prefix=false).
A branch does not sample its parent's prefix again: ARPO's trajectories sample fewer tokens for
the same group size (the "sampled" column).

Run: .venv/bin/python benchmarks/branching.py [--prompts 2] [--n 8] [--turns 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from rollout import ScriptedTokens, SlowTool, make_policy
from transformers import AutoTokenizer

from toolrl.chat import CODE_INTERPRETER_SCHEMA
from toolrl.config.schema import BranchingConfig
from toolrl.models.tiny import write_tiny
from toolrl.rollout.agent_loop import AgentLoop, LoopSettings
from toolrl.rollout.engines.base import GenerationRequest
from toolrl.rollout.engines.hf import HFEngine
from toolrl.types import Sample

MODES = {
    "grpo": None,
    "arpo reuse": BranchingConfig(mode="arpo", branch_probability=1.0, entropy_weight=0.0),
    "arpo prefill": BranchingConfig(
        mode="arpo", branch_probability=1.0, entropy_weight=0.0, reuse_prefix=False
    ),
}


class Counting:
    """A continuous engine that counts the tokens it sampled (a branch does not sample the
    prefix it copied, so the trajectories' own masks would count it twice)."""

    def __init__(self, inner):
        self.inner, self.sampled = inner, 0

    def serve(self, take, done):
        def counted(key, result):
            self.sampled += len(result.token_ids)
            done(key, result)

        self.inner.serve(take, counted)


def run(engine, inner, tokenizer, samples, n, branching) -> dict[str, float]:
    """One rollout step; its wall time, sampled tokens, and the prefix cache's reuse."""
    inner.prefixes.clear()  # nothing reused across runs: each starts cold
    hits, reused, sampled = inner.prefixes.hits, inner.prefixes.reused_tokens, engine.sampled
    settings = LoopSettings(max_response_length=4096, max_turns=16, branching=branching)
    loop = AgentLoop(engine, tokenizer, [SlowTool(CODE_INTERPRETER_SCHEMA, 0.0)], settings)
    start = time.perf_counter()
    trajectories = loop.run(samples, n, seed=0)
    wall = time.perf_counter() - start
    assert len(trajectories) == n * len(samples)
    return {
        "wall": wall,
        "sampled": engine.sampled - sampled,
        "branches": loop.branch_metrics.get("rollout/branch/count", 0.0),
        "hits": inner.prefixes.hits - hits,
        "reused": inner.prefixes.reused_tokens - reused,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--n", type=int, default=8, help="rollout.n: trajectories per prompt")
    parser.add_argument("--turns", type=int, default=2, help="tool calls per trajectory")
    parser.add_argument("--batch-size", type=int, default=64, help="decoding slots")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of each mode")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = write_tiny(Path(tmp) / "tiny", seed=0)
        inner = HFEngine.from_path(str(model_dir), max_batch_size=args.batch_size)
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    engine = Counting(
        ScriptedTokens(inner, tokenizer, make_policy(args.turns, 0, per_request=True))
    )
    samples = [
        Sample(f"p{i}", [{"role": "user", "content": f"Problem {i}: multiply."}], "bench", "42")
        for i in range(args.prompts)
    ]
    run(engine, inner, tokenizer, samples[:2], 2, None)  # warm up
    load_before = os.getloadavg()[0]
    results: dict[str, list[dict[str, float]]] = {name: [] for name in MODES}
    for _ in range(args.repeats):  # interleaved: a burst elsewhere slows one repeat of each
        for name, branching in MODES.items():
            results[name].append(run(engine, inner, tokenizer, samples, args.n, branching))
    median = {
        name: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for name, runs in results.items()
    }
    print(
        f"\n{args.prompts} prompts x n={args.n}, {args.turns} tool turns + answer, tiny Qwen3 "
        f"on CPU, {args.threads} torch thread(s), {args.batch_size} decoding slots; median of "
        f"{args.repeats} interleaved runs; load average before: {load_before:.2f}"
    )
    print(f"{'':14}{'wall (s)':>10}{'sampled':>10}{'tok/s':>8}{'branches':>10}{'KV reused':>11}")
    for name, m in median.items():
        print(
            f"{name:14}{m['wall']:>10.2f}{m['sampled']:>10.0f}{m['sampled'] / m['wall']:>8.0f}"
            f"{m['branches']:>10.0f}{m['reused']:>11.0f}"
        )
    grpo, reuse, prefill = (median[name]["wall"] for name in MODES)
    print(f"arpo reuse / grpo wall:          {reuse / grpo:.2f}x")
    print(f"arpo prefill / arpo reuse wall:  {prefill / reuse:.2f}x (what re-prefilling costs)")
    branches = int(median["arpo reuse"]["branches"])
    lent = median["arpo reuse"]["reused"] - median["arpo prefill"]["reused"]
    if branches and lent > 0:  # the re-prefill alone, without the rest of the step's noise
        length = int(lent / branches)
        inner.prefixes.clear()
        requests = [GenerationRequest([5 + i % 200] * length, 1, seed=i) for i in range(branches)]
        start = time.perf_counter()
        inner.generate(requests)
        alone = time.perf_counter() - start
        print(
            f"prefilling the {branches} branches' prefixes ({length} tokens each) alone: "
            f"{alone:.3f}s, {alone / reuse:.1%} of the arpo step"
        )


if __name__ == "__main__":
    main()
