"""The `toolrl` command line.

Each command group lives beside the code it drives, in a module that exposes
`register(subparsers)`: it adds its parser and sets `handler` to a function taking the parsed
arguments and returning an exit code. This module only lists those modules, so `toolrl --help`
shows exactly the commands that exist. Heavy imports (torch, transformers) happen inside the
handlers, so `toolrl --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Order is the order shown by `toolrl --help`.
COMMAND_MODULES = [
    "toolrl.commands.demo",
    "toolrl.commands.experiments",
    "toolrl.commands.config",
    "toolrl.commands.model",
    "toolrl.commands.check_template",
    "toolrl.commands.rollout",
    "toolrl.commands.train",
    "toolrl.commands.eval",
    "toolrl.commands.report",
    "toolrl.commands.serve",
    "toolrl.commands.data",
    "toolrl.commands.index",
    "toolrl.sandbox.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="toolrl",
        description="Train language models to reason with tools by reinforcement learning.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Loading a local checkpoint needs no progress bar; rich shows toolrl's own progress.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 0 if args.command is None else 2
    return int(handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
