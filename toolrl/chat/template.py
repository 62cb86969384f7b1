"""Chat rendering with the token-exactness contract.

One renderer serves rollout and SFT, so their tokens and masks agree:

- the rollout tokenizes the prompt once (`prompt_ids`), then appends the model's sampled tokens
  as they are (never re-tokenizing model text) and the tokens of each tool observation, wrapped
  by `ObservationWrapper` in exactly the glue the chat template puts between the end of an
  assistant turn and the next generation prompt;
- SFT renders a finished conversation with `render_with_mask`, message by message, giving mask 1
  to the assistant's own text up to and including its end-of-turn token and 0 to everything else.

`toolrl check-template` (toolrl/commands/check_template.py) proves the two agree for a tokenizer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


class TemplateError(ValueError):
    """The chat template cannot be used token-exactly; the message says why."""


def render(
    tokenizer,
    messages: list[dict],
    tools: list[dict] | None = None,
    *,
    add_generation_prompt: bool = False,
) -> str:
    """The chat template's text for `messages` (and the `tools` schemas)."""
    return tokenizer.apply_chat_template(
        messages, tools=tools or None, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def encode(tokenizer, text: str) -> list[int]:
    """Token ids of `text`, with no BOS/EOS added (the template already wrote its own)."""
    return tokenizer.encode(text, add_special_tokens=False)


def end_of_turn_token(tokenizer) -> str:
    """The token that ends an assistant turn (Qwen: `<|im_end|>`): the tokenizer's EOS."""
    if tokenizer.eos_token is None:
        raise TemplateError("the tokenizer has no eos_token, so assistant turns cannot end")
    return tokenizer.eos_token


# ----------------------------------------------------------------------------------------------
# Observation wrapping

_ASSISTANT_MARK = "\u2063ASSISTANT\u2063"
_TOOL_MARK = "\u2063TOOL{}\u2063"


@dataclass
class ObservationWrapper:
    """The template's glue around tool results, computed once per tokenizer and number of results.

    After the model ends a turn with its end-of-turn token, the template writes some glue (Qwen:
    `\\n<|im_start|>user\\n<tool_response>\\n`), the result, more glue, and the next generation
    prompt (`\\n</tool_response><|im_end|>\\n<|im_start|>assistant\\n`). We find that glue by
    rendering a conversation with marker strings in place of the assistant text and results.
    """

    tokenizer: Any
    _pieces: dict[int, list[str]] = field(default_factory=dict)

    def pieces(self, num_results: int) -> list[str]:
        """The `num_results + 1` glue strings that interleave with the results."""
        if num_results not in self._pieces:
            self._pieces[num_results] = self._derive(num_results)
        return self._pieces[num_results]

    def _derive(self, num_results: int) -> list[str]:
        eot = end_of_turn_token(self.tokenizer)
        messages = [
            {"role": "user", "content": "u"},
            {"role": "assistant", "content": _ASSISTANT_MARK},
            *({"role": "tool", "content": _TOOL_MARK.format(i)} for i in range(num_results)),
        ]
        text = render(self.tokenizer, messages, add_generation_prompt=True)
        after = text.split(_ASSISTANT_MARK, 1)[1]
        if not after.startswith(eot):
            raise TemplateError(
                f"the chat template does not end an assistant turn with its EOS token {eot!r} "
                f"(it writes {after[:20]!r}), so the model cannot end a turn where the template does"
            )
        rest, pieces = after[len(eot) :], []
        for i in range(num_results):
            before, _, rest = rest.partition(_TOOL_MARK.format(i))
            pieces.append(before)
        pieces.append(rest)
        return pieces

    def text(self, results: list[str]) -> str:
        """The observation text that follows the model's end-of-turn token."""
        pieces = self.pieces(len(results))
        out = [pieces[0]]
        for result, piece in zip(results, pieces[1:], strict=True):
            out += [result, piece]
        return "".join(out)

    def ids(self, results: list[str]) -> list[int]:
        return encode(self.tokenizer, self.text(results))


# ----------------------------------------------------------------------------------------------
# Rendering a finished conversation with a loss mask (SFT)


@dataclass
class Rendered:
    """A conversation as token ids, with 1 on the assistant's own tokens."""

    ids: list[int]
    mask: list[int]


def render_with_mask(tokenizer, messages: list[dict], tools: list[dict] | None = None) -> Rendered:
    """Tokens and loss mask of a finished conversation, segment by segment.

    Each assistant message contributes mask-1 tokens from the end of its generation prompt up to
    and including the end-of-turn token, exactly the tokens the model would sample; everything
    else (system, user, tool results, template glue) has mask 0. Raises TemplateError when the
    template rewrites history, since then no rollout could have produced this token sequence.
    """
    eot = end_of_turn_token(tokenizer)
    segments: list[tuple[str, int]] = []
    done = ""
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render(tokenizer, messages[:i], tools, add_generation_prompt=True)
        full = render(tokenizer, messages[: i + 1], tools)
        _require_prefix(done, prompt, f"the generation prompt before message {i}")
        _require_prefix(prompt, full, f"assistant message {i} rendered after its prompt")
        turn = full[len(prompt) :]
        end = turn.rfind(eot)
        if end < 0:
            raise TemplateError(f"assistant message {i} is not closed by {eot!r} in the template")
        segments += [(prompt[len(done) :], 0), (turn[: end + len(eot)], 1)]
        done = prompt + turn[: end + len(eot)]
    whole = render(tokenizer, messages, tools)
    _require_prefix(done, whole, "the whole conversation")
    segments.append((whole[len(done) :], 0))
    ids, mask = [], []
    for text, value in segments:
        piece = encode(tokenizer, text)
        ids += piece
        mask += [value] * len(piece)
    return Rendered(ids, mask)


def first_difference(a: Sequence, b: Sequence) -> int:
    """Index of the first position where two sequences differ (the shorter length if none)."""
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def _require_prefix(prefix: str, text: str, where: str) -> None:
    if text.startswith(prefix):
        return
    at = first_difference(prefix, text)
    raise TemplateError(
        f"{where} does not extend the earlier rendering: at character {at} the template wrote "
        f"{text[max(0, at - 20) : at + 30]!r} where the earlier text has "
        f"{prefix[max(0, at - 20) : at + 30]!r} (the template rewrites history)"
    )
