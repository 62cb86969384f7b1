"""The synthetic task suite: deterministic, disjoint splits; the scripted teacher really solves
its tasks through the sandbox, and the graders accept its answers and reject perturbed ones."""

import json
import re

import pytest

from toolrl.config import load_config
from toolrl.data.collect import collect, load_teacher
from toolrl.data.rl import load_rl_samples
from toolrl.data.tasks import make_splits, split_of, write_splits
from toolrl.data.tasks.families import FAMILIES, solve
from toolrl.rewards.registry import Graders, grader_kind
from toolrl.rollout.agent_loop import settings_from_config

SIZES = {"train": 60, "val": 12, "test": 24}


def test_splits_are_deterministic_disjoint_and_sized():
    splits = make_splits(3, SIZES)
    again = make_splits(3, SIZES)
    assert [t.question for t in splits["test"]] == [t.question for t in again["test"]]
    assert {t.question for t in make_splits(4, SIZES)["test"]} != {t.question for t in splits["test"]}  # fmt: skip
    questions = {name: {t.question for t in tasks} for name, tasks in splits.items()}
    assert {name: len(q) for name, q in questions.items()} == SIZES  # unique within a split
    assert not questions["train"] & questions["test"]
    assert not questions["train"] & questions["val"] and not questions["val"] & questions["test"]
    # The split is a function of the question alone, so no resize can leak a test question.
    bigger = make_splits(3, {"train": 200, "test": 24})
    assert all(split_of(t.question) == "train" for t in bigger["train"])
    assert not {t.question for t in bigger["train"]} & questions["test"]


def test_every_kind_family_and_level_is_generated_and_routed_to_its_grader(tmp_path):
    splits = make_splits(0, {"train": 300})
    seen = {(t.kind, t.family, t.level) for t in splits["train"]}
    assert {f for _, f, _ in seen} == set(FAMILIES) and {lv for *_, lv in seen} == {1, 2, 3}
    paths = write_splits(tmp_path, make_splits(0, {"train": 8, "test": 12}))
    assert set(paths) == {"train", "test", "test_math", "test_choice", "test_code"}
    for kind, expected in (("math", "math"), ("choice", "choice"), ("code", "code")):
        samples = load_rl_samples(paths[f"test_{kind}"])
        assert samples and all(grader_kind(s.data_source) == expected for s in samples)


def test_unknown_kind_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown kinds"):
        make_splits(0, {"train": 4}, weights={"poetry": 1.0})


def test_every_question_reads_back_into_a_program_that_computes_its_answer():
    for task in make_splits(1, {"train": 120})["train"]:
        family, program = solve(task.question)
        assert family.name == task.family
        if task.kind == "math":
            assert str(eval(program[len("print(") : -1])) == task.ground_truth


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    """The scripted teacher on 24 tasks of every kind, through the real sandbox."""
    out = tmp_path_factory.mktemp("tasks")
    path = write_splits(out, make_splits(0, {"train": 24}))["train"]
    config = load_config(
        None,
        [
            "rollout.max_response_length=400",
            "rollout.max_turns=4",
            "tools.timeout=10",
            "reward.overlong_buffer=100",
        ],
    )
    teacher = load_teacher("scripted:toolrl.data.tasks.teacher:policy", config)
    samples = load_rl_samples(path)
    settings = settings_from_config(config.rollout, tools=config.tools)
    result = collect(teacher.engine, teacher.tokenizer, teacher.tools, samples, settings=settings)
    yield result
    teacher.tools.close()


def test_teacher_solves_its_tasks_by_really_calling_the_sandbox(teacher_run):
    stats = teacher_run.stats
    assert stats["accuracy"] == 1.0 and stats["kept"] == 24
    # Every choice and code task goes through the tool; some math ones are answered at once
    # (the behaviour RL has to unlearn), with the worked value: still graded correct above.
    direct = [t for t in teacher_run.trajectories if t.num_tool_calls == 0]
    assert direct and len(direct) < len(teacher_run.trajectories) // 2
    assert all(t.sample.data_source == "toy_math" and " = " in t.final_text for t in direct)
    # Some trajectories recover from a deliberate tool error: the error came from the sandbox.
    recovered = [t for t in teacher_run.trajectories if t.num_tool_calls > t.num_successful_tool_calls]  # fmt: skip
    assert recovered
    for traj in recovered:
        assert "Error" in traj.tool_calls[0].result and traj.tool_calls[-1].status == "success"


def _perturb(text: str) -> str:
    """The answer with one thing changed: a digit, the letter, or the program's constant."""
    if "```python" in text:
        return text.replace("print(", "print(1+", 1)
    letter = re.search(r"\\boxed\{([A-D])\}", text)
    if letter:
        return text.replace(letter[0], "\\boxed{" + "BCDA"["ABCD".index(letter[1])] + "}")
    digit = re.search(r"\\boxed\{-?(\d)", text)
    return text[: digit.start(1)] + str((int(digit[1]) + 1) % 10) + text[digit.end(1) :]


def test_graders_accept_the_teachers_answers_and_reject_perturbed_ones(teacher_run):
    graders = Graders()
    kinds = set()
    for traj in teacher_run.trajectories:
        kinds.add(grader_kind(traj.sample.data_source))
        assert graders.grade(traj.sample, traj.final_text).acc, traj.final_text
        wrong = _perturb(traj.final_text)
        assert wrong != traj.final_text
        assert not graders.grade(traj.sample, wrong).acc, wrong
    assert kinds == {"math", "choice", "code"}


def test_code_ground_truth_is_stdin_stdout_tests():
    task = next(t for t in make_splits(2, {"train": 20})["train"] if t.kind == "code")
    tests = json.loads(task.ground_truth)
    assert len(tests["inputs"]) == len(tests["outputs"]) == 3


def test_teachers_mental_arithmetic_evaluates_only_integer_arithmetic():
    from toolrl.data.tasks.teacher import _direct_answer

    assert _direct_answer("math", "print((9*525-176)//35)", "q") == "(9*525-176)//35 = 129\n\\boxed{129}"  # fmt: skip
    assert _direct_answer("math", "print(pow(701,99,553))", "q").endswith("\\boxed{491}")
    for program in ("print(__import__('os').getpid())", "print(open('x').read())", "print(2.5*2)"):
        with pytest.raises(ValueError, match="not an expression of the task suite"):
            _direct_answer("math", program, "q")
