"""Open-domain QA answers (Search-R1's data): exact match and token F1 after SQuAD normalisation.

The answer is the last `\\boxed{...}` of the response, else the last `<answer>...</answer>`
(Search-R1's tag). Both it and every golden answer are normalised as the SQuAD v1.1 evaluation
script does: lower-case, drop punctuation, drop the articles a / an / the, collapse whitespace.

    exact match  EM = max_g [norm(pred) == norm(g)]
    token F1     F1 = max_g 2·P·R / (P + R), P = |common| / |pred tokens|, R = |common| / |g tokens|
                 (common: the multiset intersection of the two token lists)

The reward is binary on EM (as Search-R1's `em` reward): correct_score or wrong_score; F1 is
reported in `details` for analysis. The ground truth is a list of answers, one answer, or
Search-R1's `{"target": [...]}`.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from dataclasses import dataclass
from typing import Any

from toolrl.rewards.base import Grade
from toolrl.rewards.math import last_boxed
from toolrl.types import Sample

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower-case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def golden_answers(ground_truth: Any) -> list[str]:
    """The accepted answers of a QA ground truth (list, string, or {"target": ...})."""
    if isinstance(ground_truth, dict):
        ground_truth = ground_truth.get("target", ground_truth.get("golden_answers"))
    if isinstance(ground_truth, str):
        return [ground_truth]
    if isinstance(ground_truth, list | tuple) and ground_truth:
        return [str(g) for g in ground_truth]
    raise ValueError(f"a QA ground truth must list the golden answers, got {ground_truth!r}")


def exact_match(prediction: str, golds: list[str]) -> bool:
    """Whether the normalised prediction equals some normalised golden answer."""
    pred = normalize_answer(prediction)
    return any(pred == normalize_answer(g) for g in golds)


def token_f1(prediction: str, golds: list[str]) -> float:
    """The best token-level F1 of the prediction against the golden answers (module docstring)."""
    pred = normalize_answer(prediction).split()
    best = 0.0
    for gold in golds:
        ref = normalize_answer(gold).split()
        common = sum((Counter(pred) & Counter(ref)).values())
        if common:
            precision, recall = common / len(pred), common / len(ref)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def extract_answer(response: str) -> str | None:
    """The last boxed answer, else the last `<answer>` tag's content, else None."""
    boxed = last_boxed(response)
    if boxed is not None:
        return boxed
    tags = _ANSWER_TAG.findall(response)
    return tags[-1] if tags else None


@dataclass
class QAGrader:
    """Grades QA answers by exact match, reporting token F1 (module docstring)."""

    correct_score: float = 1.0
    wrong_score: float = -1.0
    name: str = "qa"

    def grade(self, sample: Sample, response_text: str) -> Grade:
        golds = golden_answers(sample.ground_truth)
        pred = extract_answer(response_text)
        if pred is None:
            return Grade(self.wrong_score, False, None, {"mode": "qa", "f1": 0.0})
        correct = exact_match(pred, golds)
        details = {"mode": "qa", "f1": token_f1(pred, golds)}
        return Grade(self.correct_score if correct else self.wrong_score, correct, pred, details)

    async def agrade(self, sample: Sample, response_text: str) -> Grade:
        return self.grade(sample, response_text)
