"""The search tool: `toolrl index build`, BM25 retrieval, observation limits, bad input."""

import asyncio
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from toolrl.cli import main
from toolrl.config import ConfigError, load_config
from toolrl.tools.registry import build_tools
from toolrl.tools.search import CorpusError, Search, SearchIndex, build_index, read_corpus

CORPUS = [
    {
        "id": "velmora",
        "title": "Velmora",
        "text": "Velmora is the capital of Ostrand, on the Quell.",
    },
    {"id": "ostrand", "title": "Ostrand", "text": "Ostrand was founded in 1742 by Tessaly Brune."},
    {
        "id": "quell",
        "title": "Quell",
        "text": "The Quell is a river that flows into the Amber Sea.",
    },
    {"id": "brune", "title": "Tessaly Brune", "text": "Brune was born in Kestrel Point. " * 20},
]


@pytest.fixture
def index_dir(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps(row) + "\n" for row in CORPUS))
    assert main(["index", "build", str(corpus), "--out", str(tmp_path / "idx")]) == 0
    return tmp_path / "idx"


def search(tool, query, **kwargs):
    return asyncio.run(tool.open(**kwargs).call({"query": query}))


def test_the_best_passage_comes_first(index_dir):
    hits = SearchIndex(index_dir).search("who founded Ostrand", 2)
    assert hits[0][0]["id"] == "ostrand" and len(hits) == 2
    assert hits[0][1] > hits[-1][1]
    assert SearchIndex(index_dir).search("zzz unknownword", 3) == []


def test_observation_limits_and_top_k(index_dir):
    tool = Search(SearchIndex(index_dir), top_k=1, passage_chars=30, max_chars=1000)
    one = search(tool, "Brune Kestrel")
    assert one.status == "success" and one.text.startswith("[1] Tessaly Brune\n")
    assert "[2]" not in one.text and one.text.endswith("...")
    assert len(one.text.split("\n", 1)[1]) <= 33
    more = search(tool, "Ostrand Velmora Quell", top_k=3)  # a row's create_kwargs
    assert "[3]" in more.text
    short = Search(SearchIndex(index_dir), top_k=4, passage_chars=400, max_chars=120)
    capped = search(short, "Brune Ostrand Quell Velmora")
    assert len(capped.text) <= 120 and "characters truncated" in capped.text


def test_a_broken_call_is_an_error_observation(index_dir):
    tool = Search(SearchIndex(index_dir))
    for arguments in ({}, {"query": ""}, {"query": 3}):
        result = asyncio.run(tool.call(arguments))
        assert result.status == "error" and "`query`" in result.text
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        tool.open(top_k=0)


def test_search_is_built_from_the_config(index_dir):
    tools = build_tools(
        load_config(None, ["tools.enabled=[search]", f"tools.search_index={index_dir}"]).tools
    )
    assert tools.names == ["search"]
    with pytest.raises(ConfigError, match="not a search index"):
        build_tools(load_config(None, ["tools.enabled=[search]", "tools.search_index=/nope"]).tools)


def test_a_malformed_corpus_row_names_its_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1, "text": "fine"}\n\n{"id": 2, "title": "no text"}\n')
    assert main(["index", "build", str(bad), "--out", str(tmp_path / "i")]) == 2
    assert "bad.jsonl: line 3: `text` must be a non-empty string" in capsys.readouterr().err
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n')
    with pytest.raises(CorpusError, match="line 2: id `1` repeats"):
        read_corpus(dup)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a"}\n{"text": \n')
    with pytest.raises(CorpusError, match="line 2"):
        read_corpus(broken)


def test_parquet_corpus(tmp_path):
    path = tmp_path / "corpus.parquet"
    pq.write_table(pa.Table.from_pylist(CORPUS), path)
    assert build_index(path, tmp_path / "idx") == 4
    assert SearchIndex(tmp_path / "idx").search("Amber Sea river", 1)[0][0]["id"] == "quell"


def test_the_rollout_command_reports_a_row_naming_a_missing_tool(index_dir, tmp_path, capsys):
    rows = tmp_path / "rows.jsonl"
    row = {"question": "Q?", "golden_answers": ["a"], "extra_info": {"tools_kwargs": {"serch": {}}}}
    rows.write_text(json.dumps(row) + "\n")
    argv = ["rollout", "--model", "tiny", "--data", str(rows), "--n", "1",
            "--out", str(tmp_path / "r.jsonl"), "rollout.engine=scripted",
            "rollout.scripted_policy=toolrl.data.tasks.search:policy",
            "tools.enabled=[search]", f"tools.search_index={index_dir}"]  # fmt: skip
    assert main(argv) == 2
    assert "names tool `serch`, which this run does not have" in capsys.readouterr().err
