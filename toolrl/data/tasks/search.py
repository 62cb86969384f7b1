"""A search task family: questions about fictional entities, answerable only by searching.

    world = make_world(seed=0)
    paths = write_search_tasks("runs/search", world, {"train": 200, "test": 40})
    # corpus.jsonl (for `toolrl index build`), train.jsonl and test.jsonl (Search-R1 rows)

The world is invented from a seed (countries, their capitals, founders and founding years,
the founders' birthplaces, the rivers the capitals lie on), so no model can know an answer
beforehand. Questions are one-hop (the capital of a country; who founded it; when) or two-hop
(the river through a country's capital; the birthplace of its founder): a two-hop question
needs a second search for what the first one found. Rows are Search-R1's `question` /
`golden_answers` shape (graded by exact match, `rewards/qa.py`) and narrow the tools to
`search` (`extra_info.tools_kwargs`). `policy` is the scripted teacher: it searches, reads the
passages that come back, searches again for the second hop, and answers from what it read.
This family is not in the embedded demo's default mix (the demo's tasks are unchanged).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

from toolrl.chat import tool_call_text
from toolrl.data.tasks import split_of

_SYLLABLES = ("vel", "mor", "os", "trand", "kes", "tra", "quel", "bru", "ne", "tes", "sa", "ly",
              "dar", "vin", "ash", "el", "kor", "an", "thu", "rim", "ba", "lo", "zen", "ith")  # fmt: skip
_USER = re.compile(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", re.DOTALL)
_RESULT = re.compile(r"<tool_response>\n(.*?)\n</tool_response>", re.DOTALL)
DATA_SOURCE = "search_qa_toy"


@dataclass(frozen=True)
class Country:
    name: str
    capital: str
    river: str
    founder: str
    founded: int
    birthplace: str


def _name(rng: random.Random, used: set[str], parts: int = 2) -> str:
    while True:
        name = "".join(rng.choice(_SYLLABLES) for _ in range(parts)).capitalize()
        if name not in used and len(name) > 3:
            used.add(name)
            return name


def make_world(seed: int = 0, countries: int = 60) -> list[Country]:
    """`countries` invented countries, every name unique (deterministic from `seed`)."""
    rng, used = random.Random(seed), set()
    return [
        Country(
            name=_name(rng, used, 3),
            capital=_name(rng, used),
            river=_name(rng, used),
            founder=f"{_name(rng, used)} {_name(rng, used)}",
            founded=rng.randint(1200, 1900),
            birthplace=_name(rng, used),
        )
        for _ in range(countries)
    ]


def corpus(world: list[Country]) -> list[dict[str, str]]:
    """Passages {id, title, text}: one per country, capital and founder."""
    rows = []
    for c in world:
        rows.append({"id": f"country:{c.name}", "title": c.name,
                     "text": f"{c.name} is a republic whose capital is {c.capital}. "
                             f"It was founded in {c.founded} by {c.founder}."})  # fmt: skip
        rows.append({"id": f"city:{c.capital}", "title": c.capital,
                     "text": f"{c.capital} is a city that lies on the river {c.river}."})  # fmt: skip
        rows.append({"id": f"person:{c.founder}", "title": c.founder,
                     "text": f"{c.founder} was an explorer born in the town of {c.birthplace}."})  # fmt: skip
    return rows


QUESTIONS = {
    "capital": (1, "What is the capital of {c.name}?", "capital"),
    "founder": (1, "Who founded {c.name}?", "founder"),
    "founded": (1, "In which year was {c.name} founded?", "founded"),
    "river": (2, "On which river lies the capital of {c.name}?", "river"),
    "birthplace": (2, "In which town was the founder of {c.name} born?", "birthplace"),
}


def questions(world: list[Country]) -> list[dict]:
    """Every question of the world as a Search-R1 row (split not yet chosen)."""
    rows = []
    for c in world:
        for kind, (hops, template, field) in QUESTIONS.items():
            question = template.format(c=c)
            rows.append({
                "id": f"{kind}:{c.name}",
                "question": question,
                "golden_answers": [str(getattr(c, field))],
                "data_source": DATA_SOURCE,
                "extra_info": {"hops": hops, "kind": kind, "tools_kwargs": {"search": {}}},
            })  # fmt: skip
    return rows


def write_search_tasks(
    out: str | Path, world: list[Country], sizes: dict[str, int], seed: int = 0
) -> dict[str, Path]:
    """corpus.jsonl and one jsonl per split (disjoint: a question's split is a hash of its text)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"corpus": out / "corpus.jsonl"}
    _write(paths["corpus"], corpus(world))
    rows = questions(world)
    random.Random(seed).shuffle(rows)
    for split, size in sizes.items():
        chosen = [r for r in rows if split_of(r["question"]) == split][:size]
        paths[split] = out / f"{split}.jsonl"
        _write(paths[split], chosen)
    return paths


def _write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


# ----------------------------------------------------------------------------------------------
# The scripted teacher


def policy(context: str) -> str:
    """The next turn: search for the entity of the question (then for the first hop's answer),
    and answer from the passages read (never from the ground truth)."""
    question = _USER.search(context)
    asked = question[1].rsplit("Question:", 1)[-1].strip() if question else ""
    match = next(
        (
            (kind, hops, m[1])
            for kind, (hops, template, _) in QUESTIONS.items()
            if (m := re.fullmatch(re.escape(template).replace(r"\{c\.name\}", "(.+)"), asked))
        ),
        None,
    )
    if match is None:
        return "I cannot answer this question."
    kind, hops, country = match
    results = _RESULT.findall(context)
    if not results:
        return tool_call_text("search", {"query": country})
    first = _read(results[0], kind if hops == 1 else {"river": "capital"}.get(kind, "founder"))
    if first is None:
        return "The search did not tell me."
    if hops == 1:
        return f"\\boxed{{{first}}}"
    if len(results) < 2:
        return tool_call_text("search", {"query": first})
    second = _read(results[1], kind)
    return f"\\boxed{{{second}}}" if second else "The search did not tell me."


_FACTS = {
    "capital": r"whose capital is ([A-Z][a-z]+)",
    "founder": r"founded in \d+ by ([A-Z][a-z]+ [A-Z][a-z]+)",
    "founded": r"founded in (\d+)",
    "river": r"lies on the river ([A-Z][a-z]+)",
    "birthplace": r"born in the town of ([A-Z][a-z]+)",
}


def _read(observation: str, fact: str) -> str | None:
    """The fact from the first passage that states it."""
    found = re.search(_FACTS[fact], observation)
    return found[1] if found else None
