"""`toolrl data filter`: pass rates under a model, 0% and 100% dropped, difficulty labels."""

import json
import threading
from collections import Counter

import pytest

from toolrl.chat import encode, end_of_turn_token
from toolrl.cli import main
from toolrl.data.filter import difficulty, parse_target, pass_rates, resample
from toolrl.rollout.agent_loop import LoopSettings
from toolrl.rollout.engines.base import GenerationResult
from toolrl.template_check import TOOLS
from toolrl.types import Sample

# problem i is solved in CORRECT[i] of 8 rollouts
CORRECT = [0, 8, 2, 4, 6, 7, 1]
EXPECTED = {
    0: ("never_solved", "hard"),
    1: ("always_solved", "easy"),
    2: (None, "hard"),
    3: (None, "medium"),
    4: (None, "easy"),
    5: (None, "easy"),
    6: (None, "hard"),
}


class RiggedEngine:
    """Answers problem i correctly in its first CORRECT[i] rollouts, wrongly afterwards."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.eot = tokenizer.convert_tokens_to_ids(end_of_turn_token(tokenizer))
        self.seen = Counter()
        self.lock = threading.Lock()

    def generate(self, requests):
        return [self._one(r) for r in requests]

    def _one(self, request):
        problem = int(self.tokenizer.decode(request.prompt_ids).split("Problem ")[1].split(":")[0])
        with self.lock:
            n = self.seen[problem]
            self.seen[problem] += 1
        answer = "42" if n < CORRECT[problem] else "41"
        ids = [*encode(self.tokenizer, f"The answer is \\boxed{{{answer}}}."), self.eot]
        return GenerationResult(ids, [0.0] * len(ids), "stop")


class NoTool:
    name = "code_interpreter"
    schema = TOOLS[0]

    async def call(self, arguments):
        raise AssertionError("the rigged engine never calls a tool")


def samples() -> list[Sample]:
    return [
        Sample(
            id=f"p{i}",
            messages=[{"role": "user", "content": f"Problem {i}: what is 6 * 7?"}],
            data_source="math",
            ground_truth="42",
        )
        for i in range(len(CORRECT))
    ]


def test_pass_rates_drop_never_and_always_solved(tiny_tokenizer):
    rates = pass_rates(
        RiggedEngine(tiny_tokenizer),
        tiny_tokenizer,
        [NoTool()],
        samples(),
        k=8,
        settings=LoopSettings(max_response_length=64),
    )
    assert [r.correct for r in rates] == CORRECT
    assert [r.pass_rate for r in rates] == [c / 8 for c in CORRECT]
    assert {r.index: (r.drop_reason, r.difficulty) for r in rates} == EXPECTED
    assert [r.sample_id for r in rates if r.kept] == ["p2", "p3", "p4", "p5", "p6"]


def test_difficulty_boundaries():
    assert [difficulty(x) for x in (0.25, 0.26, 0.74, 0.75)] == ["hard", "medium", "medium", "easy"]
    assert difficulty(0.5, easy=0.5, hard=0.1) == "easy"


def test_resample_to_a_target_histogram():
    labels = ["easy"] * 10 + ["medium"] * 6 + ["hard"] * 3
    target = parse_target("easy=2,medium=2,hard=1")
    picked = resample(labels, target, seed=1)
    # hard is the scarcest relative to its weight: 3 hard -> 6 easy, 6 medium
    assert Counter(labels[i] for i in picked) == {"easy": 6, "medium": 6, "hard": 3}
    assert len(set(picked)) == len(picked) and picked == sorted(picked)
    up = resample(labels, target, size=25, seed=1)
    assert Counter(labels[i] for i in up) == {"easy": 10, "medium": 10, "hard": 5}
    assert resample(labels, target, seed=1) == picked  # seeded
    with pytest.raises(ValueError, match="expected easy=W"):
        parse_target("easy=1,trivial=2")
    with pytest.raises(ValueError, match="no hard problems"):
        resample(["easy", "medium"], target)


POLICY = """
from collections import Counter
CORRECT = {correct}
seen = Counter()

def policy(context):
    problem = int(context.split("Problem ")[1].split(":")[0])
    seen[problem] += 1
    return "\\\\boxed{{42}}" if seen[problem] <= CORRECT[problem] else "\\\\boxed{{41}}"
"""


def write_tasks(path, n):
    rows = [
        {
            "prompt": [{"role": "user", "content": f"Problem {i}: what is 6 * 7?"}],
            "data_source": "math",
            "ability": "math",
            "reward_model": {"ground_truth": "42", "style": "rule"},
            "extra_info": {"index": i, "split": "train"},
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_cli_with_a_scripted_model(tmp_path):
    (tmp_path / "rigged.py").write_text(POLICY.format(correct=CORRECT))
    write_tasks(tmp_path / "tasks.jsonl", len(CORRECT))
    out = tmp_path / "rl.jsonl"
    args = [
        "data",
        "filter",
        "--model",
        f"scripted:{tmp_path / 'rigged.py'}:policy",
        "--data",
        str(tmp_path / "tasks.jsonl"),
        "--k",
        "8",
        "--out",
        str(out),
        "rollout.max_response_length=64",
        "reward.overlong_shaping=false",
    ]
    assert main(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["extra_info"]["index"] for r in rows] == [2, 3, 4, 5, 6]
    assert [r["extra_info"]["difficulty"] for r in rows] == [
        "hard",
        "medium",
        "easy",
        "easy",
        "hard",
    ]
    assert rows[0]["extra_info"] == {
        "index": 2,
        "split": "train",
        "pass_rate": 0.25,
        "difficulty": "hard",
    }
    rates = [
        json.loads(line) for line in (tmp_path / "rl.pass_rates.jsonl").read_text().splitlines()
    ]
    assert [r["drop_reason"] for r in rates[:2]] == ["never_solved", "always_solved"]
    assert (tmp_path / "rl.pass_rates.png").stat().st_size > 1000
    # resampled to one easy per hard problem, written as parquet
    (tmp_path / "rigged.py").write_text(POLICY.format(correct=CORRECT))
    args[args.index(str(out))] = str(tmp_path / "even.parquet")
    assert main([*args, "--target", "easy=1,hard=1"]) == 0
    from toolrl.data.rl import load_rl_samples

    picked = load_rl_samples(tmp_path / "even.parquet")
    assert Counter(s.extra_info["difficulty"] for s in picked) == {"easy": 2, "hard": 2}


def test_cli_on_the_tiny_model_drops_never_solved(tmp_path, tiny_dir):
    write_tasks(tmp_path / "tasks.jsonl", 2)
    out = tmp_path / "rl.jsonl"
    args = [
        "data",
        "filter",
        "--model",
        str(tiny_dir),
        "--data",
        str(tmp_path / "tasks.jsonl"),
        "--k",
        "2",
        "--out",
        str(out),
        "rollout.max_response_length=6",
        "reward.overlong_shaping=false",
    ]
    assert main(args) == 0
    assert out.read_text() == ""  # an untrained model solves nothing: every problem is dropped
    rates = [
        json.loads(line) for line in (tmp_path / "rl.pass_rates.jsonl").read_text().splitlines()
    ]
    assert [(r["correct"], r["drop_reason"]) for r in rates] == [(0, "never_solved")] * 2
