"""Real end-to-end SFT trajectories: a teacher solves tasks through the agent loop with the real
sandbox, each trajectory is graded, and the good ones become `messages` + `tools` rows.

    result = collect(engine, tokenizer, tools, samples, n=4)
    write_jsonl("sft.jsonl", result.rows)          # what `toolrl sft` reads
    result.stats                                    # kept / dropped by reason, tool use

The teacher is any `Engine`: a local checkpoint (HFEngine), a served model (OpenAIEngine), or
a Python policy (ScriptedEngine, `scripted:module:function` on the command line). Each row's
messages are `Trajectory.messages()`: the prompt, the teacher's turns verbatim (hermes tool
calls included, as it wrote them) and each tool result exactly as the model read it, i.e. what
the sandbox printed after the tool's middle truncation. Nothing is re-generated or rewritten,
which is what makes the data "real" in the paper's sense.

Filtering, in order (the first reason that applies is the one counted):
`infra_error` (the sandbox itself failed: not the teacher's fault, never kept), then, unless
`keep="all"`: `stopped:<stop reason>` (the teacher did not finish: max_turns, response budget,
context, timeout), `wrong` (the grader's `acc` is false), `too_few_tool_calls`; and last
`duplicate` (the same conversation after whitespace normalisation as an earlier kept row).
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from toolrl.config import RewardConfig
from toolrl.rewards.registry import Graders, reward_batch
from toolrl.rollout.agent_loop import AgentLoop, LoopSettings
from toolrl.rollout.engines.base import Engine
from toolrl.tools.metrics import trajectory_tool_metrics
from toolrl.tools.toolset import ToolSet, as_toolset
from toolrl.types import Sample, Trajectory

Keep = Literal["correct", "all"]


@dataclass
class Collection:
    """What `collect` produced: the rows to write, every trajectory, and the statistics."""

    rows: list[dict[str, Any]]
    trajectories: list[Trajectory]
    drop_reasons: list[str | None]
    """Per trajectory (same order): None if it became a row, else why it was dropped."""
    stats: dict[str, Any] = field(default_factory=dict)


def collect(
    engine: Engine,
    tokenizer,
    tools: ToolSet | list[Any],
    samples: list[Sample],
    *,
    n: int = 1,
    settings: LoopSettings | None = None,
    reward_cfg: RewardConfig | None = None,
    graders: Graders | None = None,
    keep: Keep = "correct",
    min_tool_calls: int = 0,
    dedupe: bool = True,
    log: Callable[[str], None] | None = None,
) -> Collection:
    """Run the teacher `n` times per sample, grade, filter, deduplicate; see the module docstring."""
    if keep not in ("correct", "all"):
        raise ValueError(f"keep must be 'correct' or 'all', not {keep!r}")
    settings = settings or LoopSettings()
    reward_cfg = reward_cfg or RewardConfig()
    started = time.monotonic()
    trajectories = AgentLoop(engine, tokenizer, tools, settings).run(samples, n=n)
    if log:
        log(
            f"rolled out {len(trajectories)} trajectories in {time.monotonic() - started:.1f}s; grading"
        )
    # Only the grade matters here (score before shaping, acc): shaping is switched off.
    plain = replace(reward_cfg, overlong_shaping=False, tool_shaping=False)
    reward_batch(trajectories, plain, settings.max_response_length, graders=graders)
    toolset = as_toolset(tools)
    rows, reasons, seen = [], [], set()
    for traj in trajectories:
        reason = drop_reason(traj, keep, min_tool_calls)
        schemas = toolset.schemas_for(traj.sample)
        row = trajectory_row(traj, schemas) if reason is None else None
        if row is not None and dedupe:
            key = conversation_key(row["messages"])
            reason = "duplicate" if key in seen else None
            seen.add(key)
        reasons.append(reason)
        if reason is None:
            rows.append(row)
    stats = collection_stats(trajectories, reasons, n=n, elapsed_s=time.monotonic() - started)
    return Collection(rows, trajectories, reasons, stats)


def drop_reason(traj: Trajectory, keep: Keep = "correct", min_tool_calls: int = 0) -> str | None:
    """Why a graded trajectory is not kept (None: keep it); see the module docstring."""
    if traj.excluded_from_training:  # a tool call's or the grader's sandbox failed
        return "infra_error"
    if keep == "all":
        return None
    if traj.stop_reason != "answered":
        return f"stopped:{traj.stop_reason}"
    if not traj.reward_info.get("acc"):
        return "wrong"
    if traj.num_tool_calls < min_tool_calls:
        return "too_few_tool_calls"
    return None


def trajectory_row(traj: Trajectory, tool_schemas: list[dict]) -> dict[str, Any]:
    """One SFT row (`messages` + `tools`, Open-AgentRL-SFT style) with the grade beside it."""
    info = traj.reward_info
    return {
        "messages": traj.messages(),
        "tools": tool_schemas,
        "id": f"{traj.sample.id}#{traj.group_index}",
        "data_source": traj.sample.data_source,
        "score": info.get("score"),
        "acc": info.get("acc"),
        "pred": info.get("pred"),
        "stop_reason": traj.stop_reason,
        "num_tool_calls": traj.num_tool_calls,
        "num_successful_tool_calls": traj.num_successful_tool_calls,
        "response_length": traj.response_length,
    }


def check_sft_rows(path: str, tokenizer) -> str:
    """Load written rows with `toolrl sft`'s loader (each must render with the chat template);
    a one-line verdict. A row that does not load raises DataError naming it."""
    from toolrl.data.sft import load_sft_examples

    data = load_sft_examples([path], tokenizer, max_length=1 << 30)
    total = len(data.examples) + data.dropped
    return f"{len(data.examples)} of {total} rows load with toolrl sft's loader"


def conversation_key(messages: list[dict[str, Any]]) -> str:
    """A hash of the conversation with whitespace runs collapsed: equal keys are duplicates."""
    normal = [
        (m.get("role"), re.sub(r"\s+", " ", str(m.get("content") or "")).strip()) for m in messages
    ]
    return hashlib.sha1(json.dumps(normal, ensure_ascii=False).encode()).hexdigest()


def collection_stats(
    trajectories: list[Trajectory], reasons: list[str | None], *, n: int, elapsed_s: float = 0.0
) -> dict[str, Any]:
    """Kept / dropped by reason, stop reasons, accuracy, and tool use over all and kept rows."""
    kept = [t for t, r in zip(trajectories, reasons, strict=True) if r is None]
    solved = {t.sample.id for t in trajectories if t.reward_info.get("acc")}
    return {
        "trajectories": len(trajectories),
        "samples": len({t.sample.id for t in trajectories}),
        "n": n,
        "kept": len(kept),
        "dropped": dict(Counter(r for r in reasons if r is not None).most_common()),
        "stop_reasons": dict(Counter(str(t.stop_reason) for t in trajectories).most_common()),
        "accuracy": _mean([float(bool(t.reward_info.get("acc"))) for t in trajectories]),
        "samples_solved": len(solved),
        "all": tool_use_stats(trajectories),
        "kept_rows": tool_use_stats(kept),
        "elapsed_s": round(elapsed_s, 2),
    }


def tool_use_stats(trajectories: list[Trajectory]) -> dict[str, Any]:
    """Tool calls per trajectory (mean and histogram), call statuses and success rate, lengths."""
    calls = [c for t in trajectories for c in t.tool_calls]
    per_traj = [t.num_tool_calls for t in trajectories]
    return {
        "count": len(trajectories),
        "tool/calls_per_response": _mean(per_traj),
        "tool_calls_histogram": {str(k): v for k, v in sorted(Counter(per_traj).items())},
        "tool_calls": len(calls),
        "tool/success_rate": _mean([float(c.status == "success") for c in calls]),
        "tool_statuses": dict(Counter(c.status for c in calls).most_common()),
        "per_tool": {
            k: round(v, 4)
            for k, v in trajectory_tool_metrics(trajectories).items()
            if k.count("/") == 2
        },
        "turns_per_trajectory": _mean([len(t.turns) for t in trajectories]),
        "response_tokens_mean": _mean([t.response_length for t in trajectories]),
        "response_tokens_max": max((t.response_length for t in trajectories), default=0),
    }


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 4) if values else None


# ----------------------------------------------------------------------------------------------
# Teachers named on the command line


@dataclass
class Teacher:
    """An engine and what drives it: the tokenizer, the tools, the context length (0 = unknown)."""

    engine: Engine
    tokenizer: Any
    tools: ToolSet
    context_length: int = 0


def load_teacher(
    spec: str,
    config,
    *,
    tokenizer: str | None = None,
    api: str = "completions",
    device: str = "cpu",
    seed: int = 0,
    timeout: float = 600.0,
    max_concurrency: int = 16,
    api_key: str | None = None,
) -> Teacher:
    """The teacher `spec` names, with the real tools of `config.tools`, built by the
    engine factory like every other engine:

    - `http://host:port` (or https): a served model (`rollout.engine=openai`; `api`:
      completions with token ids, or chat); `tokenizer` must be the served model's;
    - `scripted:module:function` or `scripted:path/to/file.py:function`: a Python policy
      `context_text -> turn_text` (`rollout.engine=scripted`; `tokenizer` defaults to `tiny`);
    - anything else: a local HF checkpoint directory (`rollout.engine=hf`; its own tokenizer by
      default).

    `tokenizer` is a checkpoint or tokenizer directory, or `tiny` for the embedded tokenizer.
    """
    from toolrl.rollout.engines.factory import build_engine, load_tokenizer
    from toolrl.tools.registry import build_tools

    tools = build_tools(config.tools)
    rollout_cfg = config.rollout
    if spec.startswith(("http://", "https://")):
        if tokenizer is None:
            raise ValueError(
                f"teacher {spec}: give --tokenizer, the served model's tokenizer directory"
            )
        rollout = replace(
            rollout_cfg,
            engine="openai",
            server_url=spec,
            server_api=api,
            server_timeout=timeout,
            server_max_concurrency=max_concurrency,
        )
    elif spec.startswith("scripted:"):
        rollout = replace(rollout_cfg, engine="scripted", scripted_policy=spec[len("scripted:") :])
        tokenizer = tokenizer or "tiny"
    else:
        rollout = replace(rollout_cfg, engine="hf")
    tok = load_tokenizer(tokenizer or spec)
    config = replace(config, rollout=rollout, trainer=replace(config.trainer, seed=seed))
    try:
        engine = build_engine(
            config, spec, tokenizer=tok, device=device, tool_schemas=tools.schemas, api_key=api_key
        )
    except BaseException:
        tools.close()
        raise
    return Teacher(engine, tok, tools, engine.max_context_length)
