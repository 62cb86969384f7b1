"""`toolrl demo`: the README's main job — the whole system, for real, in minutes on a CPU.

Synthetic tasks → the tiny model → a scripted teacher's real trajectories through the sandbox →
SFT → GRPO-TCR with the real sandbox → evaluation of base, SFT and RL on held-out tasks, with a
before/after table and `<out>/report.html`. The stages are in `toolrl/demo/`.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the embedded demo end to end (data, SFT, RL, evaluation)",
        description="Each stage is cached under --out; a second run redoes only RL and its "
        "evaluation (--fresh starts over).",
    )
    parser.add_argument("--out", default="runs/demo", help="run directory (default runs/demo)")
    parser.add_argument("--seed", type=int, default=0, help="seed of tasks, model, SFT and RL")
    parser.add_argument("--fresh", action="store_true", help="ignore the cache, start over")
    parser.add_argument(
        "--fast", action="store_true", help="a small budget (the test suite's variant)"
    )
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch threads while the sandbox runs (data collection, RL, evaluation; default "
        "1: on 2 cores the sandbox needs the other one); SFT uses every core",
    )  # fmt: skip
    parser.add_argument(
        "--device", default="cpu", help="torch device of SFT, RL and evaluation (default cpu)"
    )
    parser.add_argument("--sft", nargs="*", default=[], metavar="KEY=VALUE", help="SFT overrides")
    parser.add_argument("--rl", nargs="*", default=[], metavar="KEY=VALUE", help="RL overrides")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console

    from toolrl.demo.pipeline import DemoSettings, run_demo
    from toolrl.demo.table import print_table

    torch.set_num_threads(args.threads)
    console = Console()
    settings = fast_settings(args.out) if args.fast else DemoSettings(out=args.out)
    settings.seed = args.seed
    settings.device = args.device
    settings.sft_overrides += args.sft
    settings.rl_overrides += args.rl
    result = run_demo(settings, fresh=args.fresh, say=lambda line: _say(console, line))
    print_table(result.stages, console)
    _report(result.out, console)
    return 0


def fast_settings(out: str):
    """The test suite's budget: every stage runs, on a few tasks and steps (nothing learns)."""
    from toolrl.demo.pipeline import DemoSettings

    return DemoSettings(
        out=out,
        train_tasks=24,
        test_tasks=12,
        sft_overrides=["trainer.epochs=1", "data.train_batch_size=8"],
        rl_overrides=[
            "trainer.total_steps=2",
            "data.train_batch_size=4",
            "trainer.ppo_mini_batch_size=4",
            "rollout.n=2",
            "rollout.max_response_length=160",
        ],
    )


def _say(console, line: str) -> None:
    """Stage starts as rules, their timings and other lines dimmed (never read as markup)."""
    from rich.markup import escape

    if line.startswith("[stage] "):
        console.rule(f"[bold]{escape(line[8:])}")
    else:
        console.print(f"[dim]{escape(line.removeprefix('[done] '))}")


def _report(out, console) -> None:
    try:
        from toolrl.eval.report import write_report
    except ImportError:
        console.print("note: the HTML report (toolrl.eval.report) is not available in this build")
        return
    console.print(f"report: {write_report(out)}")
