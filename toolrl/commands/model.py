"""`toolrl model tiny OUT_DIR [--seed S]`: write the embedded tokenizer + tiny Qwen3 checkpoint."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("model", help="build models toolrl embeds")
    commands = parser.add_subparsers(dest="model_command", metavar="SUBCOMMAND", required=True)
    tiny = commands.add_parser(
        "tiny",
        help="write the tiny tokenizer + Qwen3 model as an HF checkpoint",
        description="Deterministic from --seed; the result loads with from_pretrained and as --model.",
    )
    tiny.add_argument("out_dir", help="directory to write (created if missing)")
    tiny.add_argument("--seed", type=int, default=0, help="initialisation seed (default 0)")
    tiny.set_defaults(handler=run_tiny)


def run_tiny(args: argparse.Namespace) -> int:
    from toolrl.models.tiny import write_tiny

    out = write_tiny(args.out_dir, seed=args.seed)
    print(f"wrote tiny tokenizer + model to {out}")
    return 0
