"""Cold-start SFT on multi-turn tool-use conversations (`messages` + `tools` rows).

Each conversation is rendered by `chat.render_with_mask`, the renderer the rollout's masks are
checked against, so SFT trains exactly the tokens an RL rollout would sample: every assistant
turn (tool calls included) up to and including its end-of-turn token; system, user and tool
text never. Conversations longer than `data.max_length` are cut on the right and counted.

A step is `data.train_batch_size` conversations, accumulated over micro-batches of
`trainer.micro_batch_size` with the step's token count as the normaliser, so the loss is the
token-mean over the whole step exactly. Batches are length-bucketed to waste little on padding;
their order is a function of (seed, step), so resuming needs no saved iterator.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import torch

from toolrl.algorithms import agg_loss
from toolrl.config import Config
from toolrl.data.io import DataError
from toolrl.data.sft import Example, load_sft_examples
from toolrl.trainers.batching import device_of, micro_batches, pad_sequences, token_logprobs
from toolrl.trainers.checkpoint import latest_checkpoint, load_trainer_state, save_checkpoint
from toolrl.trainers.model_io import load_policy, resolve_model_path
from toolrl.trainers.optim import build_optimizer, build_scheduler, due
from toolrl.trainers.tracking import MetricsLogger


def step_batches(
    examples: list[Example], batch_size: int, seed: int, epoch: int
) -> list[list[int]]:
    """One epoch's batches: shuffled, then sorted by length inside windows of 50 batches."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(examples)))
    rng.shuffle(order)
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: len(examples[i].ids))
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def sft_loss(
    model, examples: list[Example], micro_batch_size: int, pad_token_id: int, *, backward: bool
) -> tuple[float, int]:
    """Token-mean NLL of the assistant tokens of `examples` (accumulating gradients if asked)."""
    batch = pad_sequences(
        [e.ids for e in examples], [e.mask for e in examples], pad_token_id=pad_token_id
    ).to(device_of(model))
    num_tokens = batch.loss_mask.sum()
    total = 0.0
    for micro in micro_batches(len(batch), micro_batch_size):
        part = batch.select(micro)
        logprobs, _ = token_logprobs(model, part)
        loss = agg_loss(-logprobs, part.loss_mask, "token-mean", global_num_tokens=num_tokens)
        if backward:
            loss.backward()
        total += float(loss.detach())
    return total, int(num_tokens)


def sft_step(
    model, optimizer, scheduler, examples: list[Example], trainer_cfg, pad_token_id: int
) -> dict[str, float]:
    """One optimizer step on `examples`: token-mean NLL, gradient clip, a finite update."""
    began = time.perf_counter()
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss, tokens = sft_loss(
        model, examples, trainer_cfg.micro_batch_size, pad_token_id, backward=True
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    grad_norm = torch.nn.utils.clip_grad_norm_(trainable, trainer_cfg.grad_clip)
    if torch.isfinite(grad_norm):  # never apply a non-finite update
        optimizer.step()
    metrics = {
        "train/loss": loss,
        "train/lr": scheduler.get_last_lr()[0],
        "train/grad_norm": float(grad_norm),
        "train/tokens": tokens,
        "timing/step": time.perf_counter() - began,
    }
    scheduler.step()
    return metrics


def run_sft(config: Config, *, resume: bool = False, device: str = "cpu") -> Path:
    """Train (or resume) an SFT run; returns its run directory with checkpoints and metrics."""
    torch.manual_seed(config.trainer.seed)
    t, run_dir = config.trainer, Path(config.trainer.output_dir) / config.trainer.run_name
    checkpoint = latest_checkpoint(run_dir) if resume else None
    model_path = checkpoint or resolve_model_path(config.model.path, run_dir)
    model, tokenizer = load_policy(model_path, config.model, device=device)
    train = load_sft_examples(config.data.train_files, tokenizer, config.data.max_length)
    val = (
        load_sft_examples(config.data.val_files, tokenizer, config.data.max_length)
        if config.data.val_files
        else None
    )
    print(f"sft: {len(train.examples)} conversations ({train.truncated} truncated at {config.data.max_length} tokens, {train.dropped} with nothing to train dropped)", file=sys.stderr)  # fmt: skip
    if not train.examples:
        raise DataError("no training conversation left to train on")
    schedule = [b for e in range(t.epochs) for b in step_batches(train.examples, config.data.train_batch_size, t.seed, e)]  # fmt: skip
    total = min(t.total_steps, len(schedule)) if t.total_steps else len(schedule)
    optimizer = build_optimizer(model.parameters(), t)
    scheduler = build_scheduler(optimizer, t, total)
    start = load_trainer_state(checkpoint, optimizer, scheduler)["step"] if checkpoint else 0
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config.to_yaml())
    logger = MetricsLogger(run_dir, t.loggers, config.to_dict(), resume_step=start)
    pad = tokenizer.pad_token_id or 0
    from rich.progress import Progress

    with Progress(disable="console" not in t.loggers) as progress:
        task = progress.add_task("sft", total=total, completed=start)
        for step in range(start, total):
            metrics = sft_step(
                model, optimizer, scheduler, [train.examples[i] for i in schedule[step]], t, pad
            )
            done = step + 1
            if val is not None and due(t.val_every, done, total):
                metrics["val/loss"] = validation_loss(model, val.examples, config.data.train_batch_size, t.micro_batch_size, pad)  # fmt: skip
            logger.log(done, metrics)
            if due(t.save_every, done, total):
                save_checkpoint(run_dir, done, model, tokenizer, optimizer, scheduler, {})
            progress.update(
                task, completed=done, description=f"sft loss {metrics['train/loss']:.3f}"
            )
    logger.close()
    return run_dir


@torch.no_grad()
def validation_loss(
    model, examples: list[Example], batch_size: int, micro_batch_size: int, pad_token_id: int
) -> float:
    """Token-mean NLL of the assistant tokens over the whole validation set."""
    model.eval()
    weighted, tokens = 0.0, 0
    for start in range(0, len(examples), batch_size):
        loss, n = sft_loss(
            model,
            examples[start : start + batch_size],
            micro_batch_size,
            pad_token_id,
            backward=False,
        )
        weighted, tokens = weighted + loss * n, tokens + n
    return weighted / max(tokens, 1)
