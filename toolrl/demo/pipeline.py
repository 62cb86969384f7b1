"""The embedded demo pipeline, stage by stage, in one process:

    tasks → tiny model → teacher trajectories → SFT → GRPO-TCR RL → evaluation (base, SFT, RL)

Every stage is a library call that a CLI command also makes with the recipes
`recipes/tiny_sft.yaml` and `recipes/tiny.yaml`, so each can be reproduced on its own:

    toolrl data tasks --out runs/demo/data
    toolrl model tiny runs/demo/model --size hidden_size=128 intermediate_size=384
    toolrl data collect --teacher scripted:toolrl.data.tasks.teacher:policy \\
        --tasks runs/demo/data/train.jsonl --n 1 --out runs/demo/data/sft.jsonl --recipe tiny
    toolrl sft tiny_sft                     # → runs/demo/sft (the demo links sft_model to it)
    toolrl rl tiny                          # → runs/demo/rl
    toolrl eval --recipe tiny --model runs/demo/rl_model --out runs/demo/eval/rl \\
        --bench math=runs/demo/data/test_math.jsonl --bench choice=... --bench code=...

Caching: each stage records a fingerprint of what it was built from (`<out>/cache.json`); a
rerun with the same settings skips the data, model, collection, SFT and the base and SFT
evaluations, and reruns RL and its evaluation (what a newcomer changes most). `fresh=True`
starts over.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from toolrl.config import Config, load_config

STAGE_NAMES = ("base", "sft", "rl")


@dataclass
class DemoSettings:
    """What a demo run is: sizes, seeds and recipe overrides (defaults: `toolrl demo`)."""

    out: str = "runs/demo"
    seed: int = 0
    """Seeds the tasks, the model's initialisation, SFT and RL."""
    train_tasks: int = 2400
    test_tasks: int = 150
    """Held-out problems, split over the three benchmarks as the task weights say."""
    weights: dict[str, float] = field(
        default_factory=lambda: {"math": 0.5, "choice": 0.25, "code": 0.25}
    )
    sft_recipe: str = "tiny_sft"
    rl_recipe: str = "tiny"
    sft_overrides: list[str] = field(default_factory=list)
    rl_overrides: list[str] = field(default_factory=list)
    teacher: str = "scripted:toolrl.data.tasks.teacher:policy"
    stitched: bool = False
    """SFT on stitched trajectories (`toolrl data stitch`) instead of the teacher's real ones."""
    model_size: dict[str, int] = field(
        default_factory=lambda: {"hidden_size": 128, "intermediate_size": 384}
    )
    """Overrides of `TinySize`: ~0.8M parameters, 4x faster than the default 3.3M on a CPU."""
    skip_base_eval: bool = False
    base_eval_problems: int = 10
    """Problems per benchmark for the untrained model (it scores 0 and writes the longest
    responses, so the full held-out set would cost a minute to confirm it)."""
    progress: bool = True
    device: str = "cpu"
    """torch device of SFT, RL and evaluation (`cuda` on a GPU; the scripted teacher and the
    sandbox run on the CPU either way). Part of the SFT cache key: a GPU run trains a slightly
    different model."""


@dataclass
class DemoResult:
    out: Path
    stages: dict[str, Any]
    """What `<out>/stages.json` holds: k, benchmarks, per-stage summaries, timings."""


class Cache:
    """Per-stage fingerprints in `<out>/cache.json`: a stage reruns when its inputs changed."""

    def __init__(self, out: Path, fresh: bool):
        self.path = out / "cache.json"
        self.done: dict[str, str] = {}
        if not fresh and self.path.is_file():
            self.done = json.loads(self.path.read_text())

    def fresh(self, stage: str, key: Any) -> tuple[bool, str]:
        """(is it cached, its fingerprint); `key` must include upstream fingerprints."""
        digest = hashlib.sha1(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()
        return self.done.get(stage) == digest, digest

    def mark(self, stage: str, digest: str) -> None:
        self.done[stage] = digest
        self.path.write_text(json.dumps(self.done, indent=2))


def sft_config(settings: DemoSettings, out: Path, model: Path, data: Path) -> Config:
    """The SFT recipe pointed at this run's model and data."""
    return _stage_config(settings.sft_recipe, "sft", settings.seed, out, model, data, settings.sft_overrides)  # fmt: skip


def rl_config(settings: DemoSettings, out: Path, model: Path, train: Path) -> Config:
    """The RL recipe pointed at the SFT model and this run's training tasks."""
    return _stage_config(settings.rl_recipe, "rl", settings.seed, out, model, train, settings.rl_overrides)  # fmt: skip


def resolved_recipes(settings: DemoSettings) -> dict[str, Any]:
    """The SFT and RL recipes as these settings resolve them (file contents and overrides): a
    run's record keeps them, so an edited recipe is not mistaken for the one a run used."""
    sft = load_config(settings.sft_recipe, settings.sft_overrides).to_dict()
    return {"sft": sft, "rl": load_config(settings.rl_recipe, settings.rl_overrides).to_dict()}


def _stage_config(
    recipe: str,
    run_name: str,
    seed: int,
    out: Path,
    model: Path,
    data: Path,
    overrides: list[str],
) -> Config:
    """`recipe` with this run's model, data, directory and seed; the user's overrides last."""
    return load_config(
        recipe,
        [
            f"model.path={model}",
            f"data.train_files=[{data}]",
            f"trainer.output_dir={out}",
            f"trainer.run_name={run_name}",
            f"trainer.seed={seed}",
            *overrides,
        ],
    )


def run_demo(
    settings: DemoSettings, *, fresh: bool = False, say: Callable[[str], None] = print
) -> DemoResult:
    """Run every stage (see the module docstring); writes `<out>/stages.json` and returns it."""
    import torch

    from toolrl.demo import stages

    out = Path(settings.out)
    if fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    cache = Cache(out, fresh)
    torch.manual_seed(settings.seed)
    timings: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        say(f"[stage] {name}")
        began = time.perf_counter()
        result = fn()
        timings[name] = round(time.perf_counter() - began, 2)
        say(f"[done] {name}: {timings[name]:.1f}s")
        return result

    data = timed("tasks", lambda: stages.tasks(settings, out, cache))
    model = timed("model", lambda: stages.model(settings, out, cache))
    sft_data = timed("collect", lambda: stages.collect(settings, out, cache, data, say))
    sft_model = timed("sft", lambda: stages.sft(settings, out, cache, model, sft_data))
    benchmarks = {kind: data[f"test_{kind}"] for kind in settings.weights if f"test_{kind}" in data}
    rl_cfg = rl_config(settings, out, sft_model, data["train"])
    evaluated: dict[str, dict[str, Any]] = {}
    if not settings.skip_base_eval:
        evaluated["base"] = timed("eval base", lambda: stages.evaluate_model(model, "base", rl_cfg, benchmarks, out, cache, True, settings.progress, limit=settings.base_eval_problems, device=settings.device))  # fmt: skip
    evaluated["sft"] = timed("eval sft", lambda: stages.evaluate_model(sft_model, "sft", rl_cfg, benchmarks, out, cache, True, settings.progress, device=settings.device))  # fmt: skip
    rl_model = timed(
        "rl", lambda: stages.rl(rl_cfg, out, settings.progress, device=settings.device)
    )
    evaluated["rl"] = timed("eval rl", lambda: stages.evaluate_model(rl_model, "rl", rl_cfg, benchmarks, out, cache, False, settings.progress, device=settings.device))  # fmt: skip
    record = {
        "k": rl_cfg.eval.k,
        "benchmarks": list(benchmarks),
        "stages": [
            {"name": name, "summary": summary, "samples_dir": f"eval/{name}"}
            for name, summary in evaluated.items()
        ],
        "timings": timings,
        "rl_run_dir": rl_cfg.trainer.run_name,
        "settings": asdict(settings),
        "recipes": resolved_recipes(settings),
    }
    (out / "stages.json").write_text(json.dumps(record, indent=2) + "\n")
    return DemoResult(out, record)
