"""RL samples in the Open-AgentRL / verl schema.

A row has `prompt` (a list of chat messages, or a JSON string of one), `data_source`,
`reward_model.ground_truth` (also accepted as a JSON string of the `reward_model` dict, as
LiveCodeBench files store it), and optional `extra_info` and `ability`. The sample id is
`extra_info.index` when present, else `<file stem>:<row - 1>` (numbered from 0, as the ids of
earlier releases were; messages number rows from 1).

A row with `question` and `golden_answers` and no `prompt` is Search-R1's raw QA format: it
becomes a user turn asking to search and box the answer (`QA_INSTRUCTION`), graded by exact
match (`rewards/qa.py`); its data source is the row's `data_source` or `search_qa`, its id the
row's `id` when present.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from toolrl.data.io import DataError, read_rows
from toolrl.types import Sample

ROLES = {"system", "user", "assistant", "tool"}
QA_INSTRUCTION = (
    "Answer the question. Use the search tool to look up what you do not know, as often as "
    "you need, then give the final answer, a short phrase, inside \\boxed{{}}.\n\n"
    "Question: {question}"
)
QA_SOURCE = "search_qa"


def load_rl_samples(path: str | Path) -> list[Sample]:
    """All samples of one file; the first malformed row raises DataError with file, row, column."""
    return [row_to_sample(row, path, i) for i, row in read_rows(path)]


def row_to_sample(row: dict[str, Any], path: str | Path, index: int) -> Sample:
    where = f"{path}: row {index}"
    if "prompt" not in row and "question" in row:
        return qa_row_to_sample(row, path, index)
    messages = _json_field(row, "prompt", where)
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: column `prompt` must be a non-empty list of chat messages")
    for j, message in enumerate(messages):
        if (
            not isinstance(message, dict)
            or message.get("role") not in ROLES
            or not isinstance(message.get("content"), str)
        ):
            raise DataError(
                f"{where}: column `prompt`[{j}] must be {{'role': one of {sorted(ROLES)}, 'content': str}}"
            )
    data_source = _json_field(row, "data_source", where)
    if not isinstance(data_source, str) or not data_source:
        raise DataError(f"{where}: column `data_source` must be a non-empty string")
    reward_model = _json_field(row, "reward_model", where)
    if not isinstance(reward_model, dict) or "ground_truth" not in reward_model:
        raise DataError(f"{where}: column `reward_model` must be a mapping with `ground_truth`")
    extra_info = _json_field(row, "extra_info", where, default={}) or {}
    if not isinstance(extra_info, dict):
        raise DataError(f"{where}: column `extra_info` must be a mapping")
    sample_id = str(extra_info.get("index", f"{Path(path).stem}:{index - 1}"))
    return Sample(
        id=sample_id,
        messages=[{"role": m["role"], "content": m["content"]} for m in messages],
        data_source=data_source,
        ground_truth=reward_model["ground_truth"],
        extra_info=extra_info,
    )


def qa_row_to_sample(row: dict[str, Any], path: str | Path, index: int) -> Sample:
    """A Search-R1 `question` / `golden_answers` row as a Sample (module docstring)."""
    where = f"{path}: row {index}"
    question, golds = row.get("question"), _json_field(row, "golden_answers", where)
    if not isinstance(question, str) or not question.strip():
        raise DataError(f"{where}: column `question` must be a non-empty string")
    if isinstance(golds, str):
        golds = [golds]
    if not isinstance(golds, list) or not golds or not all(isinstance(g, str) for g in golds):
        raise DataError(f"{where}: column `golden_answers` must be a non-empty list of strings")
    extra_info = _json_field(row, "extra_info", where, default={}) or {}
    if not isinstance(extra_info, dict):
        raise DataError(f"{where}: column `extra_info` must be a mapping")
    data_source = row.get("data_source") or QA_SOURCE
    return Sample(
        id=str(row.get("id", extra_info.get("index", f"{Path(path).stem}:{index}"))),
        messages=[{"role": "user", "content": QA_INSTRUCTION.format(question=question.strip())}],
        data_source=str(data_source),
        ground_truth={"target": list(golds)},
        extra_info=extra_info,
    )


def _json_field(row: dict[str, Any], column: str, where: str, default: Any = ...) -> Any:
    if column not in row:
        if default is not ...:
            return default
        raise DataError(f"{where}: missing column `{column}` (columns: {', '.join(row) or 'none'})")
    value = row[column]
    if isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError as err:
            raise DataError(
                f"{where}: column `{column}` is a string but not valid JSON ({err.msg})"
            ) from err
    return value
