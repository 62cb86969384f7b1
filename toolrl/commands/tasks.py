"""`toolrl data tasks` and `toolrl data search-tasks`: write the synthetic task suites
(toolrl/data/tasks/) as jsonl files."""

from __future__ import annotations

import argparse


def register(commands) -> None:
    """Add `tasks` under `toolrl data`."""
    p = commands.add_parser(
        "tasks",
        help="write the synthetic task suite (math, multiple choice, code) with exact answers",
        description="Deterministic from --seed; splits are disjoint (a question's split is a "
        "hash of its text). Writes <out>/<split>.jsonl and <out>/<split>_<kind>.jsonl in the "
        "verl RL schema, with a text-only `solution` column for `toolrl data stitch`.",
    )
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    p.add_argument("--train", type=int, default=2400, help="training tasks (2400)")
    p.add_argument("--val", type=int, default=0, help="validation tasks (0)")
    p.add_argument("--test", type=int, default=60, help="test tasks (60)")
    p.add_argument(
        "--weights", default="math=0.5,choice=0.25,code=0.25", help="mix of kinds (KIND=W,...)"
    )
    p.set_defaults(handler=run_tasks)
    s = commands.add_parser(
        "search-tasks",
        help="write the search suite: a fictional corpus and one/two-hop questions about it",
        description="Deterministic from --seed. Writes <out>/corpus.jsonl (index it with "
        "`toolrl index build`) and <out>/<split>.jsonl (Search-R1 question/golden_answers rows). "
        "The scripted teacher is toolrl.data.tasks.search:policy.",
    )
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--seed", type=int, default=0, help="seed (default 0)")
    s.add_argument("--countries", type=int, default=60, help="invented countries (60)")
    s.add_argument("--train", type=int, default=200, help="training questions (200)")
    s.add_argument("--test", type=int, default=40, help="test questions (40)")
    s.set_defaults(handler=run_search_tasks)


def run_tasks(args: argparse.Namespace) -> int:
    from toolrl.data.tasks import make_splits, write_splits

    try:
        weights = {k: float(w) for k, w in (item.split("=") for item in args.weights.split(","))}
    except ValueError as err:
        raise SystemExit(
            f"--weights {args.weights!r}: expected KIND=WEIGHT,... e.g. math=1,code=1"
        ) from err
    sizes = {name: n for name, n in (("train", args.train), ("val", args.val), ("test", args.test)) if n}  # fmt: skip
    for name, path in write_splits(args.out, make_splits(args.seed, sizes, weights)).items():
        print(f"{name}: {path}")
    return 0


def run_search_tasks(args: argparse.Namespace) -> int:
    from toolrl.data.tasks.search import make_world, write_search_tasks

    world = make_world(args.seed, args.countries)
    sizes = {name: n for name, n in (("train", args.train), ("test", args.test)) if n}
    for name, path in write_search_tasks(args.out, world, sizes, args.seed).items():
        print(f"{name}: {path}")
    return 0
