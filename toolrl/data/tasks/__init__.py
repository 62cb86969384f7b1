"""A synthetic task suite with exact ground truth, for the embedded demo and the experiments.

    splits = make_splits(seed=0, sizes={"train": 600, "val": 60, "test": 60})
    paths = write_splits("runs/demo/data", splits)      # verl-schema jsonl, one file per split

Three kinds, one per reward path of the paper: `math` (exact products of large numbers,
modular powers, multi-step word problems; graded on the last `\\boxed{}`), `choice` (which
option is the product; a boxed letter) and `code` (a stdin/stdout program; hidden tests run in
the sandbox). None is solvable by a few-million-parameter model without the tool, and each is
solvable with one call: copy the numbers into a program, run it, copy the result.

Splits are disjoint by construction: a question's split is a function of its text (a hash), so
the same question can never land in two splits, whatever the sizes. Everything is
deterministic from the seed. `teacher.py` is the scripted teacher that solves them by really
calling the sandbox.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

from toolrl.data.tasks.families import FAMILIES, KINDS, LEVELS, Task

SPLITS = ("train", "val", "test")
DATA_SOURCES = {"math": "toy_math", "choice": "toy_multiple_choice", "code": "toy_code"}
"""data_source per kind; the registry routes them to the math, choice and code graders."""
DEFAULT_WEIGHTS = {"math": 0.5, "choice": 0.25, "code": 0.25}
# Of every 20 hash buckets: 16 train, 2 validation, 2 test.
_BUCKETS = {"train": range(0, 16), "val": range(16, 18), "test": range(18, 20)}


def split_of(question: str) -> str:
    """The split a question belongs to, from its text alone (hence disjoint splits)."""
    bucket = int(hashlib.sha1(question.encode()).hexdigest()[:8], 16) % 20
    return next(name for name, buckets in _BUCKETS.items() if bucket in buckets)


def make_splits(
    seed: int,
    sizes: dict[str, int],
    weights: dict[str, float] | None = None,
    levels: tuple[int, ...] = LEVELS,
) -> dict[str, list[Task]]:
    """`sizes[split]` tasks per split, mixed by kind as `weights` says, levels uniform.

    Each kind has its own random stream, so changing the mix leaves the other kinds' tasks as
    they were. Questions are unique across the whole suite.
    """
    weights = weights or DEFAULT_WEIGHTS
    unknown = sorted(set(weights) - set(KINDS)) + sorted(set(sizes) - set(SPLITS))
    if unknown or not all(level in LEVELS for level in levels):
        raise ValueError(f"unknown kinds, splits or levels: {unknown or levels}; "
                         f"kinds {sorted(KINDS)}, splits {SPLITS}, levels {LEVELS}")  # fmt: skip
    total = sum(weights.values())
    splits: dict[str, list[Task]] = {name: [] for name in sizes}
    for kind, weight in weights.items():
        quota = {name: round(size * weight / total) for name, size in sizes.items()}
        for split, tasks in _kind_tasks(kind, seed, quota, levels).items():
            splits[split] += tasks
    for name, tasks in splits.items():
        random.Random(f"{seed}:{name}").shuffle(tasks)
    return splits


def _kind_tasks(
    kind: str, seed: int, quota: dict[str, int], levels: tuple[int, ...]
) -> dict[str, list[Task]]:
    rng = random.Random(f"{seed}:{kind}")
    out: dict[str, list[Task]] = {name: [] for name in quota}
    seen: set[str] = set()
    for _ in range(200 * (sum(quota.values()) + 1)):
        if all(len(out[name]) >= n for name, n in quota.items()):
            return out
        family = FAMILIES[rng.choice(KINDS[kind])]
        task = family.make(rng, rng.choice(levels))
        split = split_of(task.question)
        if task.question in seen or split not in out or len(out[split]) >= quota[split]:
            continue
        seen.add(task.question)
        out[split].append(task)
    raise ValueError(f"could not generate {quota} distinct {kind} tasks at levels {levels}")


def task_row(task: Task, index: str) -> dict[str, Any]:
    """One row in the verl RL schema (what `toolrl rl`, `eval` and `data collect` read), with
    a text-only `solution` column for `toolrl data stitch`."""
    return {
        "prompt": [{"role": "user", "content": task.question}],
        "data_source": DATA_SOURCES[task.kind],
        "reward_model": {"ground_truth": task.ground_truth},
        "extra_info": {
            "index": index,
            "kind": task.kind,
            "family": task.family,
            "level": task.level,
        },
        "solution": task.solution,
    }


def write_splits(out_dir: str | Path, splits: dict[str, list[Task]]) -> dict[str, Path]:
    """`<split>.jsonl` for every split, plus `<split>_<kind>.jsonl` for the held-out splits
    (one benchmark per reward path); returns file name stem → path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, tasks in splits.items():
        rows = [task_row(t, f"{split}-{i}") for i, t in enumerate(tasks)]
        paths[split] = _write(out / f"{split}.jsonl", rows)
        if split == "train":
            continue
        for kind in KINDS:
            kept = [r for r in rows if r["extra_info"]["kind"] == kind]
            if kept:
                paths[f"{split}_{kind}"] = _write(out / f"{split}_{kind}.jsonl", kept)
    return paths


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path
