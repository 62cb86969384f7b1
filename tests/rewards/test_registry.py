"""Routing by data source, and the shaped RL reward of a trajectory."""

import asyncio

import pytest

from toolrl.config import RewardConfig
from toolrl.rewards.registry import Graders, grader_kind, register_data_source, reward_for
from toolrl.rewards.shaping import shape_rewards
from toolrl.types import Sample, ToolCall, Trajectory, Turn


@pytest.mark.parametrize(
    ("data_source", "kind"),
    [("aime24", "math"), ("AIME2025", "math"), ("math_dapo", "math"), ("gpqa_diamond", "choice"),
     ("LiveCodeBench_v6", "code"), ("humaneval", "code"), ("skywork_code", "code"), ("other", "math")],
)  # fmt: skip
def test_routing_by_data_source(data_source, kind):
    assert grader_kind(data_source) == kind


def test_registered_names_win():
    register_data_source("my_letters", "choice")
    assert grader_kind("my_letters") == "choice"
    with pytest.raises(ValueError, match="unknown grader kind"):
        register_data_source("x", "poetry")  # type: ignore[arg-type]


def test_gpqa_strict_is_the_papers_exact_box_and_equivalent_reads_letters():
    s = Sample(id="g", messages=[], data_source="gpqa_diamond", ground_truth="B")
    graders = Graders(RewardConfig())
    assert not graders.grade(s, "\\boxed{(B)}", "strict").acc
    assert graders.grade(s, "\\boxed{(B)}", "equivalent").acc
    assert graders.grade(s, "\\boxed{B}", "strict").acc


def traj(answer: str, statuses: list[str], length: int, source="aime24", gold="7") -> Trajectory:
    sample = Sample(id="s", messages=[], data_source=source, ground_truth=gold)
    calls = [ToolCall("code_interpreter", {"code": "1"}, st, "1") for st in statuses]
    turns = [Turn(text="call", num_sampled_tokens=1, tool_calls=calls), Turn(answer, 1)]
    return Trajectory(sample=sample, prompt_ids=[1], response_ids=[0] * length, turns=turns)


def test_reward_for_composes_outcome_tool_and_overlong_terms():
    config = RewardConfig(overlong_buffer=10)
    right = traj("\\boxed{7}", ["success"] * 3, 5)
    grade = reward_for(right, config, max_response_length=20)
    assert grade.acc and right.reward == 1.0 and right.reward_info["tool_shaping"] == 0.0

    # wrong, 3 completed calls (a failed program still ran; parse errors and infra do not count)
    wrong = traj("\\boxed{8}", ["success", "error", "parse_error", "infra_error", "success"], 5)
    reward_for(wrong, config, max_response_length=20)
    assert wrong.reward_info["num_completed_tool_calls"] == 3
    assert wrong.reward == pytest.approx(-0.7)
    assert wrong.reward_info["score"] == -1.0 and wrong.reward_info["pred"] == "8"

    many = traj("\\boxed{8}", ["success"] * 9, 15)  # capped at -0.6, then 5/10 into the buffer
    reward_for(many, config, max_response_length=20)
    assert many.reward_info["tool_shaping"] == pytest.approx(0.4)
    assert many.reward_info["overlong_penalty"] == pytest.approx(-0.5)
    assert many.reward == pytest.approx(-1.1)

    off = RewardConfig(tool_shaping=False, overlong_shaping=False)
    reward_for(many, off, max_response_length=20)
    assert many.reward == -1.0


def test_shape_rewards_matches_the_paper_formula():
    config = RewardConfig(overlong_shaping=False)
    shaped = shape_rewards([-1.0] * 6, [False] * 6, [0, 1, 2, 4, 5, 20], [0] * 6, config, 100)
    assert shaped.rewards == pytest.approx([-1.0, -0.9, -0.8, -0.6, -0.6, -0.6])
    kept = shape_rewards([0.5, 1.0], [False, True], [20, 20], [0, 0], config, 100)
    assert kept.rewards == [0.5, 1.0]  # shaping never lowers a score, never touches a correct one


def test_sync_grading_works_inside_a_running_event_loop():
    s = Sample(id="c", messages=[], data_source="livecodebench", ground_truth={
        "inputs": ["2\n"], "outputs": ["4\n"]})  # fmt: skip

    async def inside():
        return Graders(RewardConfig()).grade(s, "```python\nprint(int(input()) * 2)\n```")

    assert asyncio.run(inside()).acc


def test_malformed_ground_truth_names_the_sample():
    s = Sample(id="bad-7", messages=[], data_source="code_x", ground_truth={"inputs": []})
    with pytest.raises(ValueError, match="sample bad-7"):
        Graders(RewardConfig()).grade(s, "```python\nprint(1)\n```")


def test_rewards_run_code_isolated_unless_told_otherwise():
    lcb = Sample(id="c", messages=[], data_source="livecodebench_v6", ground_truth={
        "inputs": ["2\n"], "outputs": ["4\n"]})  # fmt: skip
    humaneval = Sample(id="h", messages=[], data_source="humaneval", ground_truth={
        "test_code": "def check(f):\n    assert f() == 1", "entry_point": "f"})  # fmt: skip
    rewards = Graders(RewardConfig())
    assert rewards.get("livecodebench_v6").execution == "isolated"
    assert rewards.code_execution_for(lcb) == "isolated"
    official = Graders(RewardConfig(code_execution="official"))
    assert official.get("livecodebench_v6").execution == "official"
    evaluation = Graders(RewardConfig(), code_execution="official")
    assert evaluation.code_execution_for(lcb) == "official"
    assert evaluation.code_execution_for(humaneval) == "isolated"  # asserts always run isolated
    aime = Sample(id="m", messages=[], data_source="aime24", ground_truth="7")
    assert evaluation.code_execution_for(aime) is None
    # sys.exit(1) after the right output: LiveCodeBench (and official execution) accept it
    exits = "```python\nprint(int(input()) * 2)\nsys.exit(1)\n```"
    assert not rewards.grade(lcb, exits).acc and evaluation.grade(lcb, exits).acc
    with pytest.raises(ValueError, match="use isolated or official"):
        Graders(RewardConfig(), code_execution="fast")
