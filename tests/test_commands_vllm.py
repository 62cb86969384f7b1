"""`rollout.engine=vllm` in `toolrl rollout`, `eval`, `data collect` and `serve` (through the one
engine factory) against real vLLM on the CPU (`make test-vllm`); `serve` is checked with the
openai SDK as its client."""

import json
import subprocess
import sys
import time

import pytest

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

VLLM = ["rollout.engine=vllm", "rollout.vllm_memory=0.05"]
SHORT = ["rollout.max_response_length=48", "reward.overlong_buffer=16"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from toolrl.models.tiny import write_tiny

    root = tmp_path_factory.mktemp("cmds")
    toolrl(["data", "tasks", "--out", str(root / "tasks"), "--train", "4", "--test", "4"])
    return root, write_tiny(root / "model", seed=0)


def toolrl(args, **kwargs):
    done = subprocess.run(
        [sys.executable, "-m", "toolrl.cli", *args], capture_output=True, text=True, **kwargs
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_rollout_eval_and_collect_run_on_vllm(setup):
    root, model = setup
    tasks = root / "tasks"
    out = toolrl(
        ["rollout", "--model", str(model), "--data", str(tasks / "train.jsonl"), "--out",
         str(root / "ro.jsonl"), "--n", "2", "--limit", "2", *VLLM, *SHORT]
    )  # fmt: skip
    rows = [json.loads(line) for line in (root / "ro.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and "wrote 4 trajectories" in out.stdout
    toolrl(
        ["eval", "--model", str(model), "--bench", f"tiny={tasks / 'test.jsonl'}", "--out",
         str(root / "ev"), "--k", "2", *VLLM, *SHORT]
    )  # fmt: skip
    summary = json.loads((root / "ev" / "summary.json").read_text())
    assert summary["tiny"]["num_problems"] == 4 and summary["tiny"]["k"] == 2
    toolrl(
        ["data", "collect", "--teacher", str(model), "--tasks", str(tasks / "train.jsonl"),
         "--n", "2", "--limit", "2", "--keep", "all", "--out", str(root / "sft.jsonl"),
         *VLLM, *SHORT]
    )  # fmt: skip
    assert len((root / "sft.jsonl").read_text().splitlines()) == 4


def test_serve_on_vllm_answers_the_openai_sdk(setup):
    import openai

    _, model = setup
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "toolrl.cli",
            "serve",
            str(model),
            "--engine",
            "vllm",
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        deadline, url = time.monotonic() + 300, None
        while url is None:
            line = server.stdout.readline()
            assert line or server.poll() is None, "toolrl serve exited"
            assert time.monotonic() < deadline
            if line.startswith("serving "):
                url = line.split(" at ")[1].split()[0]
        client = openai.OpenAI(base_url=url, api_key="none")
        first = client.completions.create(
            model="model", prompt="Hello", max_tokens=6, logprobs=1, seed=3
        )
        again = client.completions.create(
            model="model", prompt="Hello", max_tokens=6, logprobs=1, seed=3
        )
        assert first.choices[0].text == again.choices[0].text  # seeded
        assert len(first.choices[0].logprobs.token_logprobs) == 6
        chat = client.chat.completions.create(
            model="model", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert chat.usage.completion_tokens == 4
    finally:
        server.terminate()
        server.wait(timeout=60)
