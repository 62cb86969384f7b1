"""The search task family: an invented world, one/two-hop questions, a teacher that searches."""

import asyncio

from toolrl.cli import main
from toolrl.data.rl import load_rl_samples
from toolrl.data.tasks.search import corpus, make_world, policy, questions
from toolrl.rewards.registry import Graders
from toolrl.rollout.agent_loop import AgentLoop, LoopSettings
from toolrl.rollout.engines.scripted import ScriptedEngine
from toolrl.tools.search import Search, SearchIndex, build_index


def test_the_world_is_deterministic_and_its_names_unique():
    world = make_world(3, 40)
    assert world == make_world(3, 40) and world != make_world(4, 40)
    names = [n for c in world for n in (c.name, c.capital, c.river, c.birthplace, c.founder)]
    assert len(names) == len(set(names))
    assert len(corpus(world)) == 3 * 40 and len(questions(world)) == 5 * 40


def rollout(tmp_path, tiny_tokenizer, world_seed, index_seed):
    out = tmp_path / f"w{world_seed}"
    assert main(["data", "search-tasks", "--out", str(out), "--seed", str(world_seed),
                 "--countries", "20", "--train", "0", "--test", "30"]) == 0  # fmt: skip
    other = tmp_path / f"c{index_seed}.jsonl"
    from toolrl.data.tasks.search import _write

    _write(other, corpus(make_world(index_seed, 20)))
    build_index(other, tmp_path / f"idx{index_seed}")
    tool = Search(SearchIndex(tmp_path / f"idx{index_seed}"), top_k=2)
    samples = load_rl_samples(out / "test.jsonl")
    loop = AgentLoop(ScriptedEngine(tiny_tokenizer, policy), tiny_tokenizer, [tool], LoopSettings())
    trajectories = loop.run(samples)
    graders = Graders()
    accuracy = sum(
        asyncio.run(graders.agrade(t.sample, t.final_text)).acc for t in trajectories
    ) / len(trajectories)
    return samples, trajectories, accuracy


def test_the_teacher_really_searches_and_answers_from_what_it_read(tmp_path, tiny_tokenizer):
    samples, trajectories, accuracy = rollout(tmp_path, tiny_tokenizer, 0, 0)
    assert accuracy == 1.0
    for sample, traj in zip(samples, trajectories, strict=True):
        assert traj.num_tool_calls == sample.extra_info["hops"]
        assert all(call.name == "search" for call in traj.tool_calls)
    # the same questions against another world's corpus: the teacher cannot know the answers
    _, _, blind = rollout(tmp_path, tiny_tokenizer, 0, 1)
    assert blind == 0.0
