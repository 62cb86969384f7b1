"""The records shared by rollout, rewards, trainer and evaluation.

`Sample` is a task; `Turn` is one assistant turn and the tool calls it made; `Trajectory` is one
rollout of a sample, token-exact: `prompt_ids + response_ids` is exactly what the model saw, and
`loss_mask` says which response tokens the policy sampled (1) and which were injected (0: tool
observations and the chat template's glue). Each stage takes a Trajectory and returns it
enriched; derived values are properties, not stored fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

StopReason = Literal[
    "answered",  # the model ended a turn without a tool call
    "max_turns",  # rollout.max_turns assistant turns were used
    "max_response_tokens",  # the response budget (sampled + tool tokens) ran out
    "max_context",  # the model's context window is full
    "tool_error",  # the sandbox itself failed (infrastructure, not the policy)
    "timeout",  # rollout.trajectory_timeout wall-clock seconds passed
]

ToolStatus = Literal["success", "error", "infra_error", "parse_error"]


@dataclass
class Sample:
    """One task: the prompt messages and what grades the answer."""

    id: str
    messages: list[dict[str, Any]]
    data_source: str
    ground_truth: Any
    extra_info: dict[str, Any] = field(default_factory=dict)


@dataclass
class ToolCall:
    """One tool call as the model wrote it, and what came back."""

    name: str
    arguments: dict[str, Any]
    status: ToolStatus
    result: str
    """The observation text the model saw (already truncated)."""
    elapsed_s: float = 0.0


@dataclass
class Turn:
    """One assistant turn: the text the model sampled, and the tool calls it made."""

    text: str
    num_sampled_tokens: int
    num_observation_tokens: int = 0
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str = ""
    generate_s: float = 0.0
    tool_s: float = 0.0
    weight_version: int = 0
    """The policy's weight version (updates trained) that sampled this turn's tokens."""


@dataclass
class Trajectory:
    """One rollout of a sample, exact to the token."""

    sample: Sample
    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    rollout_logprobs: list[float] = field(default_factory=list)
    """Log-probability of each response token under the sampling distribution (0.0 where mask 0)."""
    turns: list[Turn] = field(default_factory=list)
    stop_reason: StopReason | None = None
    group_index: int = 0
    """Position within the sample's group of rollouts (the group is the sample id)."""
    reward: float | None = None
    reward_info: dict[str, Any] = field(default_factory=dict)

    @property
    def response_length(self) -> int:
        """All response tokens, sampled and injected: the length the overlong penalty counts."""
        return len(self.response_ids)

    @property
    def tool_calls(self) -> list[ToolCall]:
        return [call for turn in self.turns for call in turn.tool_calls]

    @property
    def num_tool_calls(self) -> int:
        return len(self.tool_calls)

    @property
    def num_successful_tool_calls(self) -> int:
        return sum(call.status == "success" for call in self.tool_calls)

    @property
    def has_infra_error(self) -> bool:
        """A tool call's infrastructure failed (the sandbox, a tool server): not the policy's doing."""
        return any(call.status == "infra_error" for call in self.tool_calls)

    @property
    def excluded_from_training(self) -> bool:
        """Infrastructure failed during the rollout (a tool call) or while grading (the code
        grader's sandbox): the reward says nothing about the policy, so RL leaves the trajectory
        out of the loss and of its group's baseline, and data collection and filtering drop it.
        The one rule every consumer uses; counted as `rollout/infra_masked`."""
        return self.has_infra_error or bool(self.reward_info.get("infra_error"))

    @property
    def final_text(self) -> str:
        """The text of the last assistant turn, where the answer is graded."""
        return self.turns[-1].text if self.turns else ""

    def messages(self) -> list[dict[str, Any]]:
        """The conversation the tokens encode: the prompt, then each turn and the tool results
        that were shown to the model (a last turn's results are absent if the trajectory stopped
        before they were appended)."""
        messages = list(self.sample.messages)
        for turn in self.turns:
            messages.append({"role": "assistant", "content": turn.text})
            if turn.num_observation_tokens:
                messages += [{"role": "tool", "content": c.result} for c in turn.tool_calls]
        return messages

    def check(self) -> None:
        """Raise if the token-level fields disagree in length (a toolrl bug, never user error)."""
        n = len(self.response_ids)
        if len(self.loss_mask) != n or len(self.rollout_logprobs) != n:
            raise AssertionError(
                f"trajectory {self.sample.id}#{self.group_index}: response_ids {n}, "
                f"loss_mask {len(self.loss_mask)}, rollout_logprobs {len(self.rollout_logprobs)}"
            )
