"""Tool-use metrics, overall and per tool: the one definition RL, evaluation and collection share.

For responses r = 1..N whose calls c have a tool name and a status:

    tool/calls_per_response         = Σ_r |calls(r)| / N
    tool/success_rate               = |{c : status(c) = success}| / |calls|      (0 if no calls)
    tool/<name>/calls_per_response  = Σ_r |calls(r) named <name>| / N
    tool/<name>/success_rate        = the success rate of the calls named <name>

Per-tool keys appear for every tool that was called at least once. A call the model wrote
that names no offered tool is counted under the name it wrote, one without a name under
`_unnamed`.
"""

from __future__ import annotations

from collections.abc import Iterable

UNNAMED = "_unnamed"


def tool_use_metrics(responses: Iterable[Iterable[tuple[str, str]]]) -> dict[str, float]:
    """The metrics of the module docstring from (tool name, status) pairs, one list a response."""
    count = 0
    calls: dict[str, int] = {}
    successes: dict[str, int] = {}
    for response in responses:
        count += 1
        for name, status in response:
            name = name or UNNAMED
            calls[name] = calls.get(name, 0) + 1
            successes[name] = successes.get(name, 0) + (status == "success")
    n, total = max(count, 1), sum(calls.values())
    metrics = {
        "tool/calls_per_response": total / n,
        "tool/success_rate": sum(successes.values()) / total if total else 0.0,
    }
    for name in sorted(calls):
        metrics[f"tool/{name}/calls_per_response"] = calls[name] / n
        metrics[f"tool/{name}/success_rate"] = successes[name] / calls[name]
    return metrics


def trajectory_tool_metrics(trajectories) -> dict[str, float]:
    """`tool_use_metrics` of Trajectory records."""
    return tool_use_metrics([(c.name, c.status) for c in t.tool_calls] for t in trajectories)
