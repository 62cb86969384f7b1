"""`toolrl data stitch`: tool calls pasted into text-only solutions, in the SFT schema."""

import json

import pytest

from toolrl.chat import render_with_mask
from toolrl.cli import main
from toolrl.data.sft import load_sft_examples
from toolrl.data.stitch import find_computation, split_steps, stitch, stitch_rows, to_python
from toolrl.template_check import TOOLS

SOLUTION = (
    "The rectangle has area $3 \\times 4 = 12$.\n\n"
    "The triangle has area $\\frac{1}{2} \\cdot 6 \\cdot 2 = 6$.\n\n"
    "Let x = 5. Together: (12 + 6) / 2 = 9.\n\n"
    "So the answer is $12 + 6 = 18$, i.e. \\boxed{18}."
)


def test_steps_reassemble_the_solution():
    assert "".join(split_steps(SOLUTION)) == SOLUTION
    assert len(split_steps(SOLUTION)) == 4
    assert split_steps("One. Two! Three?") == ["One. ", "Two! ", "Three?"]
    assert split_steps("a\nb") == ["a\n", "b"]


@pytest.mark.parametrize(
    ("text", "code", "claimed"),
    [
        ("so x = 3 + 4 = 7.", "3 + 4", "7"),
        ("2 + 2 = 3 + 1 = 4", "3 + 1", "4"),  # `= 3` is followed by an operator: not a result
        ("$2^{10} = 1024$", "2**(10)", "1024"),
        ("$\\sqrt{16} + 1 = 5$", "((16)**0.5) + 1", "5"),
        ("half: 3/4 = 0.75.", "3/4", "0.75"),
        ("n = 5", None, None),  # a value, not a computation
        ("x + 1 = 3", None, None),  # an unknown is not arithmetic
    ],
)
def test_find_computation(text, code, claimed):
    found = find_computation(text)
    assert (found.code, found.claimed) == (code, claimed) if code else found is None


def test_to_python_refuses_anything_but_arithmetic():
    assert to_python("__import__('os')") is None
    assert to_python("2 ** 3") == "2 ** 3"


def test_stitched_conversation_claimed_outputs(tiny_tokenizer):
    prompt = [{"role": "user", "content": "Total area?"}]
    messages, calls = stitch(prompt, SOLUTION, max_calls=2)
    assert calls == 2
    roles = [m["role"] for m in messages]
    assert roles == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert messages[1]["content"].startswith(
        "The rectangle has area $3 \\times 4 = 12$.\n<tool_call>\n"
    )
    call = json.loads(messages[1]["content"].split("<tool_call>\n")[1].split("\n</tool_call>")[0])
    assert call == {"name": "code_interpreter", "arguments": {"code": "print(3 * 4)"}}
    # the outputs are what the text claims: nothing was run
    assert [messages[2]["content"], messages[4]["content"]] == ["12\n", "6\n"]
    # the text is kept whole, in order, around the inserted calls
    text = "".join(
        m["content"].split("\n<tool_call>")[0] for m in messages if m["role"] == "assistant"
    )
    assert text.replace("\n", "") == SOLUTION.replace("\n", "")
    assert messages[-1]["content"].endswith("\\boxed{18}.")  # the last step gets no call
    rendered = render_with_mask(tiny_tokenizer, messages, TOOLS)
    assert sum(rendered.mask) > 0


def test_executed_outputs_and_truncation():
    messages, _ = stitch(
        [{"role": "user", "content": "q"}],
        SOLUTION,
        run=lambda code: "x" * 300,
        max_output_chars=50,
    )
    outputs = [m["content"] for m in messages if m["role"] == "tool"]
    assert outputs and all(len(o) <= 50 and "truncated" in o for o in outputs)


def test_rows_and_cli(tmp_path, tiny_tokenizer):
    rows = [
        {
            "prompt": [{"role": "user", "content": "Area?"}],
            "data_source": "math",
            "solution": SOLUTION,
        },
        {
            "problem": "Nothing to compute?",
            "solution": "It is obvious.\n\nThe answer is \\boxed{1}.",
        },
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": SOLUTION},
            ]
        },
        {"problem": "no solution here"},
    ]
    out, stats = stitch_rows(rows, TOOLS)
    assert stats == {
        "rows": 4,
        "stitched": 2,
        "dropped": {"no_computation": 1, "no_text_solution": 1},
        "tool_calls_histogram": {"3": 2},
    }
    assert all(r["stitched"] and r["outputs"] == "claimed" for r in out)
    kept, _ = stitch_rows(rows, TOOLS, keep_unstitched=True)
    assert len(kept) == 3
    src = tmp_path / "text.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["data", "stitch", "--data", str(src), "--out", str(tmp_path / "st.jsonl")]) == 0
    data = load_sft_examples([str(tmp_path / "st.jsonl")], tiny_tokenizer, 1 << 20)
    assert len(data.examples) == 2 and data.dropped == 0


def test_cli_execute_runs_the_inserted_code_in_the_sandbox(tmp_path):
    src = tmp_path / "text.jsonl"
    src.write_text(json.dumps({"problem": "Area?", "solution": SOLUTION}) + "\n")
    out = tmp_path / "st.jsonl"
    assert main(["data", "stitch", "--data", str(src), "--out", str(out), "--execute"]) == 0
    [row] = [json.loads(line) for line in out.read_text().splitlines()]
    # Python prints floats for divisions where the text claimed integers: the stitched text
    # around the call was not written after reading this output.
    assert [m["content"] for m in row["messages"] if m["role"] == "tool"] == [
        "12\n",
        "6.0\n",
        "9.0\n",
    ]
    assert row["outputs"] == "executed"
