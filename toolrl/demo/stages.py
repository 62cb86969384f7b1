"""The demo's stages, one function each; `pipeline.run_demo` chains them and caches.

Each takes the run directory and what the previous stages produced, and returns the path (or
summary) the next stage needs. A stage whose fingerprint is in the cache returns its earlier
output without recomputing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from toolrl.config import Config
from toolrl.trainers.model_io import torch_threads


def tasks(settings, out: Path, cache) -> dict[str, Path]:
    """Train and test splits of the synthetic suite (`toolrl data tasks`)."""
    from toolrl.data.tasks import make_splits, write_splits

    sizes = {"train": settings.train_tasks, "test": settings.test_tasks}
    key = {"sizes": sizes, "weights": settings.weights, "seed": settings.seed}
    cached, digest = cache.fresh("tasks", key)
    data = out / "data"
    if cached:
        return _split_files(data)
    paths = write_splits(data, make_splits(settings.seed, sizes, settings.weights))
    cache.mark("tasks", digest)
    return paths


# Rollout and tool settings that never change a trajectory of the demo's collection or
# evaluation: how many per prompt, how parallel, and branching (an RL rollout's option: the
# teacher collects and evaluation samples without it).
_NOT_TRAJECTORY = ("n", "engine", "branching")
_SAMPLING = ("temperature", "top_p", "top_k")
_TOOLS_NOT_TRAJECTORY = ("max_concurrent",)


def trajectory_settings(config: Config, *, sampling: bool) -> dict[str, Any]:
    """The rollout and tool settings a stage's trajectories depend on, for its cache key.
    Evaluation samples with `eval`'s settings and a scripted teacher does not sample, so neither
    depends on the rollout's temperature, top-p or top-k (`sampling=False`): RL-only changes such
    as `rollout.n` or `rollout.temperature` then reuse the collected data, SFT and its evaluation."""
    ignored = _NOT_TRAJECTORY if sampling else (*_NOT_TRAJECTORY, *_SAMPLING)
    rollout = {k: v for k, v in asdict(config.rollout).items() if k not in ignored}
    tools = {k: v for k, v in asdict(config.tools).items() if k not in _TOOLS_NOT_TRAJECTORY}
    return {**rollout, "tools": tools}


def _split_files(data: Path) -> dict[str, Path]:
    names = ("train", "test", "test_math", "test_choice", "test_code")
    return {n: data / f"{n}.jsonl" for n in names if (data / f"{n}.jsonl").is_file()}


def model(settings, out: Path, cache) -> Path:
    """The byte-level tokenizer and the tiny Qwen3, initialised from the seed."""
    from toolrl.models.tiny import TinySize, write_tiny

    size = TinySize(**{**asdict(TinySize()), **settings.model_size})
    cached, digest = cache.fresh("model", {"size": asdict(size), "seed": settings.seed})
    path = out / "model"
    if not cached:
        write_tiny(path, seed=settings.seed, size=size)
        cache.mark("model", digest)
    return path


def collect(settings, out: Path, cache, data: dict[str, Path], say: Callable[[str], None]) -> Path:
    """The scripted teacher's real trajectories on the training tasks (`toolrl data collect`),
    or their stitched counterparts (`toolrl data stitch`) when `settings.stitched`."""
    from toolrl.data.collect import collect as collect_rows
    from toolrl.data.collect import load_teacher
    from toolrl.data.io import read_rows, write_jsonl
    from toolrl.data.rl import load_rl_samples
    from toolrl.data.stitch import stitch_rows
    from toolrl.demo.settings import rl_config
    from toolrl.rollout.agent_loop import settings_from_config

    config = rl_config(settings, out, out / "model", data["train"])
    key = {"tasks": cache.done.get("tasks"), "teacher": settings.teacher,
           "stitched": settings.stitched,
           "rollout": trajectory_settings(config, sampling=not settings.teacher.startswith("scripted:"))}  # fmt: skip
    cached, digest = cache.fresh("collect", key)
    path = out / "data" / ("sft_stitched.jsonl" if settings.stitched else "sft.jsonl")
    if cached:
        return path
    teacher = load_teacher(settings.teacher, config, tokenizer=str(out / "model"))
    if settings.stitched:
        rows, stats = stitch_rows(
            [row for _, row in read_rows(data["train"])],
            teacher.tools.schemas,
            max_output_chars=config.tools.output_max_chars,
        )
    else:
        samples = load_rl_samples(data["train"])
        loop = settings_from_config(config.rollout, tools=config.tools, seed=settings.seed)
        loop.branching = None  # the RL recipe's branching is for RL's rollouts, not the teacher's
        result = collect_rows(teacher.engine, teacher.tokenizer, teacher.tools, samples, settings=loop)  # fmt: skip
        rows, stats = result.rows, result.stats
    teacher.tools.close()
    write_jsonl(path, rows)
    path.with_suffix(".stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    say(f"{len(rows)} SFT conversations ({'stitched' if settings.stitched else 'real'}): {_collect_line(stats)}")  # fmt: skip
    cache.mark("collect", digest)
    return path


def _collect_line(stats: dict[str, Any]) -> str:
    kept = stats.get("kept_rows") or {}
    if not kept:
        return f"dropped {stats.get('dropped')}"
    return (f"teacher accuracy {stats['accuracy']:.2f}, {kept['tool/calls_per_response']:.2f} "
            f"tool calls each, tool success {kept['tool/success_rate']:.2f}, dropped {stats['dropped']}")  # fmt: skip


SFT_READS = ("model", "data", "trainer")
"""The config groups `run_sft` reads (its fingerprint's part of the recipe)."""


def sft(settings, out: Path, cache, model_path: Path, data: Path) -> Path:
    """SFT from the tiny model on the collected rows; returns the final checkpoint (linked
    as `<out>/sft_model`, the RL recipe's model.path)."""
    from toolrl.demo.settings import sft_config
    from toolrl.trainers.checkpoint import latest_checkpoint
    from toolrl.trainers.sft import run_sft

    config = sft_config(settings, out, model_path, data)
    # Only the groups SFT reads: an RL, rollout or tool option added to toolrl (with its
    # default) leaves a trained SFT model reusable.
    full = config.to_dict()
    recipe = {group: full[group] for group in SFT_READS}
    key = {"model": cache.done.get("model"), "data": cache.done.get("collect"), "config": recipe}
    if settings.device != "cpu":  # a GPU trains a slightly different model (CPU keys unchanged)
        key["device"] = settings.device
    cached, digest = cache.fresh("sft", key)
    _quiet(config, settings.progress)
    link = out / "sft_model"
    if cached and link.is_dir():
        return link
    shutil.rmtree(out / "sft", ignore_errors=True)
    with torch_threads(-1):  # no sandbox runs during SFT: every core
        run_dir = run_sft(config, device=settings.device)
    _link(link, latest_checkpoint(run_dir))
    cache.mark("sft", digest)
    return link


def rl(config: Config, out: Path, progress: bool = True, *, device: str = "cpu") -> Path:
    """GRPO-TCR from the SFT model with the real sandbox, in `<out>/<run_name>` (`rl`); returns
    the final checkpoint, linked as `<out>/<run_name>_model`. Always reruns."""
    from toolrl.distributed.launch import fit_on_backend
    from toolrl.trainers.checkpoint import latest_checkpoint

    _quiet(config, progress)
    shutil.rmtree(out / config.trainer.run_name, ignore_errors=True)
    run_dir = fit_on_backend(config, device=device)
    link = out / f"{config.trainer.run_name}_model"
    _link(link, latest_checkpoint(run_dir))
    return link


def given_sft_model(path: Path, cache) -> Path:
    """A given SFT checkpoint (`DemoSettings.sft_model`), standing in for the SFT stage: its
    fingerprint is a hash of its files, so its evaluation is reused while they are unchanged
    (and a later run of the pipeline's own SFT sees another fingerprint and trains)."""
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"--sft-model {path}: not a checkpoint directory (no config.json)")
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode())
        digest.update(file.read_bytes())
    cache.mark("sft", digest.hexdigest())
    return path


def evaluate_model(
    model_path: Path,
    stage: str,
    config: Config,
    benchmarks: dict[str, Path],
    out: Path,
    cache,
    cacheable: bool,
    progress: bool = True,
    limit: int | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """avg@k / pass@k / maj@k and tool use of one model on the held-out benchmarks (the first
    `limit` problems of each when given), written to `<out>/eval/<stage>/`; when `cacheable`,
    reused while the model's stage and the evaluation settings are unchanged."""
    from toolrl.eval.benchmarks import load_benchmark
    from toolrl.eval.runner import evaluate
    from toolrl.rollout.engines.factory import build_engine
    from toolrl.tools.registry import build_tools

    eval_dir = out / "eval" / stage
    upstream = {"base": "model", "sft": "sft"}.get(stage)
    full_key = {"upstream": cache.done.get(upstream), "eval": asdict(config.eval),
                "rollout": trajectory_settings(config, sampling=False),
                "benchmarks": {k: str(v) for k, v in benchmarks.items()},
                "limit": limit}  # fmt: skip
    cached, digest = cache.fresh(f"eval_{stage}", full_key)
    if cacheable and cached and (eval_dir / "summary.json").is_file():
        return json.loads((eval_dir / "summary.json").read_text())
    shutil.rmtree(eval_dir, ignore_errors=True)
    engine = build_engine(config, model_path, device=device, purpose="the demo's evaluation")
    tools = build_tools(config.tools)
    sets = {name: load_benchmark(name, path)[:limit] for name, path in benchmarks.items()}
    try:
        summaries = _evaluate_with_bar(
            evaluate, engine, model_path, tools, sets, config, eval_dir, stage, progress
        )
    finally:
        tools.close()
    if cacheable:
        cache.mark(f"eval_{stage}", digest)
    return summaries


def _evaluate_with_bar(
    evaluate, engine, model_path, tools, sets, config, eval_dir, stage, progress
):
    """Run the eval runner one benchmark at a time under a progress bar."""
    from transformers import AutoTokenizer

    from toolrl.trainers.rl_setup import progress_bar

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    summaries: dict[str, Any] = {}
    with progress_bar(f"eval {stage}", disabled=not progress) as bar:
        task = bar.add_task("eval", total=len(sets), status="")
        for name, samples in sets.items():
            summaries.update(
                evaluate(
                    engine,
                    tokenizer,
                    tools,
                    {name: samples},
                    config.eval,
                    config.rollout,
                    eval_dir,
                    reward_cfg=config.reward,
                    tools_cfg=config.tools,
                    seed=config.trainer.seed,
                    max_context_length=engine.max_context_length,
                )
            )
            avg = summaries[name]["metrics"].get(f"acc/avg@{config.eval.k}", 0.0)
            bar.update(task, advance=1, status=f"{name} avg@{config.eval.k} {avg:.2f}")
    (eval_dir / "summary.json").write_text(json.dumps(summaries, indent=2) + "\n")
    return summaries


def _quiet(config: Config, progress: bool) -> None:
    """Console metric lines off (the stage's progress bar stays unless `progress` is off)."""
    config.trainer.loggers = ["console", "jsonl"] if progress else ["jsonl"]


def _link(link: Path, target: Path | None) -> None:
    if target is None:
        raise RuntimeError(f"no checkpoint was written for {link}")
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(os.path.relpath(target, link.parent))
