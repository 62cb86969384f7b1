"""What is in a data file: size, sources, lengths, difficulty, and how much of it is repeated.

Works on RL rows (a `prompt` column, the verl schema) and SFT rows (`messages` + `tools`).

Near-duplicates are found on the problem text (the last user message of an RL prompt, the first
user message of an SFT conversation), normalised (Unicode NFKC, lower case, whitespace runs
collapsed): two problems are near-duplicates when the Jaccard similarity of their sets of
character 5-grams is at least 0.8. Candidate pairs come from MinHash with locality-sensitive
hashing (120 hash functions in 20 bands of 6: a pair at similarity 0.8 collides with
probability 0.998, one at 0.4 with 0.08), and every candidate is confirmed with the exact
Jaccard similarity, so the reported rate has no MinHash estimation error, only the small chance
that a true pair never collides.
The near-duplicate rate is the fraction of rows that have an earlier near-duplicate: the share
a deduplication keeping first occurrences would remove. Character n-grams (rather than words)
keep LaTeX, code and languages without spaces comparable.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from toolrl.data.io import DataError, read_rows

MERSENNE_61 = (1 << 61) - 1


def normalize(text: str) -> str:
    """NFKC, lower case, whitespace runs collapsed to one space."""
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text).lower()).strip()


def shingles(text: str, n: int = 5) -> np.ndarray:
    """Sorted unique 32-bit hashes of the character n-grams of `text` (one for shorter texts)."""
    points = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if len(points) == 0:
        return np.zeros(1, dtype=np.uint64)
    width = min(n, len(points))
    h = np.zeros(len(points) - width + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(width):  # polynomial hash of each window, wrapping modulo 2**64
            h = h * np.uint64(1_000_003) + points[j : len(points) - width + 1 + j]
        h ^= h >> np.uint64(33)  # murmur3's finaliser spreads the bits before truncating
        h *= np.uint64(0xFF51AFD7ED558CCD)
        h ^= h >> np.uint64(33)
    return np.unique(h & np.uint64(0xFFFFFFFF))


class MinHasher:
    """`num_perm` hash functions (a·x + b) mod (2^61 − 1) over 32-bit shingle hashes."""

    def __init__(self, num_perm: int = 128, seed: int = 0):
        rng = np.random.default_rng(seed)
        # a < 2^31 and x < 2^32 keep a·x + b below 2^64: exact in uint64 arithmetic.
        self.a = rng.integers(1, 1 << 31, size=num_perm, dtype=np.uint64)
        self.b = rng.integers(0, MERSENNE_61, size=num_perm, dtype=np.uint64)

    def signature(self, shingle_hashes: np.ndarray) -> np.ndarray:
        values = (self.a[:, None] * shingle_hashes[None, :] + self.b[:, None]) % np.uint64(
            MERSENNE_61
        )
        return values.min(axis=1)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard similarity of two sorted unique arrays."""
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


def near_duplicates(
    texts: list[str],
    *,
    threshold: float = 0.8,
    n: int = 5,
    num_perm: int = 120,
    bands: int = 20,
    seed: int = 0,
) -> list[int | None]:
    """For each text, the index of an earlier near-duplicate (see the module docstring) or None.

    Only first occurrences enter the LSH index, so a chain of near-copies points at its first
    member and repeated texts cost one comparison each. A candidate whose MinHash estimate is
    more than 0.2 below the threshold (over 5 standard errors at 120 hash functions) is skipped
    before the exact comparison.
    """
    if num_perm % bands:
        raise ValueError(f"num_perm ({num_perm}) must be a multiple of bands ({bands})")
    hasher = MinHasher(num_perm, seed)
    rows = num_perm // bands
    index: dict[tuple[int, bytes], list[int]] = {}
    kept: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # first occurrences: (shingles, signature)
    out: list[int | None] = []
    for i, text in enumerate(texts):
        grams = shingles(normalize(text), n)
        signature = hasher.signature(grams)
        keys = [
            (band, chunk.tobytes()) for band, chunk in enumerate(signature.reshape(bands, rows))
        ]
        candidates = sorted({j for key in keys for j in index.get(key, ())})
        match = next(
            (
                j
                for j in candidates
                if (kept[j][1] == signature).mean() >= threshold - 0.2
                and jaccard(grams, kept[j][0]) >= threshold
            ),
            None,
        )
        out.append(match)
        if match is None:
            kept[i] = (grams, signature)
            for key in keys:
                index.setdefault(key, []).append(i)
    return out


def distribution(values: list[float]) -> dict[str, float] | None:
    """count, mean, min, median, p90, p99, max (None for no values)."""
    if not values:
        return None
    a = np.asarray(values, dtype=float)
    q = np.percentile(a, [50, 90, 99])
    return {
        "count": len(a),
        "mean": round(float(a.mean()), 2),
        "min": float(a.min()),
        "p50": float(q[0]),
        "p90": float(q[1]),
        "p99": float(q[2]),
        "max": float(a.max()),
    }


def dataset_stats(
    path: str | Path, *, tokenizer=None, threshold: float = 0.8, ngram: int = 5, examples: int = 5
) -> dict[str, Any]:
    """Size, sources, lengths, difficulty and near-duplicates of an RL or SFT file."""
    rows = list(read_rows(path))
    if not rows:
        raise DataError(f"{path}: no rows")
    kind = "rl" if "prompt" in rows[0][1] else "sft" if "messages" in rows[0][1] else None
    if kind is None:
        raise DataError(
            f"{path}: row {rows[0][0]} has neither `prompt` (RL) nor `messages` (SFT): {', '.join(rows[0][1])}"
        )
    parse = _rl_record if kind == "rl" else _sft_record
    records = [parse(row, path, i, tokenizer) for i, row in rows]
    texts = [r["problem"] for r in records]
    dup_of = near_duplicates(texts, threshold=threshold, n=ngram)
    exact: dict[str, int] = {}
    exact_dups = sum(exact.setdefault(normalize(t), i) != i for i, t in enumerate(texts))
    pairs = [(j, i) for i, j in enumerate(dup_of) if j is not None]
    out: dict[str, Any] = {
        "file": str(path),
        "schema": kind,
        "rows": len(records),
        "data_sources": dict(Counter(r["data_source"] for r in records).most_common()),
    }
    if kind == "rl":
        out["abilities"] = dict(Counter(str(r["ability"]) for r in records).most_common())
    lengths = {
        key: distribution([r[key] for r in records if r.get(key) is not None])
        for key in _LENGTH_KEYS[kind]
    }
    out["lengths"] = {k: v for k, v in lengths.items() if v is not None}
    out["difficulty"] = _difficulty([r.get("extra_info") or {} for r in records])
    out["near_duplicates"] = {
        "method": f"Jaccard >= {threshold} of character {ngram}-gram sets (exact), "
        "candidates from MinHash-LSH (120 hash functions, 20 bands)",
        "rate": round(len(pairs) / len(records), 4),
        "rows": len(pairs),
        "exact_duplicate_rate": round(exact_dups / len(records), 4),
        "examples": [[a, b] for a, b in pairs[:examples]],
    }
    return out


_LENGTH_KEYS = {
    "rl": ("problem_chars", "prompt_tokens"),
    "sft": (
        "conversation_chars",
        "conversation_tokens",
        "assistant_turns",
        "tool_calls",
        "tool_results",
    ),
}


def _rl_record(row: dict[str, Any], path: str | Path, index: int, tokenizer) -> dict[str, Any]:
    from toolrl.data.rl import row_to_sample

    sample = row_to_sample(row, path, index)
    users = [m["content"] for m in sample.messages if m["role"] == "user"]
    problem = users[-1] if users else sample.messages[-1]["content"]
    record = {
        "problem": problem,
        "data_source": sample.data_source,
        "ability": row.get("ability"),
        "extra_info": sample.extra_info,
        "problem_chars": len(problem),
    }
    if tokenizer is not None:
        from toolrl.chat import encode, render

        record["prompt_tokens"] = len(
            encode(
                tokenizer,
                render(tokenizer, sample.messages, _tool_schemas(), add_generation_prompt=True),
            )
        )
    return record


def _sft_record(row: dict[str, Any], path: str | Path, index: int, tokenizer) -> dict[str, Any]:
    from toolrl.data.sft import parse_sft_row

    messages, tools = parse_sft_row(row, f"{path}: row {index}")
    users = [m.get("content") or "" for m in messages if m["role"] == "user"]
    assistant = [m for m in messages if m["role"] == "assistant"]
    record = {
        "problem": users[0] if users else "",
        "data_source": str(row.get("data_source", "unknown")),
        "extra_info": row.get("extra_info") if isinstance(row.get("extra_info"), dict) else {},
        "conversation_chars": sum(len(m.get("content") or "") for m in messages),
        "assistant_turns": len(assistant),
        "tool_calls": sum(
            (m.get("content") or "").count("<tool_call>") + len(m.get("tool_calls") or [])
            for m in assistant
        ),
        "tool_results": sum(m["role"] == "tool" for m in messages),
    }
    if tokenizer is not None:
        from toolrl.chat import encode, render

        record["conversation_tokens"] = len(encode(tokenizer, render(tokenizer, messages, tools)))
    return record


def _tool_schemas() -> list[dict]:
    from toolrl.tools.code_interpreter import CodeInterpreter

    return [CodeInterpreter(None).schema]  # type: ignore[arg-type]


def _difficulty(extras: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts of `extra_info.difficulty` and a 10-bin histogram of `extra_info.pass_rate`."""
    labels = Counter(str(e["difficulty"]) for e in extras if e.get("difficulty") is not None)
    rates = [float(e["pass_rate"]) for e in extras if isinstance(e.get("pass_rate"), int | float)]
    out: dict[str, Any] = {"labelled": sum(labels.values())}
    if labels:
        out["labels"] = dict(labels.most_common())
    if rates:
        counts, edges = np.histogram(rates, bins=10, range=(0.0, 1.0))
        out["pass_rate_histogram"] = {
            f"{edges[i]:.1f}-{edges[i + 1]:.1f}": int(c) for i, c in enumerate(counts)
        }
    return out


def to_json(stats: dict[str, Any]) -> str:
    return json.dumps(stats, indent=2, ensure_ascii=False)
