"""The embedded model: a byte-level tokenizer with a hermes chat template, and a tiny Qwen3.

Both are real Hugging Face checkpoints (`save_pretrained` / `from_pretrained`), so every command
that takes `--model PATH` accepts them, and the code paths the tests exercise are the ones a
real Qwen3 checkpoint goes through. Built deterministically from a seed; nothing is downloaded.

The tokenizer is byte-level (token id = byte value for the 256 byte tokens), so any UTF-8 text
round-trips exactly, plus Qwen's special tokens and a few added tokens for strings the tool-use
format repeats, the template's fixed tool preamble, and digit groups (fewer, shorter sequences
help a tiny model learn on a CPU; see the comments at the token lists).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

# Qwen's control tokens: special (skipped by decode(skip_special_tokens=True)).
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Added but not special, as in Qwen: they are part of the text the model writes and reads.
ADDED_TOKENS = [
    "<tool_call>",
    "</tool_call>",
    "<tool_response>",
    "</tool_response>",
    "<think>",
    "</think>",
    "\\boxed{",
    '{"name": "code_interpreter", "arguments": {"code": ',
    "```python\n",
    "```",
    "print(",
    # Role headers (every turn starts with one) and the sandbox's Python error preambles: one
    # token each instead of 5-35 bytes, which cuts the demo's SFT sequences by about a third.
    "system\n",
    "user\n",
    "assistant\n",
    "Traceback (most recent call last):\n",
    '  File "main.py", line ',
    "SyntaxError: ",
    "NameError: name ",
    " is not defined\n",
]
# Digits grouped in threes (then twos), as the GPT-4 and Llama 3 tokenizers do: copying a number
# into a tool call or an answer takes a third of the steps, and a copying head can find its place
# by content (a digit recurs inside a number, a 3-digit group rarely does). Matched
# longest-first, so "48213" is "482" "13"; single digits stay bytes.
NUMBER_TOKENS = [f"{i:03d}" for i in range(1000)] + [f"{i:02d}" for i in range(100)]
# The fixed text the chat template writes around the tool list: one token each, so the system
# block of a tool-use prompt costs a few tokens instead of ~500 bytes (see `tool_preamble_tokens`).
TOOL_PREAMBLE = (
    "# Tools\n<tools>\n",
    '</tools>\nCall a tool as <tool_call>\n{"name": NAME, "arguments": ARGS}\n</tool_call>',
)

# A compact hermes template (Qwen2.5's structure with a shorter tool preamble): tool calls are
# `<tool_call>\n{json}\n</tool_call>` inside the assistant turn, and consecutive tool results go
# back in one user turn as `<tool_response>` blocks. It renders history verbatim (no <think>
# stripping), so rollout tokens and template tokens agree exactly. transformers renders with
# trim_blocks, so a newline that must follow a block tag is written as {{ '\n' }}.
CHAT_TEMPLATE = """\
{%- if tools %}<|im_start|>system
{% if messages[0].role == 'system' %}{{ messages[0].content }}

{% endif %}# Tools
<tools>
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}</tools>
Call a tool as <tool_call>
{"name": NAME, "arguments": ARGS}
</tool_call><|im_end|>
{% elif messages[0].role == 'system' %}<|im_start|>system
{{ messages[0].content }}<|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% elif message.role == 'assistant' %}<|im_start|>assistant
{% if message.content %}{{ message.content }}{% endif %}
{%- for call in message.tool_calls or [] %}
{%- if call.function is defined %}{% set call = call.function %}{% endif %}
{%- if message.content or not loop.first %}{{ '\n' }}{% endif %}<tool_call>
{"name": "{{ call.name }}", "arguments": {% if call.arguments is string %}{{ call.arguments }}{% else %}{{ call.arguments | tojson }}{% endif %}}
</tool_call>
{%- endfor %}<|im_end|>
{% elif message.role == 'tool' %}
{%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}<|im_start|>user
{% else %}{{ '\n' }}{% endif %}<tool_response>
{{ message.content }}
</tool_response>
{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}<|im_end|>
{% endif %}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""


@dataclass(frozen=True)
class TinySize:
    """Architecture of the tiny Qwen3 (defaults: about 3.3M parameters)."""

    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    intermediate_size: int = 768
    max_position_embeddings: int = 4096


def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (the ByteLevel alphabet)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    mapping, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            mapping[byte] = chr(byte)
        else:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


def tool_preamble_tokens() -> list[str]:
    """The template's fixed tool preamble and the default `code_interpreter` schema line, as
    the template renders it (`tojson`). Matched longest-first, so a prompt with other tools
    still tokenizes (byte by byte where it differs) and round-trips exactly."""
    import json

    from toolrl.chat import CODE_INTERPRETER_SCHEMA

    schema = json.dumps(CODE_INTERPRETER_SCHEMA, ensure_ascii=False)
    return [*TOOL_PREAMBLE, schema + "\n"]


def build_tokenizer():
    """The embedded byte-level tokenizer, as a transformers fast tokenizer with the chat template."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {char: byte for byte, char in byte_to_unicode().items()}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        clean_up_tokenization_spaces=False,
        model_max_length=TinySize().max_position_embeddings,
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    fixed = [*ADDED_TOKENS, *tool_preamble_tokens(), *NUMBER_TOKENS]
    tokenizer.add_tokens([AddedToken(t, special=False, normalized=False) for t in fixed])
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(vocab_size: int, seed: int = 0, size: TinySize | None = None):
    """A randomly initialised Qwen3ForCausalLM, deterministic for a seed (fp32)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    size = size or TinySize()
    config = Qwen3Config(
        vocab_size=vocab_size,
        head_dim=size.hidden_size // size.num_attention_heads,
        tie_word_embeddings=True,
        rope_theta=10000.0,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
        **asdict(size),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen3ForCausalLM(config)
    return model.float()


def write_tiny(out_dir: str | Path, seed: int = 0, size: TinySize | None = None) -> Path:
    """Build the tokenizer and model and save them as one HF checkpoint directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    model = build_model(len(tokenizer), seed=seed, size=size)
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
