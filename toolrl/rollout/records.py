"""Trajectories as JSON records for people to read (and for tools to reload exactly)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from toolrl.types import Trajectory


def mask_spans(response_ids: list[int], loss_mask: list[int]) -> list[tuple[int, int, int]]:
    """Run-length spans (start, end, mask) over the response: which tokens the policy sampled."""
    spans: list[tuple[int, int, int]] = []
    for i, m in enumerate(loss_mask):
        if spans and spans[-1][2] == m:
            spans[-1] = (spans[-1][0], i + 1, m)
        else:
            spans.append((i, i + 1, m))
    return spans


def trajectory_record(traj: Trajectory, tokenizer) -> dict[str, Any]:
    """One JSON-ready record: texts, token-level mask spans with their text, turns, tool calls."""
    spans = [
        {
            "start": start,
            "end": end,
            "mask": mask,
            "source": "policy" if mask else "injected",
            "text": tokenizer.decode(traj.response_ids[start:end]),
        }
        for start, end, mask in mask_spans(traj.response_ids, traj.loss_mask)
    ]
    return {
        "sample_id": traj.sample.id,
        "group_index": traj.group_index,
        "data_source": traj.sample.data_source,
        "ground_truth": traj.sample.ground_truth,
        "prompt": tokenizer.decode(traj.prompt_ids),
        "response": tokenizer.decode(traj.response_ids),
        "stop_reason": traj.stop_reason,
        "reward": traj.reward,
        "reward_info": traj.reward_info,
        "num_turns": len(traj.turns),
        "num_tool_calls": traj.num_tool_calls,
        "num_successful_tool_calls": traj.num_successful_tool_calls,
        "response_length": traj.response_length,
        "spans": spans,
        "turns": [asdict(turn) for turn in traj.turns],
        "prompt_ids": traj.prompt_ids,
        "response_ids": traj.response_ids,
        "rollout_logprobs": traj.rollout_logprobs,
    }
