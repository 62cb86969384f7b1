"""Checkpoints that resume exactly, written atomically.

`checkpoints/step_N/` holds the model (HF safetensors, loadable with from_pretrained; LoRA runs
save PEFT adapters), the tokenizer, and `trainer_state.pt`: optimizer, scheduler, every RNG
state, and the trainer's own counters (step, data position). The directory is written under a
temporary name and renamed into place only when complete, so a crash while saving never leaves
a checkpoint that looks complete; `latest_checkpoint` only considers renamed ones.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "trainer_state.pt"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def rng_state() -> dict[str, Any]:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: Path, step: int, model, tokenizer, optimizer, scheduler, extra: dict[str, Any]
) -> Path:
    """Write `run_dir/checkpoints/step_{step}` atomically and return its path."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step}"
    tmp = root / f".step_{step}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        "step": step,
        **extra,
    }
    torch.save(state, tmp / STATE_FILE)
    _fsync_tree(tmp)
    if final.exists():  # re-saving a step (e.g. after resuming from it): replace it whole
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(root)
    return final


class RunDirInUse(ValueError):
    """A run directory that already holds a run, given without --resume or --overwrite."""


def claim_run_dir(run_dir: Path, *, resume: bool, overwrite: bool = False) -> Path | None:
    """Make sure a new run never mixes with an old one in `run_dir`.

    Resuming continues what is there. Otherwise a non-empty `run_dir` is refused
    (RunDirInUse), or with `overwrite` moved aside to `<name>.old-N` (returned) so that the new
    run starts empty: old checkpoints left beside a new metrics.jsonl would make a later
    --resume continue the old run.
    """
    run_dir = Path(run_dir)
    if resume or not run_dir.is_dir() or not any(run_dir.iterdir()):
        return None
    if not overwrite:
        raise RunDirInUse(
            f"{run_dir} already holds a run: add --resume to continue it, --overwrite to move it "
            "aside and start again, or choose another trainer.run_name"
        )
    n = 1
    while (aside := run_dir.with_name(f"{run_dir.name}.old-{n}")).exists():
        n += 1
    os.replace(run_dir, aside)
    return aside


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step, or None."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return None
    steps = [
        (int(m.group(1)), p)
        for p in root.iterdir()
        if (m := _STEP_DIR.match(p.name)) and (p / STATE_FILE).is_file()
    ]
    return max(steps)[1] if steps else None


def load_trainer_state(path: Path, optimizer, scheduler) -> dict[str, Any]:
    """Restore optimizer, scheduler and RNG states; return the whole saved state."""
    state = torch.load(Path(path) / STATE_FILE, weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return state


def _fsync_tree(path: Path) -> None:
    for file in path.rglob("*"):
        if file.is_file():
            with file.open("rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
