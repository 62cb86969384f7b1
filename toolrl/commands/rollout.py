"""`toolrl rollout --model PATH --data FILE --n 4 --out rollouts.jsonl`: run the agent loop."""

from __future__ import annotations

import argparse

MODEL_HELP = (
    "local HF checkpoint directory; with rollout.engine=openai or scripted, the tokenizer's "
    "directory (`tiny`: the embedded one)"
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "rollout",
        help="roll out a model with its tools over RL samples",
        description=(
            "Read samples in the Open-AgentRL / verl RL schema (jsonl or parquet), run n rollouts "
            "each through the agent loop with the tools `tools.enabled` chooses (default: the "
            "sandboxed code interpreter), and write one JSON "
            "line per trajectory: texts, token-level mask spans, tool calls, stop reasons."
        ),
    )
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    parser.add_argument("--data", required=True, help="RL samples (.jsonl or .parquet)")
    parser.add_argument("--out", required=True, help="output .jsonl")
    parser.add_argument("--n", type=int, default=4, help="rollouts per sample (default 4)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N samples (0 = all)")
    parser.add_argument("--recipe", default=None, help="recipe whose `rollout` section to use")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. rollout.max_turns=4")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import os
    import sys
    import time
    from pathlib import Path

    from toolrl.config import ConfigError, load_config
    from toolrl.data.io import DataError, write_jsonl
    from toolrl.data.rl import load_rl_samples
    from toolrl.rollout.agent_loop import AgentLoop, settings_from_config
    from toolrl.rollout.engines.factory import EngineError
    from toolrl.rollout.records import trajectory_record

    if args.n < 1 or args.limit < 0:
        print(
            f"error: --n must be >= 1 and --limit >= 0 (got {args.n}, {args.limit})",
            file=sys.stderr,
        )
        return 2
    try:
        config = load_config(args.recipe, args.overrides)
        samples = load_rl_samples(args.data)
        if not samples:
            raise DataError(f"{args.data}: no rows (an empty data file): nothing to roll out")
        stack = load_rollout_stack(
            args.model, config, device=args.device, seed=args.seed, purpose="toolrl rollout"
        )
    except (ConfigError, DataError, EngineError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.limit:
        samples = samples[: args.limit]
    tokenizer, engine, tools, context = stack
    settings = settings_from_config(
        config.rollout, tools=config.tools, max_context_length=context, seed=args.seed
    )
    started = time.monotonic()
    try:
        trajectories = AgentLoop(engine, tokenizer, tools, settings).run(samples, n=args.n)
    except ValueError as err:  # a row's tools (extra_info.tools_kwargs) do not fit the run's
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        tools.close()
    # Written under a temporary name and renamed: a crash never leaves a half-written --out.
    partial = Path(f"{args.out}.partial")
    write_jsonl(partial, [trajectory_record(t, tokenizer) for t in trajectories])
    os.replace(partial, args.out)
    elapsed = time.monotonic() - started
    reasons: dict[str, int] = {}
    for t in trajectories:
        reasons[t.stop_reason] = reasons.get(t.stop_reason, 0) + 1
    calls = sum(t.num_tool_calls for t in trajectories)
    ok = sum(t.num_successful_tool_calls for t in trajectories)
    print(
        f"wrote {len(trajectories)} trajectories to {args.out} in {elapsed:.1f}s; "
        f"tool calls {calls} ({ok} succeeded); stop reasons {reasons}"
    )
    return 0


def load_rollout_stack(
    model_path: str, config, *, device: str = "cpu", seed: int = 0, purpose: str = ""
):
    """(tokenizer, engine, tools, context length) for the engine `rollout.engine` names: the
    wiring shared by `toolrl rollout` and `toolrl eval`. A server's API key comes from
    OPENAI_API_KEY (never from a config, which is written into run directories)."""
    import os

    from toolrl.rollout.engines.factory import build_engine, load_tokenizer
    from toolrl.tools.registry import build_tools

    tokenizer = load_tokenizer(model_path)
    tools = build_tools(config.tools)
    try:
        engine = build_engine(
            config,
            model_path,
            tokenizer=tokenizer,
            device=device,
            seed=seed,
            tool_schemas=tools.schemas,
            purpose=purpose,
            api_key=os.environ.get("OPENAI_API_KEY"),
        )
    except BaseException:
        tools.close()
        raise
    return tokenizer, engine, tools, engine.max_context_length
