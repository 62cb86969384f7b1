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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from toolrl.demo.settings import DemoSettings, resolved_recipes, rl_config

STAGE_NAMES = ("base", "sft", "rl")


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
    if settings.sft_model:  # RL from a given checkpoint: no collection, no SFT
        sft_model = stages.given_sft_model(Path(settings.sft_model), cache)
    else:
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
