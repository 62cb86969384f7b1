"""The experiments' arithmetic: the seed interval on the RL gain and the insights table."""

import json
import math
import re
from pathlib import Path

import pytest

from toolrl.demo.experiments import COMPARISONS, insights_markdown, mean_ci, rl_gain_markdown


def test_mean_ci_is_a_t_interval_that_widens_with_spread():
    mean, low, high = mean_ci([0.1, 0.2, 0.3])
    assert mean == pytest.approx(0.2)
    # t(0.975, 2) = 4.303; sd = 0.1; half-width = 4.303 * 0.1 / sqrt(3)
    assert high - mean == pytest.approx(4.303 * 0.1 / math.sqrt(3), rel=1e-3)
    assert mean - low == pytest.approx(high - mean)
    assert mean_ci([0.2, 0.2, 0.2])[1:] == (pytest.approx(0.2), pytest.approx(0.2))
    assert math.isnan(mean_ci([0.5])[1])


def _run(avg: float, calls: float) -> dict:
    return {"sft_avg": avg / 2, "rl_avg": avg, "rl_pass": avg, "tool_calls": calls,
            "tool_success": 0.9, "length": 80.0, "curve_acc": [0.1, avg], "curve_entropy": [1.0, 0.5]}  # fmt: skip


def test_insights_table_has_a_row_per_variant_with_the_spread_over_seeds():
    runs = {name: [_run(0.2, 1.0), _run(0.4, 2.0)] for pair in COMPARISONS.values() for name in pair}  # fmt: skip
    table = insights_markdown({"seeds": [0, 1], "runs": runs})
    rows = [line for line in table.splitlines() if line.startswith("| (")]
    assert len(rows) == 6
    assert "| 0.300 (0.200–0.400) |" in rows[0] and "| 1.500 (1.000–2.000) |" in rows[0]


def test_rl_gain_table_reports_each_seed_and_the_interval():
    result = {"vary": "rl", "seeds": [{"seed": 0, "sft": 0.1, "rl": 0.3, "gain": 0.2}],
              "gain": {"mean": 0.2, "ci95": [0.1, 0.3]},
              "gain_by_benchmark": {"math": {"mean": 0.5, "ci95": [0.25, 0.75]}}}  # fmt: skip
    text = rl_gain_markdown(result)
    assert "| 0 | 0.100 | 0.300 | +0.200 |" in text and "[+0.100, +0.300]" in text
    assert "- math: +0.500 [+0.250, +0.750]" in text


def _fake_pipeline(monkeypatch, calls: list):
    """Stand in for `run_demo`: record which settings ran and write what the experiments read."""
    from dataclasses import asdict

    from toolrl.demo import experiments
    from toolrl.demo.pipeline import DemoResult, resolved_recipes

    def run_demo(settings, say=print):
        calls.append((settings.out, settings.stitched, settings.teacher, tuple(settings.rl_overrides)))  # fmt: skip
        run_name = next((o.split("=", 1)[1] for o in settings.rl_overrides if o.startswith("trainer.run_name=")), "rl")  # fmt: skip
        out = Path(settings.out)
        (out / run_name).mkdir(parents=True, exist_ok=True)
        (out / run_name / "metrics.jsonl").write_text('{"acc/mean": 0.5, "actor/entropy": 0.3}\n')
        metrics = {"acc/avg@4": 0.25 + 0.01 * settings.seed, "acc/pass@4": 0.5,
                   "tool/calls_per_response": 1.0, "tool/success_rate": 0.9,
                   "response_length/mean": 80.0}  # fmt: skip
        summary = {"math": {"metrics": metrics}}
        record = {"k": 4, "benchmarks": ["math"], "rl_run_dir": run_name,
                  "stages": [{"name": s, "summary": summary} for s in ("sft", "rl")],
                  "settings": asdict(settings), "recipes": resolved_recipes(settings)}  # fmt: skip
        return DemoResult(out, json.loads(json.dumps(record)))

    monkeypatch.setattr(experiments, "run_demo", run_demo)


def test_experiments_reuse_same_setting_runs_and_insights_reuses_rl_gain(tmp_path, monkeypatch):
    from toolrl.demo.experiments import insights, rl_gain
    from toolrl.demo.pipeline import DemoSettings

    calls: list = []
    _fake_pipeline(monkeypatch, calls)
    base = DemoSettings(progress=False)
    rl_gain(tmp_path, [0, 1], base, say=lambda _: None)
    assert [Path(c[0]).name for c in calls] == ["seed0", "seed1"]
    rl_gain(tmp_path, [0, 1], base, say=lambda _: None)  # an interrupted or repeated run resumes
    assert len(calls) == 2
    changed = DemoSettings(progress=False, rl_overrides=["eval.k=16"])
    rl_gain(tmp_path, [0], changed, say=lambda _: None)  # other settings: run again
    assert len(calls) == 3

    calls.clear()
    result = insights(tmp_path, [0, 1], base, say=lambda _: None)
    ran = [Path(c[0]).name for c in calls]
    # `real` is rl-gain's seed1 as it was; seed0 was rerun with other settings above, so it runs
    assert ran.count("seed0") == 2 and ran.count("seed1") == 1  # real seed0; grpo_t both seeds
    assert sorted(n for n in ran if "_" in n) == ["reactive_seed0", "reactive_seed1", "stitched_seed0", "stitched_seed1"]  # fmt: skip
    assert set(result["runs"]) == {"real", "stitched", "grpo_t", "reactive"}
    rl_gain(tmp_path, [0, 1], base, fresh=True, say=lambda _: None)  # fresh: nothing reused
    assert [Path(c[0]).name for c in calls[-2:]] == ["seed0", "seed1"]


def test_an_edited_recipe_is_not_mistaken_for_the_one_a_run_used(tmp_path, monkeypatch):
    from toolrl.demo.experiments import rl_gain
    from toolrl.demo.pipeline import DemoSettings

    calls: list = []
    _fake_pipeline(monkeypatch, calls)
    recipe = tmp_path / "my_sft.yaml"
    original = (Path(__file__).parents[2] / "recipes" / "tiny_sft.yaml").read_text()
    recipe.write_text(original)
    settings = DemoSettings(progress=False, sft_recipe=str(recipe))
    rl_gain(tmp_path / "exp", [0], settings, say=lambda _: None)
    rl_gain(tmp_path / "exp", [0], settings, say=lambda _: None)
    assert len(calls) == 1  # same settings, same recipe: reused
    recipe.write_text(re.sub(r"epochs: \d+", "epochs: 3", original))
    rl_gain(tmp_path / "exp", [0], settings, say=lambda _: None)
    assert len(calls) == 2  # same settings, edited recipe: run again


def test_algorithms_compares_each_variant_with_grpo_tcr_seed_by_seed(tmp_path, monkeypatch):
    from toolrl.demo import algorithms as compare
    from toolrl.demo import experiments
    from toolrl.demo.pipeline import DemoResult, DemoSettings

    calls: list = []
    _fake_pipeline(monkeypatch, calls)
    # avg@4 by (variant, seed): GRPO-TCR 0.20/0.30/0.40; CISPO +0.10 on each seed; RoC ±0.
    avg = {"grpo_tcr": [0.2, 0.3, 0.4], "cispo": [0.3, 0.4, 0.5], "grpo_roc": [0.25, 0.25, 0.4]}
    fake = experiments.run_demo

    def run_demo(settings, say=print):
        result = fake(settings, say)
        run = next(o.split("=", 1)[1] for o in settings.rl_overrides if o.startswith("trainer.run_name="))  # fmt: skip
        name, seed = run[3:].rsplit("_s", 1)
        result.stages["timings"] = {"rl": 10.0}
        if name == "cispo":  # a clip acted on 3% of tokens in one step, 1% in another
            run_dir = Path(settings.out) / run
            run_dir.mkdir(parents=True, exist_ok=True)
            rows = [{"step": 1, "actor/pg_clipfrac": 0.03}, {"step": 2},
                    {"step": 3, "actor/pg_clipfrac": 0.01}]  # fmt: skip
            (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        for stage in result.stages["stages"]:
            if stage["name"] == "rl":
                stage["summary"]["math"]["metrics"]["acc/avg@4"] = avg[name][int(seed)]
        return DemoResult(result.out, result.stages)

    monkeypatch.setattr(experiments, "run_demo", run_demo)
    base, only = DemoSettings(progress=False), ["cispo", "grpo_roc"]
    result = compare.algorithms(tmp_path, [0, 1, 2], base, only=only, say=lambda _: None)
    assert len(calls) == 9 and {Path(c[0]) for c in calls} == {tmp_path}  # one SFT directory
    table = result["table"]
    # CISPO − TCR = +0.1 on every seed: the interval is [0.1, 0.1], so "better".
    assert table["cispo"]["avg_minus_baseline"]["mean"] == pytest.approx(0.1)
    assert table["cispo"]["avg_minus_baseline"]["ci95"] == [pytest.approx(0.1), pytest.approx(0.1)]
    assert compare.reading(table["cispo"]) == "better"
    assert table["cispo"]["clip_fraction"] == pytest.approx(0.02)  # the step without one skipped
    assert math.isnan(table["grpo_roc"]["clip_fraction"])  # no metrics: unknown, not 0
    # RoC − TCR = +0.05, −0.05, 0: mean 0, the interval spans 0.
    assert table["grpo_roc"]["avg_minus_baseline"]["mean"] == pytest.approx(0.0)
    assert compare.reading(table["grpo_roc"]) == "no difference at this scale"
    text = (tmp_path / "algorithms.md").read_text()
    assert "| CISPO | 0.400 [" in text and "| 2.00% |" in text and "better |" in text
    assert (tmp_path / "algorithms_curves.png").stat().st_size > 0
    compare.algorithms(tmp_path, [0, 1, 2], base, only=only, say=lambda _: None)
    assert len(calls) == 9  # every (variant, seed) reused
    with pytest.raises(ValueError, match="unknown variant"):
        compare.algorithms(tmp_path, [0], DemoSettings(progress=False), only=["nope"])


def test_a_record_made_before_an_option_existed_is_reused_at_its_default(tmp_path, monkeypatch):
    from toolrl.demo.experiments import rl_gain
    from toolrl.demo.pipeline import DemoSettings

    calls: list = []
    _fake_pipeline(monkeypatch, calls)
    settings = DemoSettings(progress=False)
    rl_gain(tmp_path, [0], settings, say=lambda _: None)
    record_path = tmp_path / "seed0" / "stages_real.json"
    record = json.loads(record_path.read_text())
    del record["recipes"]["rl"]["algorithm"]["roc"]  # as written before GRPO-RoC existed
    record_path.write_text(json.dumps(record))
    rl_gain(tmp_path, [0], settings, say=lambda _: None)
    assert len(calls) == 1  # the missing option is at its default: the same run
    record["recipes"]["rl"]["algorithm"]["policy_loss"] = "gspo"  # a key that differs
    record_path.write_text(json.dumps(record))
    rl_gain(tmp_path, [0], settings, say=lambda _: None)
    assert len(calls) == 2


def test_a_given_sft_model_is_fingerprinted_by_its_content(tmp_path):
    from toolrl.demo.pipeline import Cache
    from toolrl.demo.stages import given_sft_model

    model = tmp_path / "ckpt"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "model.safetensors").write_bytes(b"weights")
    (tmp_path / "out").mkdir()
    cache = Cache(tmp_path / "out", False)
    assert given_sft_model(model, cache) == model
    first = cache.done["sft"]
    given_sft_model(model, cache)
    assert cache.done["sft"] == first
    (model / "model.safetensors").write_bytes(b"other weights")
    given_sft_model(model, cache)
    assert cache.done["sft"] != first
    with pytest.raises(FileNotFoundError, match="not a checkpoint"):
        given_sft_model(tmp_path / "missing", cache)


def test_the_sft_fingerprint_reads_only_the_groups_sft_uses(tmp_path, monkeypatch):
    """An option of RL, rollouts or tools (a group SFT never reads) keeps a trained SFT model;
    an SFT setting retrains it. Before, the whole config was hashed and every new option
    anywhere retrained the demo's SFT."""
    import toolrl.trainers.checkpoint as checkpoint
    import toolrl.trainers.sft as sft_trainer
    from toolrl.demo import stages
    from toolrl.demo.pipeline import Cache, DemoSettings

    trained: list = []

    def fake_run_sft(config, device="cpu"):
        run_dir = tmp_path / f"sft_run{len(trained)}"
        run_dir.mkdir()
        trained.append(config)
        return run_dir

    monkeypatch.setattr(sft_trainer, "run_sft", fake_run_sft)
    monkeypatch.setattr(checkpoint, "latest_checkpoint", lambda run_dir: run_dir)
    out = tmp_path / "out"
    out.mkdir()
    cache = Cache(out, False)

    def sft(*overrides: str) -> None:
        settings = DemoSettings(progress=False, sft_overrides=list(overrides))
        stages.sft(settings, out, cache, tmp_path / "model", tmp_path / "sft.jsonl")

    sft()
    sft("rollout.branching.mode=arpo", "algorithm.policy_loss=cispo", "tools.timeout=9")
    assert len(trained) == 1
    sft("trainer.lr=0.003")
    assert len(trained) == 2
    assert trained[-1].trainer.lr == 0.003


def test_an_rl_branching_option_keeps_the_collection_and_the_teacher_never_branches(
    tmp_path, monkeypatch
):
    """`rollout.branching` is an RL rollout option: before, it changed the collection's
    fingerprint (recollecting and retraining SFT for ARPO and AEPO in `experiments algorithms`)
    and sent the scripted teacher through the branching loop."""
    from types import SimpleNamespace

    import toolrl.data.collect as collect_module
    import toolrl.data.rl as rl_data
    from toolrl.demo import stages
    from toolrl.demo.pipeline import Cache, DemoSettings

    loops: list = []

    def fake_collect(engine, tokenizer, tools, samples, settings):
        loops.append(settings)
        return SimpleNamespace(rows=[], stats={})

    tools = SimpleNamespace(close=lambda: None, schemas=[])
    teacher = SimpleNamespace(engine=None, tokenizer=None, tools=tools)
    monkeypatch.setattr(collect_module, "load_teacher", lambda *a, **k: teacher)
    monkeypatch.setattr(collect_module, "collect", fake_collect)
    monkeypatch.setattr(rl_data, "load_rl_samples", lambda path: [])
    out = tmp_path / "out"
    (out / "data").mkdir(parents=True)
    cache = Cache(out, False)
    data = {"train": out / "data" / "train.jsonl"}
    for mode in ("arpo", "none", "aepo"):
        settings = DemoSettings(progress=False, rl_overrides=[f"rollout.branching.mode={mode}"])
        stages.collect(settings, out, cache, data, say=lambda _: None)
    assert len(loops) == 1  # collected once: the branching modes share the fingerprint
    assert loops[0].branching is None  # the run that collected had mode=arpo
