"""The `search` tool: BM25 (the `bm25s` package) over a local corpus of passages.

    toolrl index build corpus.jsonl --out IDX      # rows {id, title, text}; .parquet too
    toolrl rl recipe.yaml tools.enabled=[search] tools.search_index=IDX

The index directory holds bm25s's arrays (`bm25/`) and the passages (`passages.jsonl`, in
corpus order). Text is lower-cased, split into words of two or more characters and English
stopwords are dropped (bm25s's defaults; no stemming), for the corpus and the query alike.

The observation lists the top-k passages as `[i] title\\ntext`, each text cut to
`search_passage_chars` and the whole middle-truncated to `search_max_chars`. Like Search-R1,
nothing here is learned: retrieval is a fixed tool, the policy learns what to ask it.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

from toolrl.tools.base import ToolResult, function_schema
from toolrl.tools.code_interpreter import middle_truncate

NAME = "search"
SCHEMA = function_schema(
    NAME,
    "Search the knowledge base. Returns the passages that best match the query, best first.",
    {
        "type": "object",
        "properties": {"query": {"type": "string", "description": "what to look for"}},
        "required": ["query"],
    },
)
PASSAGES = "passages.jsonl"
BM25_DIR = "bm25"
STOPWORDS = "en"


class CorpusError(ValueError):
    """A corpus row or an index directory that cannot be used; the message says where."""


def read_corpus(path: str | Path) -> list[dict[str, str]]:
    """Passages {id, title, text} of a .jsonl or .parquet corpus; a malformed row raises
    naming its 1-based line (jsonl) or row (parquet)."""
    path, passages, seen = Path(path), [], set()
    parquet = path.suffix == ".parquet"
    for where, row in _numbered_rows(path):
        text, title = row.get("text"), row.get("title", "")
        if not isinstance(text, str) or not text.strip():
            raise CorpusError(f"{where}: `text` must be a non-empty string (got {text!r})")
        if not isinstance(title, str | None):
            raise CorpusError(f"{where}: `title` must be a string (got {title!r})")
        pid = str(row.get("id", where.rsplit(" ", 1)[1]))
        if pid in seen:
            raise CorpusError(f"{where}: id `{pid}` repeats an earlier row's")
        seen.add(pid)
        passages.append({"id": pid, "title": title or "", "text": text})
    if not passages:
        raise CorpusError(f"{path}: the corpus has {'no rows' if parquet else 'no lines'}")
    return passages


def _numbered_rows(path: Path):
    """("<path>: line N" or "<path>: row N", row) for every row, numbered from 1."""
    if not path.is_file():
        raise CorpusError(f"{path}: no such file")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        for i, row in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield f"{path}: row {i}", row
        return
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise CorpusError(f"{path}: line {number}: not valid JSON ({err.msg})") from err
            if not isinstance(row, dict):
                raise CorpusError(f"{path}: line {number}: must be a JSON object")
            yield f"{path}: line {number}", row


def _tokens(texts: list[str]) -> list[list[str]]:
    import bm25s

    return bm25s.tokenize(texts, stopwords=STOPWORDS, return_ids=False, show_progress=False)


def build_index(corpus: str | Path, out: str | Path) -> int:
    """Index `corpus` into the directory `out`; returns the number of passages."""
    import bm25s

    passages = read_corpus(corpus)
    retriever = bm25s.BM25()
    retriever.index(_tokens([f"{p['title']}\n{p['text']}" for p in passages]), show_progress=False)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    retriever.save(str(out / BM25_DIR), show_progress=False)
    with (out / PASSAGES).open("w", encoding="utf-8") as f:
        for passage in passages:
            f.write(json.dumps(passage, ensure_ascii=False) + "\n")
    return len(passages)


class SearchIndex:
    """A built index, loaded: `search(query, k)` → [(passage, score)], best first."""

    def __init__(self, path: str | Path) -> None:
        import bm25s

        path = Path(path)
        if not (path / PASSAGES).is_file() or not (path / BM25_DIR).is_dir():
            raise CorpusError(
                f"{path}: not a search index (build one with `toolrl index build CORPUS --out {path}`)"
            )
        self.path = path
        self.retriever = bm25s.BM25.load(str(path / BM25_DIR))
        with (path / PASSAGES).open(encoding="utf-8") as f:
            self.passages = [json.loads(line) for line in f if line.strip()]
        self._lock = threading.Lock()  # bm25s's retrieve is not documented as thread-safe

    def search(self, query: str, k: int) -> list[tuple[dict[str, str], float]]:
        [tokens] = _tokens([query])
        if not tokens:
            return []
        with self._lock:
            ids, scores = self.retriever.retrieve(
                [tokens], k=min(k, len(self.passages)), show_progress=False, n_threads=1
            )
        return [
            (self.passages[int(i)], float(s))
            for i, s in zip(ids[0], scores[0], strict=True)
            if s > 0
        ]


def format_passages(hits: list[tuple[dict[str, str], float]], passage_chars: int) -> str:
    """`[i] title` then the passage text (cut to `passage_chars`), one blank line between."""
    blocks = []
    for i, (passage, _) in enumerate(hits, start=1):
        text = passage["text"]
        if len(text) > passage_chars:
            text = text[:passage_chars].rstrip() + "..."
        title = f" {passage['title']}" if passage["title"] else ""
        blocks.append(f"[{i}]{title}\n{text}")
    return "\n\n".join(blocks)


class Search:
    """The `search` tool over one `SearchIndex`; a row may set `top_k` (create_kwargs)."""

    name = NAME

    def __init__(
        self, index: SearchIndex, *, top_k: int = 3, passage_chars: int = 400, max_chars: int = 1500
    ) -> None:
        self.index = index
        self.top_k, self.passage_chars, self.max_chars = top_k, passage_chars, max_chars

    @classmethod
    def from_config(cls, cfg) -> Search:
        from toolrl.config import ConfigError

        try:
            index = SearchIndex(cfg.search_index)
        except CorpusError as err:
            raise ConfigError(f"tools.search_index: {err}") from err
        return cls(
            index,
            top_k=cfg.search_top_k,
            passage_chars=cfg.search_passage_chars,
            max_chars=cfg.search_max_chars,
        )

    @property
    def schema(self) -> dict[str, Any]:
        return SCHEMA

    def open(self, top_k: int | None = None) -> _SearchSession:
        """This tool for one trajectory, with the row's `top_k` if it gives one."""
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise ValueError(
                f"search: create_kwargs.top_k must be a positive integer, not {top_k!r}"
            )
        return _SearchSession(self, top_k or self.top_k)

    def close(self) -> None:
        pass

    async def call(self, arguments: dict[str, Any]) -> ToolResult:
        return await _SearchSession(self, self.top_k).call(arguments)


class _SearchSession:
    name = NAME
    schema = SCHEMA

    def __init__(self, tool: Search, top_k: int) -> None:
        self.tool, self.top_k = tool, top_k

    async def call(self, arguments: dict[str, Any]) -> ToolResult:
        started = time.perf_counter()
        query = arguments.get("query") if isinstance(arguments, dict) else None
        if not isinstance(query, str) or not query.strip():
            text = "Error: search needs one non-empty string argument, `query`."
            return ToolResult(text, "error", time.perf_counter() - started)
        hits = await asyncio.to_thread(self.tool.index.search, query, self.top_k)
        full = format_passages(hits, self.tool.passage_chars) or f"No passages match {query!r}."
        text = middle_truncate(full, self.tool.max_chars)
        info = {"hits": [p["id"] for p, _ in hits], "truncated": len(text) < len(full)}
        return ToolResult(text, "success", time.perf_counter() - started, info)

    async def close(self) -> None:
        pass
