"""AdamW and learning-rate schedules (constant, cosine, linear), each with linear warmup."""

from __future__ import annotations

import math

import torch


def build_optimizer(parameters, trainer_cfg) -> torch.optim.AdamW:
    """AdamW over the trainable parameters with the config's lr, betas and weight decay.

    The fused kernel (one pass over each tensor instead of a chain of foreach ops: on the tiny
    model 5 ms instead of 31 ms a step on a 2-core CPU) wherever torch has it: plain CPU or CUDA
    parameters. Sharded parameters (FSDP2's DTensors) keep the default implementation. Fused
    updates leave the parameters' version counters alone, so a trainer tells its in-process
    engine about them (`HFEngine.weights_updated`).
    """
    params = [p for p in parameters if p.requires_grad]
    fused = bool(params) and all(
        type(p) is torch.nn.Parameter and p.device.type in ("cpu", "cuda") and p.is_floating_point()
        for p in params
    )
    return torch.optim.AdamW(
        params,
        lr=trainer_cfg.lr,
        betas=tuple(trainer_cfg.betas),
        weight_decay=trainer_cfg.weight_decay,
        fused=fused or None,
    )


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the peak lr at `step` (0-based): linear warmup, then the schedule to 0."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return 1.0 - progress
    raise ValueError(f"unknown lr_schedule {schedule!r}; valid: constant, cosine, linear")


def build_scheduler(optimizer, trainer_cfg, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = int(trainer_cfg.warmup_ratio * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total_steps, warmup, trainer_cfg.lr_schedule)
    )


def due(every: int, done: int, total: int) -> bool:
    """Whether something scheduled every `every` steps (0 = never) or at the end is due now."""
    return (every > 0 and done % every == 0) or done == total
