"""Lossless conversion between verl-style parquet and toolrl's jsonl, both ways.

verl RL files are parquet with `prompt` (a list of messages), `data_source`, `ability`,
`reward_model` ({`ground_truth`, `style`}), `extra_info` (a struct), sometimes with a column
stored as a JSON string instead (LiveCodeBench's `reward_model`). toolrl reads and writes the
same columns as JSON lines. Both directions are exact:

- **parquet -> jsonl**: each row as JSON, and beside it `<name>.arrow-schema.json`, the parquet
  file's Arrow schema (types, field order, metadata). Converting that jsonl back uses it, so
  parquet -> jsonl -> parquet gives an equal table (schema and metadata included). Arrow types
  that JSON cannot hold exactly (binary, dates and times, decimals, maps) are refused by column.
- **jsonl -> parquet**: each column is stored natively when Arrow gives back exactly the JSON
  values (same types, same keys: 1 stays 1, not 1.0; an absent key does not come back as null);
  a column that would not (types mixed across rows, dict keys varying between rows, a column
  some rows lack) is stored as JSON strings and listed in the file's metadata under
  `toolrl.json_columns`, so jsonl -> parquet -> jsonl gives equal rows. Strings that hold JSON in
  the source stay strings. Key order inside objects is the one thing not kept (JSON objects are
  unordered; Arrow structs order fields once per column).
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolrl.data.io import DataError, read_rows

JSON_COLUMNS_KEY = b"toolrl.json_columns"
SCHEMA_FORMAT = "toolrl.arrow-schema/1"


@dataclass
class ConvertReport:
    """What a conversion did: rows, columns, and the columns stored as JSON strings."""

    rows: int
    columns: list[str]
    json_columns: list[str] = field(default_factory=list)
    schema_file: str | None = None
    notes: list[str] = field(default_factory=list)


def schema_path(jsonl_path: str | Path) -> Path:
    """Where the Arrow schema of a converted jsonl lives: `x.jsonl` -> `x.arrow-schema.json`."""
    return Path(jsonl_path).with_suffix(".arrow-schema.json")


def convert(src: str | Path, dst: str | Path) -> ConvertReport:
    """Convert by extension: .parquet -> .jsonl or .jsonl -> .parquet."""
    src, dst = Path(src), Path(dst)
    if src.suffix == ".parquet" and dst.suffix == ".jsonl":
        return parquet_to_jsonl(src, dst)
    if src.suffix == ".jsonl" and dst.suffix == ".parquet":
        return jsonl_to_parquet(src, dst)
    raise DataError(f"convert {src} -> {dst}: expected .parquet -> .jsonl or .jsonl -> .parquet")


def parquet_to_jsonl(src: str | Path, dst: str | Path) -> ConvertReport:
    """Rows of a parquet file as JSON lines, plus the Arrow schema beside them."""
    import pyarrow.parquet as pq

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise DataError(f"{src}: no such file")
    table = pq.read_table(src)
    for name in table.column_names:
        _check_jsonable(table.schema.field(name).type, f"{src}: column `{name}`")
    json_columns = _json_columns(table.schema.metadata)
    columns = {name: table.column(name).to_pylist() for name in table.column_names}
    dst.parent.mkdir(parents=True, exist_ok=True)
    with dst.open("w", encoding="utf-8") as f:
        for i in range(table.num_rows):
            row = {}
            for name, values in columns.items():
                value = values[i]
                if name in json_columns:
                    if value is None:
                        continue  # the key was absent from the original row
                    value = _loads(value, f"{src}: row {i + 1}: column `{name}`")
                row[name] = value
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    sidecar = schema_path(dst)
    sidecar.write_text(
        json.dumps(
            {
                "format": SCHEMA_FORMAT,
                "source": str(src),
                "rows": table.num_rows,
                "columns": table.column_names,
                "json_columns": sorted(json_columns),
                "schema": base64.b64encode(table.schema.serialize().to_pybytes()).decode(),
                "schema_text": str(table.schema),
            },
            indent=1,
        ),
        encoding="utf-8",
    )
    return ConvertReport(table.num_rows, table.column_names, sorted(json_columns), str(sidecar))


def jsonl_to_parquet(src: str | Path, dst: str | Path) -> ConvertReport:
    """JSON lines as parquet: with the schema beside `src` if there is one, else inferred."""
    src = Path(src)
    rows = [row for _, row in read_rows(src)]
    names = list(dict.fromkeys(name for row in rows for name in row))
    if not names:
        raise DataError(f"{src}: the rows have no columns")
    saved = _saved_schema(src, names)
    if saved is None:
        return write_parquet(rows, dst)
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema, json_columns = saved
    data = {name: _column(rows, name, name in json_columns) for name in schema.names}
    try:
        table = pa.Table.from_pydict(data, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise DataError(
            f"{src}: the rows no longer fit {schema_path(src)} ({err}); delete that file to "
            "infer the schema from the rows"
        ) from err
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, dst)
    notes = [f"schema from {schema_path(src)}"]
    return ConvertReport(table.num_rows, table.column_names, sorted(json_columns), None, notes)


def write_parquet(rows: list[dict[str, Any]], dst: str | Path) -> ConvertReport:
    """Rows as parquet, each column native when Arrow returns its values exactly, else JSON
    strings listed under `toolrl.json_columns` (see the module docstring)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = list(dict.fromkeys(name for row in rows for name in row))
    if not names:
        raise DataError(f"{dst}: the rows have no columns")
    arrays, json_columns = {}, []
    for name in names:
        array = _exact_array(rows, name)
        if array is None:
            json_columns.append(name)
            array = pa.array(_column(rows, name, True), type=pa.string())
        arrays[name] = array
    table = pa.table(arrays)
    notes = []
    if json_columns:
        metadata = {JSON_COLUMNS_KEY: json.dumps(sorted(json_columns)).encode()}
        table = table.replace_schema_metadata(metadata)
        notes.append(
            "stored as JSON strings (values would not round-trip natively): "
            + ", ".join(sorted(json_columns))
        )
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, dst)
    return ConvertReport(table.num_rows, table.column_names, sorted(json_columns), None, notes)


def write_rows(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """Write rows as .jsonl or .parquet, by extension (parquet: `write_parquet`)."""
    from toolrl.data.io import write_jsonl

    if Path(path).suffix == ".parquet":
        write_parquet(rows, path)
    elif Path(path).suffix == ".jsonl":
        write_jsonl(path, rows)
    else:
        raise DataError(
            f"{path}: unsupported file type {Path(path).suffix!r} (use .jsonl or .parquet)"
        )


def validate_rows(path: str | Path) -> str | None:
    """Check every row against the RL (`prompt`) or SFT (`messages`) schema; returns which one
    (None for neither). The first bad row raises DataError naming file, row and column."""
    from toolrl.data.rl import row_to_sample

    kind = None
    for index, row in read_rows(path):
        if "prompt" in row:
            row_to_sample(row, path, index)
            kind = "rl"
        elif "messages" in row:
            from toolrl.data.sft import parse_sft_row

            parse_sft_row(row, f"{path}: row {index}")
            kind = "sft"
    return kind


def _exact_array(rows: list[dict[str, Any]], name: str):
    """The column as an Arrow array if Arrow gives back exactly the JSON values, else None."""
    import pyarrow as pa

    if any(name not in row for row in rows):
        return None
    values = [row[name] for row in rows]
    try:
        array = pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, ValueError):
        return None
    if not _parquet_writable(array.type):
        return None
    return array if same_json(array.to_pylist(), values) else None


def _parquet_writable(type_) -> bool:
    """False for types parquet cannot store (a struct with no fields, e.g. from `{}` values)."""
    import pyarrow as pa

    if pa.types.is_struct(type_):
        fields = [type_.field(i).type for i in range(type_.num_fields)]
        return bool(fields) and all(_parquet_writable(t) for t in fields)
    if pa.types.is_list(type_) or pa.types.is_large_list(type_):
        return _parquet_writable(type_.value_type)
    return True


def _column(rows: list[dict[str, Any]], name: str, as_json: bool) -> list[Any]:
    if not as_json:
        return [row.get(name) for row in rows]
    return [_dumps(row[name]) if name in row else None for row in rows]


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values with types kept apart (1 != 1.0 != True); NaN equals NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return a == b


def _dumps(value: Any) -> str:
    # One canonical spelling, so decoding and encoding again gives the same string.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _loads(text: Any, where: str) -> Any:
    if not isinstance(text, str):
        raise DataError(f"{where}: listed in {JSON_COLUMNS_KEY.decode()} but not a string")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{where}: not valid JSON ({err.msg})") from err


def _json_columns(metadata: dict[bytes, bytes] | None) -> set[str]:
    raw = (metadata or {}).get(JSON_COLUMNS_KEY)
    return set(json.loads(raw)) if raw else set()


def _saved_schema(src: Path, names: list[str]):
    """(schema, json columns) from the sidecar if it exists and names the same columns."""
    import pyarrow as pa

    path = schema_path(src)
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        schema = pa.ipc.read_schema(pa.py_buffer(base64.b64decode(saved["schema"])))
    except (json.JSONDecodeError, KeyError, ValueError, pa.ArrowInvalid) as err:
        raise DataError(f"{path}: not a schema file written by toolrl ({err})") from err
    if saved.get("format") != SCHEMA_FORMAT or set(names) - set(schema.names):
        return None  # another format, or the rows gained columns: infer instead
    return schema, set(saved.get("json_columns", []))


def _check_jsonable(type_, where: str) -> None:
    import pyarrow as pa

    t = pa.types
    if t.is_struct(type_):
        for i in range(type_.num_fields):
            _check_jsonable(type_.field(i).type, f"{where}.{type_.field(i).name}")
    elif t.is_list(type_) or t.is_large_list(type_) or t.is_fixed_size_list(type_):
        _check_jsonable(type_.value_type, f"{where}[]")
    elif t.is_dictionary(type_):
        _check_jsonable(type_.value_type, where)
    elif not (
        t.is_null(type_)
        or t.is_boolean(type_)
        or t.is_integer(type_)
        or t.is_floating(type_)
        or t.is_string(type_)
        or t.is_large_string(type_)
    ):
        raise DataError(
            f"{where}: Arrow type {type_} cannot be written to JSON losslessly "
            "(binary, temporal, decimal and map columns are not supported)"
        )
