"""`toolrl check-template MODEL_PATH`: prove rollout, template and SFT tokens agree."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "check-template",
        help="check that rollout, chat-template and SFT tokens agree for a tokenizer",
        description=(
            "Render a synthetic multi-turn tool episode the way the rollout builds it, the way "
            "the chat template renders the finished conversation, and with the SFT masks; diff "
            "them token by token. Exits 1 with a readable diff on any mismatch."
        ),
    )
    parser.add_argument("model", help="local model or tokenizer directory")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from toolrl.template_check import check_template

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    report = check_template(tokenizer)
    print(report.format())
    return 0 if report.ok else 1
