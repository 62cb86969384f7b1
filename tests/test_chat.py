"""Hermes tool-call parsing, observation glue and SFT masks from the one renderer."""

import pytest

from toolrl.chat import ObservationWrapper, encode, parse_tool_calls, render, render_with_mask
from toolrl.template_check import TOOLS

CODE_CALL = (
    '<tool_call>\n{"name": "code_interpreter", "arguments": {"code": "print(1)"}}\n</tool_call>'
)


def test_a_valid_call_parses():
    [call] = parse_tool_calls("Let me run it.\n" + CODE_CALL, TOOLS)
    assert (call.name, call.arguments, call.error) == (
        "code_interpreter",
        {"code": "print(1)"},
        None,
    )


def test_arguments_given_as_a_json_string_are_accepted():
    text = (
        '<tool_call>{"name": "code_interpreter", "arguments": "{\\"code\\": \\"1\\"}"}</tool_call>'
    )
    [call] = parse_tool_calls(text, TOOLS)
    assert call.error is None and call.arguments == {"code": "1"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '<tool_call>{"name": "code_interpreter", "arguments": {"code": 1</tool_call>',
            "not valid JSON",
        ),
        ('<tool_call>["code_interpreter"]</tool_call>', "must be a JSON object"),
        (
            '<tool_call>{"name": "python", "arguments": {"code": "1"}}</tool_call>',
            "unknown tool 'python'",
        ),
        (
            '<tool_call>{"name": "code_interpreter", "arguments": {}}</tool_call>',
            "missing required argument(s): code",
        ),
        (
            '<tool_call>{"name": "code_interpreter", "arguments": {"code": "1", "x": 2}}</tool_call>',
            "unexpected argument(s): x",
        ),
        (
            '<tool_call>{"name": "code_interpreter", "arguments": {"code": 5}}</tool_call>',
            "must be of type string",
        ),
        (
            '<tool_call>{"name": "code_interpreter", "arguments": [1]}</tool_call>',
            "arguments must be a JSON object",
        ),
        ('<tool_call>{"name": "code_interpreter", "arguments": {"code": "1"}}', "unterminated"),
    ],
)
def test_malformed_calls_become_errors_not_exceptions(text, message):
    calls = parse_tool_calls(text, TOOLS)
    assert len(calls) == 1
    assert message in calls[0].error


def test_calls_beyond_max_parallel_calls_are_errors():
    calls = parse_tool_calls(
        CODE_CALL + "\n" + CODE_CALL + "\n" + CODE_CALL, TOOLS, max_parallel_calls=2
    )
    assert [c.error is None for c in calls] == [True, True, False]
    assert "only 2 tool call(s) per turn" in calls[2].error


def test_text_without_calls_parses_to_nothing():
    assert parse_tool_calls("The answer is \\boxed{4}.", TOOLS) == []


def test_observation_glue_matches_the_template(tiny_tokenizer):
    wrapper = ObservationWrapper(tiny_tokenizer)
    assert wrapper.text(["42"]) == (
        "\n<|im_start|>user\n<tool_response>\n42\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    )
    two = wrapper.text(["a", "b"])
    assert two.count("<tool_response>") == 2 and two.count("<|im_start|>user") == 1
    assert wrapper.ids(["42"]) == encode(tiny_tokenizer, wrapper.text(["42"]))


def test_sft_mask_covers_exactly_the_assistant_turns(tiny_tokenizer):
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "question"},
        {"role": "assistant", "content": "first " + CODE_CALL},
        {"role": "tool", "content": "1"},
        {"role": "assistant", "content": "second " + CODE_CALL},
        {"role": "tool", "content": "1"},
        {"role": "assistant", "content": "\\boxed{1}"},
    ]
    rendered = render_with_mask(tiny_tokenizer, messages, TOOLS)
    assert rendered.ids == encode(tiny_tokenizer, render(tiny_tokenizer, messages, TOOLS))
    trained = tiny_tokenizer.decode(
        [t for t, m in zip(rendered.ids, rendered.mask, strict=True) if m]
    )
    assert trained == (
        "first "
        + CODE_CALL
        + "<|im_end|>"
        + "second "
        + CODE_CALL
        + "<|im_end|>"
        + "\\boxed{1}<|im_end|>"
    )
    # Every masked-in span is a whole assistant turn: system, user and tool text never trained.
    for text in ("sys", "question", "<tool_response>", "<|im_start|>"):
        assert text not in trained
