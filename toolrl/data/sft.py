"""SFT rows: multi-turn `messages` (+ optional `tools`) conversations, read and rendered.

Each row is checked (roles, contents, JSON columns) and rendered by `chat.render_with_mask`,
the renderer the rollout's masks are checked against, so SFT trains exactly the tokens an RL
rollout would sample. `toolrl sft` trains on them; `data collect`, `convert` and `stats` read
them with the same parser. A malformed row fails with its file and row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from toolrl.chat import TemplateError, render_with_mask
from toolrl.data.io import DataError, read_rows

ROLES = {"system", "user", "assistant", "tool"}


@dataclass
class Example:
    ids: list[int]
    mask: list[int]


@dataclass
class SFTData:
    examples: list[Example]
    truncated: int
    dropped: int
    """Rows with no assistant token left after truncation (nothing to train on)."""


def load_sft_examples(paths: list[str], tokenizer, max_length: int) -> SFTData:
    """Render every conversation; malformed rows fail with file and row."""
    examples, truncated, dropped = [], 0, 0
    for path in paths:
        rows = list(read_rows(path))
        if not rows:
            raise DataError(f"{path}: no rows (an empty data file)")
        for index, row in rows:
            messages, tools = parse_sft_row(row, f"{path}: row {index}")
            try:
                rendered = render_with_mask(tokenizer, messages, tools)
            except TemplateError as err:
                raise DataError(f"{path}: row {index}: {err}") from err
            ids, mask = rendered.ids, rendered.mask
            if len(ids) > max_length:
                ids, mask, truncated = ids[:max_length], mask[:max_length], truncated + 1
            if not any(mask[1:]):
                dropped += 1
                continue
            examples.append(Example(ids, mask))
    return SFTData(examples, truncated, dropped)


def parse_sft_row(row: dict, where: str) -> tuple[list[dict], list[dict] | None]:
    """`messages` (list or JSON string) and optional `tools` (list or JSON string) of one row."""
    messages, tools = row.get("messages"), row.get("tools")
    try:
        messages = json.loads(messages) if isinstance(messages, str) else messages
        tools = json.loads(tools) if isinstance(tools, str) and tools else tools
    except json.JSONDecodeError as err:
        raise DataError(
            f"{where}: column `messages` or `tools` is not valid JSON ({err.msg})"
        ) from err
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: column `messages` must be a non-empty list of chat messages")
    for j, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise DataError(f"{where}: column `messages`[{j}] needs a role in {sorted(ROLES)}")
        if not isinstance(m.get("content") or "", str):
            raise DataError(f"{where}: column `messages`[{j}].content must be a string")
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: column `messages` has no assistant message to train on")
    if tools is not None and not isinstance(tools, list):
        raise DataError(f"{where}: column `tools` must be a list of function schemas")
    return messages, tools or None
