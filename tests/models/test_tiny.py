"""The embedded tokenizer and tiny Qwen3 are real, deterministic HF checkpoints."""

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from toolrl.cli import main as cli_main
from toolrl.models.tiny import ADDED_TOKENS, SPECIAL_TOKENS, build_model, build_tokenizer


def test_text_round_trips_exactly_through_the_tokenizer(tiny_tokenizer):
    texts = [
        "plain ascii",
        "  leading and trailing spaces  \n\n",
        "unicode: héllo 日本語 🙂 \u2063",
        'tool: <tool_call>\n{"name": "code_interpreter", "arguments": {"code": "print(1)"}}\n</tool_call>',
        "\\boxed{\\frac{1}{2}} ```python\nprint(2)\n```",
        "<|im_start|>user\nhi<|im_end|>\n",
    ]
    for text in texts:
        ids = tiny_tokenizer.encode(text, add_special_tokens=False)
        assert tiny_tokenizer.decode(ids) == text


def test_byte_tokens_are_byte_values_and_fixed_strings_are_single_tokens(tiny_tokenizer):
    assert tiny_tokenizer.encode("A", add_special_tokens=False) == [65]
    assert tiny_tokenizer.encode("\n", add_special_tokens=False) == [10]
    for token in SPECIAL_TOKENS + ADDED_TOKENS:
        assert len(tiny_tokenizer.encode(token, add_special_tokens=False)) == 1, token
    assert tiny_tokenizer.eos_token == "<|im_end|>"
    # Special tokens are skipped on request, the tool-use tags (text the model writes) are not.
    ids = tiny_tokenizer.encode("<tool_call>x<|im_end|>", add_special_tokens=False)
    assert tiny_tokenizer.decode(ids, skip_special_tokens=True) == "<tool_call>x"


def test_checkpoint_loads_with_from_pretrained_and_is_deterministic(tiny_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert type(model).__name__ == "Qwen3ForCausalLM"
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.eos_token_id == tokenizer.eos_token_id
    same = build_model(len(tokenizer), seed=0)
    other = build_model(len(tokenizer), seed=1)
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in same.state_dict().items())
    assert not torch.equal(
        state["model.embed_tokens.weight"], other.state_dict()["model.embed_tokens.weight"]
    )
    ids = torch.tensor([tokenizer.encode("hello", add_special_tokens=False)])
    assert model(ids).logits.shape == (1, 5, len(tokenizer))


def test_building_does_not_disturb_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_model(len(build_tokenizer()), seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_model_tiny_command_writes_a_checkpoint(tmp_path, capsys):
    assert cli_main(["model", "tiny", str(tmp_path / "m"), "--seed", "3"]) == 0
    assert (tmp_path / "m" / "model.safetensors").is_file()
    assert (tmp_path / "m" / "tokenizer.json").is_file()
    assert "wrote" in capsys.readouterr().out
