"""`toolrl demo`: the main job of the README.

Until the embedded end-to-end demo (data → SFT → GRPO-TCR → evaluation) lands, a real smoke
run of the pieces that exist, each on real inputs: build the tiny model, prove its chat template
token-exact, run a program in the sandbox, roll out the model with the sandboxed code
interpreter, grade, and print the paper's recipe.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the embedded demo end to end")
    parser.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    parser.add_argument("--recipe", default="demystify_qwen3_4b", help="recipe to summarise")
    parser.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from rich.console import Console

    console = Console()
    out = Path(args.out)
    started = time.perf_counter()
    stages = [
        ("tiny model", _build_model),
        ("chat template", _check_template),
        ("sandbox", _sandbox),
        ("rollout + grading", _rollout),
        ("paper recipe", lambda out, console: _recipe(args.recipe, console)),
    ]
    for name, stage in stages:
        t0 = time.perf_counter()
        console.rule(f"[bold]{name}")
        if stage(out, console) is False:
            console.print(f"[red]stage {name!r} failed")
            return 1
        console.print(f"[dim]{name}: {time.perf_counter() - t0:.1f}s")
    console.print(
        f"[bold green]demo finished in {time.perf_counter() - started:.1f}s; artefacts in {out}"
    )
    return 0


def _build_model(out, console):
    from toolrl.models.tiny import write_tiny

    if not (out / "tiny" / "config.json").is_file():
        write_tiny(out / "tiny", seed=0)
    console.print(f"tokenizer + tiny Qwen3 checkpoint: {out / 'tiny'}")


def _check_template(out, console):
    from transformers import AutoTokenizer

    from toolrl.template_check import check_template

    report = check_template(AutoTokenizer.from_pretrained(out / "tiny"))
    console.print(report.format())
    return report.ok


def _sandbox(out, console):
    from toolrl.sandbox import Limits, Sandbox

    hostile = "import os\ntry:\n    open('/etc/shadow').read(); print('read it')\nexcept OSError as e:\n    print('blocked:', type(e).__name__)\nprint(sum(range(10**6)))"
    with Sandbox() as sandbox:
        result = sandbox.run_sync(hostile, limits=Limits(timeout_s=5))
    console.print(
        f"isolation {result.isolation}: {result.status}, stdout {result.run_result.stdout.strip()!r}"
    )
    return result.status == "Success"


def _rollout(out, console):
    from toolrl.commands.rollout import load_rollout_stack
    from toolrl.config import RewardConfig, RolloutConfig
    from toolrl.data.io import write_jsonl
    from toolrl.rewards import reward_batch
    from toolrl.rollout.agent_loop import AgentLoop, settings_from_config
    from toolrl.rollout.records import trajectory_record
    from toolrl.types import Sample

    rollout = RolloutConfig(max_response_length=96, max_turns=3)
    tokenizer, engine, tools, context = load_rollout_stack(str(out / "tiny"), rollout)
    samples = [
        Sample(f"q{i}", [{"role": "user", "content": f"What is {i} * 7?"}], "math", str(7 * i))
        for i in range(4)
    ]
    settings = settings_from_config(rollout, max_context_length=context)
    trajectories = AgentLoop(engine, tokenizer, tools, settings).run(samples, n=2)
    reward_batch(trajectories, RewardConfig(overlong_buffer=32), rollout.max_response_length)
    write_jsonl(out / "rollouts.jsonl", [trajectory_record(t, tokenizer) for t in trajectories])
    tools[0].sandbox.close()
    stops = sorted({t.stop_reason for t in trajectories})
    console.print(
        f"{len(trajectories)} trajectories (untrained model: expect no correct answers), stop reasons "
        f"{stops}, mean reward {sum(t.reward for t in trajectories) / len(trajectories):+.2f}; "
        f"written to {out / 'rollouts.jsonl'}"
    )


def _recipe(name, console):
    from rich.table import Table

    from toolrl.config import load_config

    config = load_config(name)
    table = Table(title=f"Resolved recipe: {name}")
    table.add_column("section.key")
    table.add_column("value", justify="right")
    for section in ("rollout", "algorithm", "reward"):
        for key, value in getattr(config, section).__dict__.items():
            table.add_row(f"{section}.{key}", str(value))
    console.print(table)
