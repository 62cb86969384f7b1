"""`evaluate` with a scripted model: every mode graded, metrics, files, resuming."""

import json

import pytest

from toolrl.config import EvalConfig, RewardConfig, RolloutConfig
from toolrl.eval.benchmarks import load_benchmark, load_humaneval
from toolrl.eval.runner import evaluate
from toolrl.rollout.engines.scripted import ScriptedEngine

CALL = (
    '<tool_call>\n{"name": "code_interpreter", "arguments": {"code": "print(3 + 4)"}}\n</tool_call>'
)
HUMANEVAL = {
    s.extra_info["prompt_code"]: s.extra_info["canonical_solution"] for s in load_humaneval()[:2]
}
ANSWERS = {  # problem text → final answer (strict wrong but equivalent right for some)
    "What is 3 + 4?": "\\boxed{7}",
    "What is 2 * 5?": "\\boxed{10.0}",
    "What is 1/2 + 1/4?": "\\boxed{0.75}",
    "What is 9 - 2?": "\\boxed{7}",
    "Which is a noble gas?": "\\boxed{(B)}",
    "2+2?": "\\boxed{C}",
    "print a + b.": "```python\na, b = map(int, input().split())\nprint(a + b)\n```",
    "print a * b.": "```python\nprint(0)\n```",
}  # fmt: skip


def policy(context: str) -> str:
    if "What is 3 + 4?" in context and "<tool_response>" not in context:
        return "Let me compute.\n" + CALL
    for needle, answer in ANSWERS.items():
        if needle in context:
            return "Done. " + answer
    for prompt, solution in HUMANEVAL.items():
        if prompt in context:
            return "```python\n" + prompt + solution + "```"
    return "I do not know."


class CountingEngine(ScriptedEngine):
    def __init__(self, tokenizer):
        super().__init__(tokenizer, policy)
        self.requests = 0

    def generate(self, requests):
        self.requests += len(requests)
        return super().generate(requests)


@pytest.fixture(scope="module")
def tools():
    from toolrl.sandbox import Sandbox
    from toolrl.tools.code_interpreter import CodeInterpreter

    sandbox = Sandbox()
    yield [CodeInterpreter(sandbox)]
    sandbox.close()


def run(tiny_tokenizer, tools, benchmarks, out_dir, k=2, engine=None, execution="official"):
    engine = engine or CountingEngine(tiny_tokenizer)
    rollout = RolloutConfig(max_turns=3, max_response_length=4096)
    eval_cfg = EvalConfig(k=k, code_execution=execution)
    summaries = evaluate(
        engine, tiny_tokenizer, tools, benchmarks, eval_cfg, rollout, out_dir,
        reward_cfg=RewardConfig(math_mode="strict"), chunk_size=2,
    )  # fmt: skip
    return summaries, engine


def test_every_mode_is_graded_and_summarised(tiny_tokenizer, tools, bench_files, tmp_path):
    benchmarks = {name: load_benchmark(name, path) for name, path in bench_files.items()}
    benchmarks["humaneval"] = load_humaneval()[:2]
    summaries, _ = run(tiny_tokenizer, tools, benchmarks, tmp_path / "out")
    m = {name: s["metrics"] for name, s in summaries.items()}
    assert m["aime24"]["acc/avg@2"] == 0.5 and m["aime24"]["acc_strict/avg@2"] == 0.5
    assert m["aime24"]["acc_equivalent/avg@2"] == 1.0
    assert m["aime25"]["acc/avg@2"] == 0.5 and m["aime25"]["acc_equivalent/pass@2"] == 1.0
    assert m["gpqa"]["acc_strict/avg@2"] == 0.5 and m["gpqa"]["acc_equivalent/avg@2"] == 1.0
    assert m["lcb"]["acc/avg@2"] == 0.5 and summaries["lcb"]["modes"] == ["code"]
    assert summaries["lcb"]["code_execution"] == "official"  # LiveCodeBench's harness
    assert summaries["humaneval"]["code_execution"] == "isolated"  # asserts always run isolated
    assert "code_execution" not in summaries["aime24"]
    assert m["humaneval"]["acc/avg@2"] == 1.0 and m["humaneval"]["acc/maj@2"] == 1.0
    assert m["aime24"]["tool/calls_per_response"] == 0.5 and m["aime24"]["tool/success_rate"] == 1.0
    assert m["aime24"]["stop_reason/answered"] == 1.0
    assert m["aime24"]["acc/best@2/mean"] == 0.5 and "acc/maj@2/mean" in m["aime24"]
    lo, hi = summaries["aime24"]["intervals"]["acc/avg@2"]
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0

    records = [
        json.loads(x) for x in (tmp_path / "out/aime24/samples.jsonl").read_text().splitlines()
    ]
    assert len(records) == 4
    first = records[0]
    assert first["grades"]["strict"]["acc"] and first["tool_calls"][0]["result"].strip() == "7"
    assert (
        first["pred"] == "7" and first["stop_reason"] == "answered" and "3 + 4" in first["prompt"]
    )
    assert json.loads((tmp_path / "out/summary.json").read_text()).keys() == summaries.keys()
    table = (tmp_path / "out/summary.md").read_text()
    assert "| aime24 | 2 | strict | 0.500" in table and "equivalent 1.000" in table


def test_resuming_skips_finished_problems(tiny_tokenizer, tools, bench_files, tmp_path):
    benchmarks = {"aime24": load_benchmark("aime24", bench_files["aime24"])}
    out = tmp_path / "out"
    first, engine = run(tiny_tokenizer, tools, benchmarks, out)
    assert engine.requests == 6  # 2 problems × k=2, one of them with a tool call

    again, engine = run(tiny_tokenizer, tools, benchmarks, out)
    assert engine.requests == 0 and again == first

    samples = out / "aime24/samples.jsonl"
    lines = samples.read_text().splitlines()
    samples.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])  # cut mid-problem
    resumed, engine = run(tiny_tokenizer, tools, benchmarks, out)
    assert engine.requests == 2 and resumed == first  # only the unfinished problem again
    assert len(samples.read_text().splitlines()) == 4

    with pytest.raises(ValueError, match="k: 2 → 3"):
        run(tiny_tokenizer, tools, benchmarks, out, k=3)


def test_a_benchmark_mixing_math_and_code_is_summarised(
    tiny_tokenizer, tools, bench_files, tmp_path
):
    """Math rows have strict and equivalent grades, code rows one `code` grade: a mixed file
    (like `toolrl data tasks`'s test.jsonl) once failed with KeyError 'code'. A row without a
    mode counts with its own grade there."""
    mixed = [
        *load_benchmark("aime24", bench_files["aime24"]),
        *load_benchmark("lcb", bench_files["lcb"]),
    ]
    summaries, _ = run(tiny_tokenizer, tools, {"mixed": mixed}, tmp_path / "out")
    summary = summaries["mixed"]
    assert summary["modes"] == ["strict", "equivalent", "code"]
    m = summary["metrics"]
    # aime24 strict 0.5, equivalent 1.0 (2 problems); lcb 0.5 (2 problems): averaged by problem
    assert m["acc_strict/avg@2"] == pytest.approx((0.5 * 2 + 0.5 * 2) / 4)
    assert m["acc_equivalent/avg@2"] == pytest.approx((1.0 * 2 + 0.5 * 2) / 4)
    assert m["acc_code/avg@2"] == pytest.approx((0.5 * 2 + 0.5 * 2) / 4)  # math rows: strict


def test_code_execution_is_recorded_and_resuming_with_another_is_refused(
    tiny_tokenizer, tools, bench_files, tmp_path
):
    benchmarks = {"lcb": load_benchmark("lcb", bench_files["lcb"])}
    out = tmp_path / "out"
    summaries, _ = run(tiny_tokenizer, tools, benchmarks, out, execution="isolated")
    assert summaries["lcb"]["code_execution"] == "isolated"
    record = json.loads((out / "lcb/samples.jsonl").read_text().splitlines()[0])
    assert record["grades"]["code"]["details"]["execution"] == "isolated"
    assert "| lcb | 2 | code (isolated execution) |" in (out / "summary.md").read_text()
    with pytest.raises(ValueError, match="code_execution: isolated → official"):
        run(tiny_tokenizer, tools, benchmarks, out)
