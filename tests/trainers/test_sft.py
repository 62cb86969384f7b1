"""SFT: masks equal the rollout's, the loss falls, bad rows fail with file and row, LoRA exports."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from toolrl.chat import render_with_mask
from toolrl.cli import main as cli_main
from toolrl.config import load_config
from toolrl.data.io import DataError
from toolrl.data.sft import load_sft_examples
from toolrl.rollout.agent_loop import AgentLoop, LoopSettings
from toolrl.rollout.engines.scripted import ScriptedEngine
from toolrl.template_check import TOOLS
from toolrl.trainers.sft import run_sft
from toolrl.trainers.tracking import read_metrics
from toolrl.types import Sample

from .conftest import EchoTool


def three_round_policy(context: str) -> str:
    n = context.count("<tool_response>")
    if n < 3:
        code = f"print({n})"
        return (
            f"Round {n}.\n<tool_call>\n"
            + json.dumps({"name": "code_interpreter", "arguments": {"code": code}})
            + "\n</tool_call>"
        )
    return "Done: \\boxed{3}"


def test_sft_masks_equal_the_rollout_masks(tiny_tokenizer):
    sample = Sample(
        "s", [{"role": "system", "content": "sys"}, {"role": "user", "content": "go"}], "toy", "3"
    )
    agent = AgentLoop(
        ScriptedEngine(tiny_tokenizer, three_round_policy),
        tiny_tokenizer,
        [EchoTool()],
        LoopSettings(),
    )
    [traj] = agent.run([sample])
    assert traj.num_tool_calls == 3
    rendered = render_with_mask(tiny_tokenizer, traj.messages(), TOOLS)
    full = traj.prompt_ids + traj.response_ids
    assert rendered.ids[: len(full)] == full
    assert rendered.mask[: len(full)] == [0] * len(traj.prompt_ids) + traj.loss_mask
    assert not any(rendered.mask[len(full) :])


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


CONVERSATION = {
    "messages": [
        {"role": "user", "content": "What is 6*7?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "type": "function",
                    "function": {"name": "code_interpreter", "arguments": {"code": "print(6*7)"}},
                }
            ],
        },
        {"role": "tool", "content": "42"},
        {"role": "assistant", "content": "\\boxed{42}"},
    ],
    "tools": json.dumps(TOOLS),
}


def sft_config(tiny_dir, tmp_path, data, *extra):
    return load_config(
        None,
        [
            f"model.path={tiny_dir}",
            "model.dtype=float32",
            f"data.train_files=[{data}]",
            "data.train_batch_size=2",
            "trainer.micro_batch_size=1",
            "trainer.lr=3e-3",
            "trainer.lr_schedule=cosine",
            "trainer.warmup_ratio=0.1",
            f"trainer.output_dir={tmp_path}",
            "trainer.run_name=sft",
            "trainer.loggers=[jsonl]",
            "trainer.save_every=0",
            *extra,
        ],
    )


def test_sft_loss_falls_on_the_assistant_tokens(tiny_dir, tmp_path):
    data = write_rows(tmp_path / "sft.jsonl", [CONVERSATION] * 4)
    run_dir = run_sft(
        sft_config(
            tiny_dir,
            tmp_path,
            data,
            "trainer.epochs=8",
            f"data.val_files=[{data}]",
            "trainer.val_every=100",
        )
    )
    rows = read_metrics(run_dir)
    assert len(rows) == 16
    assert rows[-1]["train/loss"] < 0.5 * rows[0]["train/loss"]
    assert "val/loss" in rows[-1] and rows[-1]["val/loss"] < rows[0]["train/loss"]
    assert (run_dir / "checkpoints" / "step_16" / "model.safetensors").is_file()


def test_truncation_and_empty_rows_are_counted(tiny_tokenizer, tmp_path):
    data = write_rows(tmp_path / "sft.jsonl", [CONVERSATION, CONVERSATION])
    full = load_sft_examples([str(data)], tiny_tokenizer, 10_000)
    cut = load_sft_examples([str(data)], tiny_tokenizer, len(full.examples[0].ids) - 5)
    assert (cut.truncated, cut.dropped, len(cut.examples)) == (2, 0, 2)
    none_left = load_sft_examples([str(data)], tiny_tokenizer, 20)
    assert (none_left.truncated, none_left.dropped, len(none_left.examples)) == (2, 2, 0)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"messages": []}, "row 2: column `messages` must be a non-empty list"),
        (
            {"messages": [{"role": "user", "content": "hi"}]},
            "row 2: column `messages` has no assistant message",
        ),
        (
            {"messages": [{"role": "bot", "content": "hi"}]},
            "row 2: column `messages`[0] needs a role",
        ),
        ({"messages": "[oops"}, "row 2: column `messages` or `tools` is not valid JSON"),
    ],
)
def test_malformed_rows_fail_with_file_and_row(tiny_tokenizer, tmp_path, row, message):
    data = write_rows(tmp_path / "bad.jsonl", [CONVERSATION, row])
    with pytest.raises(DataError) as err:
        load_sft_examples([str(data)], tiny_tokenizer, 1000)
    assert str(data) in str(err.value) and message in str(err.value)


def test_lora_adapters_save_in_peft_format_and_export_merges(tiny_dir, tmp_path):
    data = write_rows(tmp_path / "sft.jsonl", [CONVERSATION] * 2)
    config = sft_config(tiny_dir, tmp_path, data, "model.lora_rank=4", "trainer.epochs=2")
    run_dir = run_sft(config)
    adapter = run_dir / "checkpoints" / "step_2"  # save_every=0: only the final checkpoint
    assert (adapter / "adapter_config.json").is_file() and (
        adapter / "adapter_model.safetensors"
    ).is_file()
    assert not (adapter / "model.safetensors").exists()
    assert cli_main(["export", str(adapter), str(tmp_path / "merged")]) == 0
    from peft import PeftModel

    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_dir), adapter)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    ids = torch.tensor([[10, 20, 30, 40]])
    with torch.no_grad():
        assert torch.allclose(peft_model(ids).logits, merged(ids).logits, atol=1e-5)
        base = AutoModelForCausalLM.from_pretrained(tiny_dir)
        assert not torch.allclose(base(ids).logits, merged(ids).logits, atol=1e-5)
