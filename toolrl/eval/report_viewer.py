"""The run report's trajectory viewer: the loss mask made visible.

Each trajectory is a record written by `toolrl.rollout.records.trajectory_record`. Its response
is drawn span by span: tokens the policy sampled (loss mask 1) in one style, tokens the loop
injected (tool output and chat-template tokens, loss mask 0) in another, and the tool calls the
policy wrote highlighted inside its own spans. Below come the turns with their tool calls,
statuses and outputs. Every piece of model or tool text is escaped: it is untrusted.

Everything is rendered here, in Python; the page's script only shows one trajectory at a time.
"""

from __future__ import annotations

import json
import re
from html import escape
from pathlib import Path
from typing import Any

from toolrl.data.io import read_jsonl

TOOL_CALL = re.compile(r"(<tool_call>.*?(?:</tool_call>|$))", re.DOTALL)
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def text(value: Any) -> str:
    """Escaped text with control characters shown as their Unicode pictures (␆ for 0x06)."""
    raw = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    raw = CONTROL.sub(lambda m: chr(0x2400 + ord(m.group())) if m.group() != "\x7f" else "␡", raw)
    return escape(raw, quote=True)


def rollout_steps(rollouts_dir: Path) -> dict[int, Path]:
    """step → `rollouts/step_N.jsonl`, in step order."""
    found = {}
    for path in rollouts_dir.glob("step_*.jsonl"):
        suffix = path.stem.removeprefix("step_")
        if suffix.isdigit():
            found[int(suffix)] = path
    return dict(sorted(found.items()))


def pick_trajectories(
    rollouts_dir: Path, per_step: int, notes: list[str]
) -> list[tuple[int, dict[str, Any]]]:
    """(step, record) for the first and the last step: up to `per_step` each, one rollout of
    every prompt before a second one of any. Unreadable lines are skipped and noted."""
    steps = rollout_steps(rollouts_dir)
    chosen = sorted({min(steps), max(steps)}) if steps else []
    picked = []
    for step in chosen:
        records = [r for _, r in read_jsonl(steps[step], skip_bad=True, notes=notes)]
        records.sort(key=lambda r: r.get("group_index", 0))  # stable: file order within a rank
        picked += [(step, r) for r in records[:per_step]]
    return picked


def viewer(trajectories: list[tuple[int, dict[str, Any]]]) -> str:
    """The viewer section's body: controls, legend and one <article> per trajectory."""
    options = "\n".join(
        f'<option value="{i}">{text(label(step, r))}</option>'
        for i, (step, r) in enumerate(trajectories)
    )
    articles = "\n".join(trajectory_article(i, step, r) for i, (step, r) in enumerate(trajectories))
    return (
        '<div class="viewer-controls">'
        '<button type="button" id="traj-prev" aria-label="previous trajectory">◀</button>'
        f'<select id="traj-select" aria-label="trajectory">{options}</select>'
        '<button type="button" id="traj-next" aria-label="next trajectory">▶</button></div>\n'
        '<p class="legend"><span class="span policy">model tokens (loss mask 1)</span> '
        '<span class="span policy"><span class="call">tool call written by the model</span></span> '
        '<span class="span injected">injected: tool output, template tokens (loss mask 0)</span></p>\n'
        f"{articles}"
    )


def label(step: int, record: dict[str, Any]) -> str:
    reward = record.get("reward")
    reward_text = f"{reward:+.2f}" if isinstance(reward, int | float) else "no reward"
    return (
        f"step {step} · {record.get('sample_id', '?')} #{record.get('group_index', 0)} · "
        f"reward {reward_text} · {record.get('stop_reason', '?')} · "
        f"{record.get('num_tool_calls', 0)} tool calls"
    )


def trajectory_article(index: int, step: int, record: dict[str, Any]) -> str:
    hidden = "" if index == 0 else " hidden"
    return (
        f'<article class="traj" id="traj-{index}" data-index="{index}"{hidden}>\n'
        f"<h3>{text(label(step, record))}</h3>\n"
        f"{facts(record)}\n"
        f"<details><summary>prompt</summary><pre>{text(record.get('prompt', ''))}</pre></details>\n"
        f'<pre class="response">{response_spans(record)}</pre>\n'
        f"{turns_table(record.get('turns') or [])}\n"
        "</article>"
    )


def facts(record: dict[str, Any]) -> str:
    """The trajectory's outcome in one line: stop reason, reward and its parts, sizes."""
    items = {
        "data source": record.get("data_source"),
        "ground truth": record.get("ground_truth"),
        "stop reason": record.get("stop_reason"),
        "reward": record.get("reward"),
        **{f"reward · {k}": v for k, v in (record.get("reward_info") or {}).items()},
        "response tokens": record.get("response_length"),
        "turns": record.get("num_turns"),
        "tool calls (ok / all)": (
            f"{record.get('num_successful_tool_calls', 0)} / {record.get('num_tool_calls', 0)}"
        ),
    }
    cells = "".join(
        f"<div><dt>{text(k)}</dt><dd>{text(v)}</dd></div>"
        for k, v in items.items()
        if v is not None
    )
    return f'<dl class="facts">{cells}</dl>'


def response_spans(record: dict[str, Any]) -> str:
    """The response as mask spans; a record without spans shows its text unstyled."""
    spans = record.get("spans")
    if not spans:
        return f'<span class="span unknown">{text(record.get("response", ""))}</span>'
    out = []
    for span in spans:
        policy = bool(span.get("mask"))
        kind = "policy" if policy else "injected"
        title = f"tokens {span.get('start')}–{span.get('end')}: {kind} (loss mask {int(policy)})"
        body = span.get("text", "")
        inner = _with_tool_calls(body) if policy else text(body)
        out.append(f'<span class="span {kind}" title="{text(title)}">{inner}</span>')
    return "".join(out)


def _with_tool_calls(body: str) -> str:
    """Policy text with each `<tool_call>…</tool_call>` it wrote wrapped for highlighting."""
    return "".join(
        f'<span class="call">{text(part)}</span>' if TOOL_CALL.fullmatch(part) else text(part)
        for part in TOOL_CALL.split(body)
        if part
    )


def turns_table(turns: list[dict[str, Any]]) -> str:
    """Turn by turn: why it ended, tokens sampled and injected, each tool call and its output."""
    if not turns:
        return '<p class="missing">no turns recorded</p>'
    rows = []
    for number, turn in enumerate(turns, 1):
        calls = "".join(
            '<div class="tool-call">'
            f'<div><b>{text(c.get("name", "?"))}</b> <span class="status">{text(c.get("status", "?"))}</span></div>'
            f'<pre class="call-args">{text(c.get("arguments", {}))}</pre>'
            f'<pre class="tool-output">{text(c.get("result", ""))}</pre></div>'
            for c in turn.get("tool_calls") or []
        )  # fmt: skip
        rows.append(
            f"<tr><td>{number}</td><td>{text(turn.get('finish_reason', ''))}</td>"
            f"<td>{text(turn.get('num_sampled_tokens', ''))}</td>"
            f"<td>{text(turn.get('num_observation_tokens', ''))}</td>"
            f"<td>{calls or '–'}</td></tr>"
        )
    return (
        '<table class="turns"><thead><tr><th>turn</th><th>finish</th><th>sampled</th>'
        "<th>injected</th><th>tool calls → output</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )
