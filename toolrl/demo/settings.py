"""What a demo run is (`DemoSettings`), and the SFT and RL recipes it resolves to."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolrl.config import Config, load_config


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
    sft_model: str | None = None
    """An SFT checkpoint to start RL from instead of the pipeline's own: collection and SFT are
    skipped (the tasks are still made: RL data and held-out benchmarks). Its evaluation is
    cached by the checkpoint's content."""
    device: str = "cpu"
    """torch device of SFT, RL and evaluation (`cuda` on a GPU; the scripted teacher and the
    sandbox run on the CPU either way). Part of the SFT cache key: a GPU run trains a slightly
    different model."""


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
