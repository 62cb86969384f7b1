"""The before/after table of a demo run: one row per (benchmark, stage), printed with rich."""

from __future__ import annotations

from typing import Any

COLUMNS = (
    ("avg@k", "acc/avg@{k}"),
    ("pass@k", "acc/pass@{k}"),
    ("maj@k", "acc/maj@{k}"),
    ("tool calls / resp", "tool/calls_per_response"),
    ("tool success", "tool/success_rate"),
    ("resp length", "response_length/mean"),
)


def table_rows(record: dict[str, Any]) -> list[list[str]]:
    """[benchmark, stage, *COLUMNS] rows from a `stages.json` record, plus a row per stage
    averaging the benchmarks (`all`, each benchmark weighted equally)."""
    k = record["k"]
    rows = []
    for bench in [*record["benchmarks"], "all"]:
        for stage in record["stages"]:
            metrics = stage_metrics(stage["summary"], bench, record["benchmarks"])
            cells = [_fmt(metrics.get(key.format(k=k))) for _, key in COLUMNS]
            rows.append([bench, stage["name"], *cells])
    return rows


def stage_metrics(summary: dict[str, Any], bench: str, benchmarks: list[str]) -> dict[str, float]:
    """One benchmark's metrics, or (bench == "all") their unweighted mean."""
    if bench != "all":
        return summary[bench]["metrics"]
    per = [summary[b]["metrics"] for b in benchmarks]
    keys = set.intersection(*(set(m) for m in per)) if per else set()
    return {key: sum(m[key] for m in per) / len(per) for key in keys}


def _fmt(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if abs(value) < 10 else f"{value:.0f}"


def print_table(record: dict[str, Any], console) -> None:
    from rich.table import Table

    k = record["k"]
    table = Table(title=f"held-out tasks, k = {k} samples per problem")
    table.add_column("benchmark")
    table.add_column("stage")
    for name, _ in COLUMNS:
        table.add_column(name.replace("@k", f"@{k}"), justify="right")
    previous = None
    for row in table_rows(record):
        if previous is not None and row[0] != previous:
            table.add_section()
        previous = row[0]
        table.add_row(*row)
    console.print(table)
    timings = ", ".join(f"{name} {s:.0f}s" for name, s in record["timings"].items())
    console.print(f"timings: {timings}; total {sum(record['timings'].values()):.0f}s")
