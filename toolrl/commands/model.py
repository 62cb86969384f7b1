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
    tiny.add_argument(
        "--size", nargs="*", default=[], metavar="FIELD=INT",
        help="TinySize overrides, e.g. hidden_size=128 intermediate_size=384 (the demo's)",
    )  # fmt: skip
    tiny.set_defaults(handler=run_tiny)


def run_tiny(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from toolrl.models.tiny import TinySize, write_tiny

    try:
        size = replace(TinySize(), **{k: int(v) for k, v in (f.split("=") for f in args.size)})
    except (TypeError, ValueError) as err:
        raise SystemExit(f"--size {' '.join(args.size)}: {err}") from err
    out = write_tiny(args.out_dir, seed=args.seed, size=size)
    print(f"wrote tiny tokenizer + model to {out}")
    return 0
