"""Multiple-choice answers (GPQA-Diamond): the option letter in the last `\\boxed{}`.

The box content is unwrapped from LaTeX text commands and math delimiters, then read as a
letter with optional decoration: `B`, `b`, `(B)`, `B)`, `B.`, `B: 42`, `\\text{(B)}`,
`\\textbf{B}`, `$B$`, `Option B`, `Answer: (B)`. Valid letters are A–D, or as many as the sample
has options (`extra_info["options"]` or `extra_info["choices"]`, a list or a count). Anything
else (two letters, a number, a letter outside the options) is no answer. The ground truth is
the letter (the `solution` column of the GPQA files), compared case-insensitively.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any

from toolrl.rewards.base import Grade
from toolrl.rewards.math import last_boxed
from toolrl.types import Sample

_WRAPPERS = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox|bf|rm)\s*\{([^{}]*)\}")
_LETTER = re.compile(
    r"^(?:(?:option|answer|choice)\s*[:\-]?\s*)?"  # an optional word before the letter
    r"\(?\s*([A-Za-z])\s*\)?"  # the letter, maybe in parentheses
    r"(?![A-Za-z])",  # not the start of a word
    re.IGNORECASE,
)


def option_letters(extra_info: dict[str, Any]) -> str:
    """The valid letters of a sample: A–D unless `options`/`choices` says how many."""
    options = extra_info.get("options", extra_info.get("choices"))
    count = options if isinstance(options, int) else len(options) if options else 4
    return string.ascii_uppercase[: max(1, min(count, 26))]


def parse_choice(boxed: str, letters: str = "ABCD") -> str | None:
    """The option letter a box content names, upper case, or None (see the module docstring)."""
    text = boxed
    for _ in range(3):  # nested wrappers: \text{\textbf{B}}
        text = _WRAPPERS.sub(r"\1", text)
    text = text.replace("$", "").replace("\\(", "").replace("\\)", "").strip()
    match = _LETTER.match(text)
    if match is None:
        return None
    letter = match.group(1).upper()
    return letter if letter in letters else None


def extract_choice(response: str, letters: str = "ABCD") -> str | None:
    """The letter in the response's last box, or None."""
    boxed = last_boxed(response)
    return None if boxed is None else parse_choice(boxed, letters)


@dataclass
class ChoiceGrader:
    """Grades the boxed option letter against the ground-truth letter."""

    correct_score: float = 1.0
    wrong_score: float = -1.0
    name: str = "choice"

    def grade(self, sample: Sample, response_text: str) -> Grade:
        letters = option_letters(sample.extra_info)
        pred = extract_choice(response_text, letters)
        gold = str(sample.ground_truth).strip().upper()
        correct = pred is not None and pred == gold
        score = self.correct_score if correct else self.wrong_score
        return Grade(score=score, acc=correct, pred=pred, details={"mode": "choice"})

    async def agrade(self, sample: Sample, response_text: str) -> Grade:
        return self.grade(sample, response_text)
