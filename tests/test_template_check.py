"""`toolrl check-template`: passes on the tiny template, fails with a diagnosis on broken ones."""

from toolrl.cli import main as cli_main
from toolrl.models.tiny import CHAT_TEMPLATE, build_tokenizer
from toolrl.template_check import check_template

# A Qwen3-style template: earlier assistant turns lose their <think> block when re-rendered.
STRIPS_THINK = CHAT_TEMPLATE.replace(
    "{% if message.content %}{{ message.content }}{% endif %}",
    "{% set c = message.content or '' %}"
    "{% if loop.index0 < (messages | length - 1) and '</think>' in c %}"
    "{% set c = c.split('</think>')[-1].lstrip('\\n') %}{% endif %}{{ c }}",
)
# A template whose history has a blank line after the assistant header that the generation
# prompt does not end with: the model never generates it, but SFT would train on it.
ADDS_SEPARATOR = CHAT_TEMPLATE.replace(
    "{% elif message.role == 'assistant' %}<|im_start|>assistant\n",
    "{% elif message.role == 'assistant' %}<|im_start|>assistant\n\n",
)


def tokenizer_with(template):
    tokenizer = build_tokenizer()
    tokenizer.chat_template = template
    return tokenizer


def test_tiny_template_is_token_exact(tiny_tokenizer):
    report = check_template(tiny_tokenizer)
    assert report.ok, report.format()
    assert report.num_tokens > 200


def test_think_stripping_template_fails_and_is_named():
    assert STRIPS_THINK != CHAT_TEMPLATE
    report = check_template(tokenizer_with(STRIPS_THINK))
    assert not report.ok
    assert "first difference at token" in report.format()
    assert any("strips earlier <think> blocks" in c for c in report.causes)


def test_separator_template_fails_and_is_named():
    assert ADDS_SEPARATOR != CHAT_TEMPLATE
    report = check_template(tokenizer_with(ADDS_SEPARATOR))
    assert not report.ok
    assert any("adds a separator '\\n'" in c for c in report.causes)
    assert any(p.startswith("sft mask vs rollout mask") for p in report.problems)


def test_cli_exit_codes(tiny_dir, tmp_path, capsys):
    assert cli_main(["check-template", str(tiny_dir)]) == 0
    assert "OK" in capsys.readouterr().out
    tokenizer_with(STRIPS_THINK).save_pretrained(tmp_path / "broken")
    assert cli_main(["check-template", str(tmp_path / "broken")]) == 1
    assert "strips earlier <think>" in capsys.readouterr().out
