"""Metric sinks: metrics.jsonl (always), the console, TensorBoard and Weights & Biases.

Names follow verl's (`actor/pg_loss`, `critic/score/mean`, `response_length/mean`, `timing/*`,
`val-core/<benchmark>/acc/mean@k`) so curves compare with published runs.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from toolrl.data.io import read_jsonl


class MetricsLogger:
    """Appends one line a step to `metrics.jsonl` and forwards to the enabled sinks."""

    def __init__(
        self, run_dir: Path, loggers: list[str], config: dict[str, Any], resume_step: int = 0
    ):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate_after(resume_step)
        self.console = "console" in loggers
        self.tensorboard = self.wandb = None
        if "tensorboard" in loggers:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(str(Path(run_dir) / "tensorboard"))
        if "wandb" in loggers:
            import wandb  # offline mode (WANDB_MODE=offline) works without an account

            self.wandb = wandb.init(
                project="toolrl", name=Path(run_dir).name, config=config, dir=str(run_dir)
            )
        unknown = set(loggers) - {"console", "jsonl", "tensorboard", "wandb"}
        if unknown:
            raise ValueError(
                f"unknown trainer.loggers {sorted(unknown)}; valid: console, jsonl, tensorboard, wandb"
            )

    def _truncate_after(self, step: int) -> None:
        """After a resume from step N, lines of steps > N (from the crashed run) are dropped."""
        if not self.path.exists():
            return
        notes: list[str] = []
        rows = [row for _, row in read_jsonl(self.path, skip_bad=True, notes=notes)]
        for note in notes:  # a line cut short by the crash this run resumes from
            print(f"note: {note} (a torn line, dropped)", file=sys.stderr)
        kept = [row for row in rows if isinstance(row.get("step"), int) and row["step"] <= step]
        self.path.write_text("".join(json.dumps(row) + "\n" for row in kept))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        clean = {
            k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))
        }
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **clean}) + "\n")
        if self.tensorboard is not None:
            for key, value in clean.items():
                self.tensorboard.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(clean, step=step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.wandb is not None:
            self.wandb.finish()


def read_metrics(run_dir: Path, notes: list[str] | None = None) -> list[dict[str, float]]:
    """A run's metrics.jsonl rows; a torn line (a crash mid-write) is skipped and noted."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [row for _, row in read_jsonl(path, skip_bad=True, notes=notes)]
