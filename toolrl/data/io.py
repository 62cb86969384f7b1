"""Reading and writing row files: jsonl and parquet, chosen by extension."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """A data file or row that does not fit the expected schema; says file, row and column."""


def read_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (row number, row) from a .jsonl or .parquet file; rows are numbered from 0."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        for i, row in enumerate(table.to_pylist()):
            yield i, row
    elif path.suffix in (".jsonl", ".json"):
        for line, row in read_jsonl(path, what="row"):
            yield line - 1, row
    else:
        raise DataError(f"{path}: unsupported file type {path.suffix!r} (use .jsonl or .parquet)")


def read_jsonl(
    path: str | Path, *, skip_bad: bool = False, notes: list[str] | None = None, what: str = "line"
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number from 1, object) for every non-blank line of a JSON-lines file: the one
    reader of toolrl's own logs and records (metrics, rollouts, evaluation samples) and of
    jsonl data.

    A line that is not a JSON object raises DataError naming the file and line (`what` names
    the unit in that message), or, with `skip_bad`, is skipped and noted in `notes`: a line cut
    short by a crash mid-write must not make a log unreadable.
    """
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                problem = None if isinstance(row, dict) else "must be a JSON object"
            except json.JSONDecodeError as err:
                row, problem = None, f"not valid JSON ({err.msg})"
            index = number if what == "line" else number - 1
            if problem is None:
                yield number, row
            elif skip_bad:
                if notes is not None:
                    notes.append(f"{path}: line {number}: {problem}; skipped")
            else:
                raise DataError(f"{path}: {what} {index}: {problem}")


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write rows as JSON lines (UTF-8, one object a line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
