"""`toolrl experiments rl-gain | insights | algorithms`: miniature experiments on the demo
pipeline (toolrl/demo/experiments.py, toolrl/demo/algorithms.py): does RL help beyond noise, the
paper's three findings, and GRPO-TCR against the neighbouring papers' algorithms."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("experiments", help="miniature experiments on the demo")
    commands = parser.add_subparsers(dest="experiment", metavar="EXPERIMENT", required=True)
    gain = commands.add_parser(
        "rl-gain", help="held-out avg@k after RL minus after SFT, with a 95%% interval over seeds"
    )
    gain.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    gain.add_argument(
        "--vary", choices=["all", "rl"], default="all",
        help="all: rerun every stage per seed; rl: one SFT model, the RL seed varies",
    )  # fmt: skip
    gain.add_argument("--out", default="runs/rl_gain", help="directory (default runs/rl_gain)")
    _budget_arguments(gain)
    gain.set_defaults(handler=run_rl_gain)
    insights = commands.add_parser(
        "insights",
        help="real vs stitched SFT, GRPO-T vs GRPO-TCR, deliberative vs reactive (~60 min)",
    )
    insights.add_argument("--seeds", type=int, default=2, help="seeds per variant (default 2)")
    insights.add_argument("--out", default="runs/insights", help="directory (runs/insights)")
    _budget_arguments(insights)
    insights.set_defaults(handler=run_insights)
    compare = commands.add_parser(
        "algorithms",
        help="GRPO-TCR against CISPO, GRPO-RoC, ... from one SFT model, with 95%% intervals",
    )
    compare.add_argument("--seeds", type=int, default=3, help="RL seeds per variant (default 3)")
    compare.add_argument(
        "--only", nargs="+", metavar="VARIANT",
        help="these variants (GRPO-TCR always runs); default: all of them",
    )  # fmt: skip
    compare.add_argument("--out", default="runs/algorithms", help="directory (runs/algorithms)")
    compare.add_argument(
        "--sft-model", metavar="CHECKPOINT",
        help="start every variant from this SFT checkpoint (default: train the demo's SFT in --out)",
    )  # fmt: skip
    _budget_arguments(compare)
    compare.set_defaults(handler=run_algorithms)


def _budget_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument(
        "--device", default="cpu", help="torch device of SFT, RL and evaluation (default cpu)"
    )
    parser.add_argument("--sft", nargs="*", default=[], metavar="KEY=VALUE", help="SFT overrides")
    parser.add_argument("--rl", nargs="*", default=[], metavar="KEY=VALUE", help="RL overrides")
    parser.add_argument(
        "--k",
        type=int,
        default=16,
        help="samples per held-out problem for avg@k, pass@k and maj@k (default 16; the demo's 4 "
        "leaves about ±0.035 of sampling noise on 38 multiple-choice problems near chance)",
    )
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="delete --out first (else same-settings runs are reused)",
    )
    parser.add_argument(
        "--fast", action="store_true", help="the test suite's tiny budget (nothing learns)"
    )


def _settings(args: argparse.Namespace):
    import torch

    from toolrl.commands.demo import fast_settings
    from toolrl.demo.pipeline import DemoSettings

    torch.set_num_threads(args.threads)
    settings = fast_settings(args.out) if args.fast else DemoSettings(out=args.out)
    settings.sft_overrides += args.sft
    settings.rl_overrides += [*args.rl, f"eval.k={args.k}"]
    settings.progress = False
    settings.device = args.device
    return settings


def run_rl_gain(args: argparse.Namespace) -> int:
    from toolrl.demo.experiments import rl_gain, rl_gain_markdown

    settings = _settings(args)
    result = rl_gain(args.out, list(range(args.seeds)), settings, vary=args.vary, fresh=args.fresh)
    print(rl_gain_markdown(result))
    return 0


def run_insights(args: argparse.Namespace) -> int:
    from toolrl.demo.experiments import insights, insights_markdown

    result = insights(args.out, list(range(args.seeds)), _settings(args), fresh=args.fresh)
    print(insights_markdown(result))
    print(f"plots: {args.out}/insights_curves.png, {args.out}/insights_tools.png")
    return 0


def run_algorithms(args: argparse.Namespace) -> int:
    from toolrl.demo.algorithms import VARIANTS, algorithms, algorithms_markdown

    unknown = [name for name in args.only or [] if name not in VARIANTS]
    if unknown:
        print(f"error: unknown variant(s) {unknown}; valid: {list(VARIANTS)}", file=sys.stderr)
        return 2
    if args.sft_model and not (Path(args.sft_model) / "config.json").is_file():
        print(f"error: --sft-model {args.sft_model}: not a checkpoint directory", file=sys.stderr)
        return 2
    settings = _settings(args)
    settings.sft_model = args.sft_model
    result = algorithms(
        args.out, list(range(args.seeds)), settings, only=args.only, fresh=args.fresh
    )
    print(algorithms_markdown(result))
    print(f"curves: {args.out}/algorithms_curves.png")
    return 0
