"""The token-exactness check behind `toolrl check-template MODEL_PATH`.

A synthetic multi-turn tool episode is built three ways and compared token by token:

1. **rollout**: the prompt rendered with a generation prompt, then each assistant turn's tokens
   followed by its end-of-turn token (what the model samples, mask 1), then each tool
   observation wrapped by `ObservationWrapper` (mask 0) — exactly how the agent loop builds it;
2. **template**: the chat template's rendering of the finished conversation, tokenized whole;
3. **sft**: `render_with_mask` of the finished conversation (what SFT trains on).

They must agree: rollout == template up to the template's trailing glue, sft ids == template,
and sft mask == rollout mask. When they do not, the report names the likely cause.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from toolrl.chat import (
    CODE_INTERPRETER_SCHEMA,
    ObservationWrapper,
    TemplateError,
    code_interpreter_call,
    encode,
    end_of_turn_token,
    first_difference,
    render,
    render_with_mask,
)

TOOLS = [CODE_INTERPRETER_SCHEMA]
"""The episode's tools: the paper's code interpreter."""

THINK = "<think>\nThe product is large; I will use the tool.\n</think>\n\n"


EPISODE = [
    {"role": "system", "content": "You are a helpful assistant. Use tools when useful."},
    {"role": "user", "content": "What is 123456789 * 987654321? Put the answer in \\boxed{}."},
    {
        "role": "assistant",
        "content": THINK
        + "Let me compute it.\n"
        + code_interpreter_call("print(123456789 * 987654321)"),
    },
    {"role": "tool", "content": "121932631112635269"},
    {
        "role": "assistant",
        "content": "Checking once more.\n" + code_interpreter_call("x = 987654321\\nx * 123456789"),
    },
    {"role": "tool", "content": "121932631112635269\n"},
    {
        "role": "assistant",
        "content": "<think>\nBoth agree.\n</think>\n\nThe answer is \\boxed{121932631112635269}.",
    },
]


@dataclass
class TemplateReport:
    """The outcome of the check: empty `problems` means token-exact."""

    problems: list[str] = field(default_factory=list)
    causes: list[str] = field(default_factory=list)
    num_tokens: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        if self.ok:
            return f"OK: rollout, template and SFT tokens agree ({self.num_tokens} tokens, masks equal)"
        lines = ["MISMATCH:", *(f"  - {p}" for p in self.problems)]
        if self.causes:
            lines += ["Likely cause:", *(f"  - {c}" for c in self.causes)]
        return "\n".join(lines)


def rollout_tokens(
    tokenizer, messages: list[dict], tools: list[dict]
) -> tuple[list[int], list[int]]:
    """Build the episode's tokens and mask the way the agent loop does, turn by turn."""
    first_assistant = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
    ids = encode(
        tokenizer, render(tokenizer, messages[:first_assistant], tools, add_generation_prompt=True)
    )
    mask = [0] * len(ids)
    wrapper = ObservationWrapper(tokenizer)
    eot_id = tokenizer.convert_tokens_to_ids(end_of_turn_token(tokenizer))
    i = first_assistant
    while i < len(messages):
        sampled = [*encode(tokenizer, messages[i]["content"]), eot_id]
        ids, mask = ids + sampled, mask + [1] * len(sampled)
        results = []
        i += 1
        while i < len(messages) and messages[i]["role"] == "tool":
            results.append(messages[i]["content"])
            i += 1
        if results:
            observation = wrapper.ids(results)
            ids, mask = ids + observation, mask + [0] * len(observation)
    return ids, mask


def check_template(
    tokenizer, messages: list[dict] | None = None, tools: list[dict] | None = None
) -> TemplateReport:
    """Compare rollout, template and SFT tokenizations of an episode; diagnose any mismatch."""
    messages, tools = messages or EPISODE, tools or TOOLS
    report = TemplateReport()
    try:
        rollout_ids, rollout_mask = rollout_tokens(tokenizer, messages, tools)
    except TemplateError as err:
        report.problems.append(f"rollout: {err}")
        report.causes += diagnose(tokenizer, messages, tools)
        return report
    template_ids = encode(tokenizer, render(tokenizer, messages, tools))
    report.num_tokens = len(template_ids)
    tail = template_ids[len(rollout_ids) :]
    if template_ids[: len(rollout_ids)] != rollout_ids:
        report.problems.append(
            "rollout vs template: " + token_diff(tokenizer, rollout_ids, template_ids)
        )
    elif tokenizer.decode(tail).strip():
        report.problems.append(
            f"template adds text after the last turn: {tokenizer.decode(tail)!r}"
        )
    try:
        sft = render_with_mask(tokenizer, messages, tools)
    except TemplateError as err:
        report.problems.append(f"sft: {err}")
    else:
        if sft.ids != template_ids:
            report.problems.append(
                "sft vs template: "
                + token_diff(tokenizer, sft.ids, template_ids, labels=("sft", "template"))
            )
        elif sft.mask[: len(rollout_mask)] != rollout_mask or any(sft.mask[len(rollout_mask) :]):
            report.problems.append(
                "sft mask vs rollout mask: "
                + token_diff(
                    tokenizer, rollout_mask, sft.mask, labels=("rollout", "sft"), as_mask=True
                )
            )
    if report.problems:
        report.causes += diagnose(tokenizer, messages, tools)
    return report


def token_diff(
    tokenizer,
    ours: list[int],
    theirs: list[int],
    *,
    labels: tuple[str, str] = ("rollout", "template"),
    as_mask: bool = False,
    context: int = 6,
) -> str:
    """Where two token lists first differ, with the decoded neighbourhood of each side."""
    at = first_difference(ours, theirs)
    lo, hi = max(0, at - context), at + context

    def show(ids: list[int]) -> str:
        if as_mask:
            return str(ids[lo:hi])
        return f"{ids[lo:hi]} = {tokenizer.decode(ids[lo:at])!r} | {tokenizer.decode(ids[at:hi])!r}"

    return (
        f"first difference at token {at} (lengths {len(ours)} vs {len(theirs)}):\n"
        f"      {labels[0]:>8} {show(ours)}\n      {labels[1]:>8} {show(theirs)}"
    )


def diagnose(tokenizer, messages: list[dict], tools: list[dict]) -> list[str]:
    """Name the known causes of a mismatch that this template shows."""
    causes = []
    whole = render(tokenizer, messages, tools)
    for i, m in enumerate(messages):
        if m["role"] == "assistant" and "<think>" in m["content"]:
            thought = m["content"].split("<think>", 1)[1].split("</think>", 1)[0].strip()
            if thought and thought not in whole:
                causes.append(
                    f"the template strips earlier <think> blocks from history (message {i}): the "
                    "finished conversation is not what the model saw while generating. Keep the "
                    "reasoning in history (a template without the stripping) or train on the "
                    "rollout's recorded tokens."
                )
                break
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = render(tokenizer, messages[:i], tools, add_generation_prompt=True)
        full = render(tokenizer, messages[: i + 1], tools)
        if full.startswith(prompt) and not full[len(prompt) :].startswith(m["content"]):
            added = full[len(prompt) :].split(m["content"][:10], 1)[0]
            causes.append(
                f"the template adds a separator {added!r} before assistant turn {i}'s content in "
                "history that the generation prompt does not end with, so the model never "
                "generates it. Make add_generation_prompt end exactly where the rendered "
                "assistant content starts."
            )
            break
        if not full.startswith(prompt):
            at = first_difference(prompt, full)
            causes.append(
                f"the template renders the assistant turn {i} with a separator the generation "
                f"prompt does not have: the prompt ends {prompt[max(0, at - 15) : at + 10]!r} but "
                f"history has {full[max(0, at - 15) : at + 10]!r}. Make add_generation_prompt end "
                "exactly where the rendered assistant content starts."
            )
            break
    if not causes:
        causes.append(
            "tokenization differs at a segment boundary (text on both sides of a turn boundary "
            "merges into one token when tokenized whole)."
        )
    return causes
