"""Reading and writing row files: jsonl and parquet, chosen by extension."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """A data file or row that does not fit the expected schema; says file, row and column."""


def read_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (row number, row) from a .jsonl or .parquet file. Rows are numbered from 1 as
    people count them: in a jsonl file the row number is the line number (blank lines count),
    so a message's "row 3" is what an editor shows as line 3."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.suffix == ".parquet":
        for i, row in enumerate(_parquet_rows(path)):
            yield i + 1, row
    elif path.suffix in (".jsonl", ".json"):
        yield from read_jsonl(path, what="row")
    else:
        raise DataError(f"{path}: unsupported file type {path.suffix!r} (use .jsonl or .parquet)")


def _parquet_rows(path: Path) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: not a readable parquet file ({err})") from None


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
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                line, problem = "", f"not UTF-8 text (byte {err.start + 1} of the line)"
            else:
                if not line.strip():
                    continue
                problem = None
            if problem is None:
                try:
                    row = json.loads(line)
                    problem = None if isinstance(row, dict) else "must be a JSON object"
                except json.JSONDecodeError as err:
                    row, problem = None, f"not valid JSON ({err.msg})"
            if problem is None:
                yield number, row
            elif skip_bad:
                if notes is not None:
                    notes.append(f"{path}: line {number}: {problem}; skipped")
            else:
                raise DataError(f"{path}: {what} {number}: {problem}")


def write_jsonl(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write rows as JSON lines (UTF-8, one object a line)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
