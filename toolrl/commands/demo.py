"""`toolrl demo`: the main job of the README.

For now a smoke run of what exists: the paper's recipe resolved and summarised. The embedded
end-to-end demo (data → SFT → GRPO-TCR → evaluation) replaces it when the trainers exist.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="run the embedded demo end to end")
    parser.add_argument("--recipe", default="demystify_qwen3_4b", help="recipe to summarise")
    parser.set_defaults(handler=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from toolrl.config import load_config

    console = Console()
    config = load_config(args.recipe)
    table = Table(title=f"Resolved recipe: {args.recipe}")
    table.add_column("section.key")
    table.add_column("value", justify="right")
    for section, values in config.to_dict().items():
        for key, value in values.items():
            table.add_row(f"{section}.{key}", str(value))
    console.print(table)
    return 0
