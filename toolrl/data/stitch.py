"""The paper's stitched baseline: tool use pasted into text-only solutions after the fact.

The paper's first finding is that SFT on real end-to-end trajectories (a teacher really calls
the tool and reads its output, `data/collect.py`) beats SFT on stitched ones by a wide margin.
This builds the stitched kind from solutions written without any tool:

1. the solution is split into steps: paragraphs (blank lines), else lines, else sentences;
2. in each step but the last, arithmetic the text states as `expression = value` (plain or
   LaTeX: `\\times`, `\\cdot`, `\\div`, `^`, `\\frac{a}{b}`, `\\sqrt{x}`) is found and turned into
   Python; the first `max_calls` such steps get a code_interpreter call `print(expression)`
   appended right after them, in the hermes format the model writes;
3. the tool's "output" is the value the text states (`outputs="claimed"`, the default), or what
   the sandbox prints for the inserted code (`outputs="executed"`). Either way the reasoning
   around it was written before and without the output: nothing here is an end-to-end
   interaction, which is the point of the baseline. Outputs are middle-truncated like the real
   tool's observations.

Rows come out in the same `messages` + `tools` schema as `toolrl data collect`, marked
`stitched: true`, so the two SFT sets can be compared with everything else equal.
"""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from toolrl.chat import code_interpreter_call
from toolrl.tools.code_interpreter import middle_truncate

SOLUTION_COLUMNS = ("solution", "response", "output", "completion")
PROBLEM_COLUMNS = ("problem", "question")
_NUMBER = r"-?\d+(?:\.\d+)?"
_LATEX_CMD = r"\\(?:times|cdot|div|frac|dfrac|tfrac|sqrt|left|right)"
# `= value`, where the value is a number (or a fraction a / b) that no operator follows.
_RESULT = re.compile(
    rf"=\s*(?P<rhs>{_NUMBER}(?:\s*/\s*\d+)?)(?![\d.]*\d)(?!\s*(?:[-+*/^×·÷]|{_LATEX_CMD}))"
)
# The longest run of arithmetic characters (digits, operators, brackets, LaTeX) before it.
_EXPRESSION = re.compile(rf"(?:[\d\s.+\-*/×·÷^(){{}}\[\]]|{_LATEX_CMD})+$")
_ALLOWED = (
    ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Add, ast.Sub, ast.Mult, ast.Div,
    ast.Pow, ast.Mod, ast.FloorDiv, ast.USub, ast.UAdd,
)  # fmt: skip


@dataclass
class Computation:
    """A calculation a step states: the Python for it and the value the text claims."""

    code: str
    claimed: str


def split_steps(solution: str) -> list[str]:
    """Steps whose concatenation is exactly `solution` (each keeps its trailing separator)."""
    for pattern in (r"(\n\s*\n)", r"(\n)", r"((?<=[.!?])\s+)"):
        parts = re.split(pattern, solution)
        steps = ["".join(parts[i : i + 2]) for i in range(0, len(parts), 2)]
        steps = [s for s in steps if s]
        if len(steps) > 1:
            return steps
    return [solution] if solution else []


def to_python(expression: str) -> str | None:
    """Plain or LaTeX arithmetic as a Python expression, or None when it is not pure arithmetic."""
    text = expression.strip().strip("$").strip()
    for _ in range(8):  # nested \frac / \sqrt, innermost first
        new = re.sub(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}", r"((\1)/(\2))", text)
        new = re.sub(r"\\sqrt\{([^{}]*)\}", r"((\1)**0.5)", new)
        if new == text:
            break
        text = new
    text = re.sub(r"\\(?:left|right)", "", text)
    text = re.sub(r"\\times|×|\\cdot|·", "*", text)
    text = re.sub(r"\\div|÷", "/", text).replace("^", "**")
    text = text.replace("{", "(").replace("}", ")").replace("[", "(").replace("]", ")")
    text = re.sub(r"\s+", " ", text).strip()
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return None
    nodes = list(ast.walk(tree))
    if not all(isinstance(node, _ALLOWED) for node in nodes):
        return None
    if not any(isinstance(node, ast.BinOp) for node in nodes):
        return None  # a bare number restated is not a calculation
    return text


def find_computation(step: str) -> Computation | None:
    """The first `expression = value` in a step that is real arithmetic."""
    for match in _RESULT.finditer(step):
        run = _EXPRESSION.search(step, 0, match.start())
        # The expression starts at its first digit, bracket or LaTeX command (not at "x = ").
        start = re.search(rf"[\d(\[{{]|{_LATEX_CMD}", run.group()) if run else None
        code = to_python(run.group()[start.start() :]) if start else None
        if code is not None:
            return Computation(code, re.sub(r"\s+", "", match.group("rhs")))
    return None


def stitch(
    prompt: list[dict[str, Any]],
    solution: str,
    *,
    max_calls: int = 3,
    run: Callable[[str], str] | None = None,
    max_output_chars: int = 256,
) -> tuple[list[dict[str, Any]], int]:
    """(messages, number of inserted calls): the prompt, then the solution's steps with a tool
    call after each chosen step and its stitched output (`run(code)` if given, else the
    value the text claims)."""
    steps = split_steps(solution)
    messages, pending, calls = list(prompt), "", 0
    for i, step in enumerate(steps):
        pending += step
        found = find_computation(step) if calls < max_calls and i < len(steps) - 1 else None
        if found is None:
            continue
        code = f"print({found.code})"
        output = run(code) if run is not None else found.claimed + "\n"
        messages.append(
            {"role": "assistant", "content": pending.rstrip() + "\n" + code_interpreter_call(code)}
        )
        messages.append({"role": "tool", "content": middle_truncate(output, max_output_chars)})
        pending, calls = "", calls + 1
    messages.append({"role": "assistant", "content": pending.strip()})
    return messages, calls


def solution_of(
    row: dict[str, Any], column: str | None = None
) -> tuple[list[dict[str, Any]], str] | None:
    """(prompt messages, text solution) of a row, or None if it has no text-only solution.

    Accepted: `prompt` (verl) or `problem`/`question` with a solution column (`column`, else
    the first of solution, response, output, completion), or SFT `messages` whose last message
    is an assistant answer with no tool call (then the messages before it are the prompt).
    """
    if "messages" in row and not column:
        messages = (
            json.loads(row["messages"]) if isinstance(row["messages"], str) else row["messages"]
        )
        if not messages or messages[-1].get("role") != "assistant":
            return None
        last = messages[-1]
        if last.get("tool_calls") or "<tool_call>" in (last.get("content") or ""):
            return None
        return [{"role": m["role"], "content": m["content"]} for m in messages[:-1]], last.get(
            "content"
        ) or ""
    names = [column] if column else [c for c in SOLUTION_COLUMNS if c in row]
    solution = row.get(names[0]) if names else None
    if not isinstance(solution, str) or not solution.strip():
        return None
    prompt = row.get("prompt")
    if isinstance(prompt, str) and prompt[:1] == "[":
        prompt = json.loads(prompt)
    if isinstance(prompt, list):
        return [{"role": m["role"], "content": m["content"]} for m in prompt], solution
    problem = (
        prompt
        if isinstance(prompt, str)
        else next((row[c] for c in PROBLEM_COLUMNS if c in row), None)
    )
    if not isinstance(problem, str):
        return None
    return [{"role": "user", "content": problem}], solution


def stitch_rows(
    rows: list[dict[str, Any]],
    tool_schemas: list[dict],
    *,
    column: str | None = None,
    max_calls: int = 3,
    run: Callable[[str], str] | None = None,
    max_output_chars: int = 256,
    keep_unstitched: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Stitched SFT rows for every row with a text solution, and statistics."""
    out, dropped, calls = [], Counter(), Counter()
    for i, row in enumerate(rows):
        found = solution_of(row, column)
        if found is None:
            dropped["no_text_solution"] += 1
            continue
        messages, n = stitch(
            found[0], found[1], max_calls=max_calls, run=run, max_output_chars=max_output_chars
        )
        if n == 0 and not keep_unstitched:
            dropped["no_computation"] += 1
            continue
        calls[n] += 1
        out.append(
            {
                "messages": messages,
                "tools": tool_schemas,
                "stitched": True,
                "outputs": "executed" if run is not None else "claimed",
                "source_row": i,
                "data_source": str(row.get("data_source", "unknown")),
                "num_tool_calls": n,
            }
        )
    stats = {
        "rows": len(rows),
        "stitched": len(out),
        "dropped": dict(dropped.most_common()),
        "tool_calls_histogram": {str(k): v for k, v in sorted(calls.items())},
    }
    return out, stats
