"""`toolrl index build`: a BM25 index of a local corpus for the `search` tool."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser("index", help="build search indexes for the `search` tool")
    commands = parser.add_subparsers(dest="index_command", metavar="COMMAND", required=True)
    build = commands.add_parser(
        "build",
        help="index a corpus of passages with BM25",
        description="Rows {id, title, text} of a .jsonl or .parquet file (id defaults to the "
        "row number, title to empty). Use the directory as tools.search_index.",
    )
    build.add_argument("corpus", help="corpus file (.jsonl or .parquet)")
    build.add_argument("--out", required=True, help="index directory to write")
    build.set_defaults(handler=run_build)


def run_build(args: argparse.Namespace) -> int:
    import sys
    import time

    from toolrl.tools.search import CorpusError, build_index

    started = time.monotonic()
    try:
        count = build_index(args.corpus, args.out)
    except CorpusError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"indexed {count} passages into {args.out} in {time.monotonic() - started:.1f}s")
    return 0
