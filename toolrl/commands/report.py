"""`toolrl report RUN_DIR [--out FILE]`: the run's static HTML report (see toolrl.eval.report)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write a run's HTML report: curves, before/after table, trajectory viewer",
        description=(
            "Write one self-contained HTML file (opens offline) from a run directory: curves "
            "of reward, accuracy, entropy, clip fractions, response length and tool use over "
            "RL steps; the demo's before/after table; a trajectory viewer that shows the loss "
            "mask. Missing inputs are named in the page."
        ),
    )
    parser.add_argument("run_dir", help="run directory (e.g. runs/demo or runs/NAME)")
    parser.add_argument("--out", default=None, help="output file (default RUN_DIR/report.html)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import sys

    from toolrl.eval.report import write_report

    try:
        path = write_report(args.run_dir, args.out)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"report written to {path}")
    return 0
