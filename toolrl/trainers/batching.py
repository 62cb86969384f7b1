"""Padded tensors from token sequences, and per-token log-probs of a causal LM.

Sequences are right-padded; `loss_mask[i, t]` refers to the token at position t + 1 (the token
predicted from position t), so masks, log-probs and advantages all have shape [B, L − 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from toolrl.algorithms import entropy_from_logits
from toolrl.models.compat import cache_kwarg, output_cache


@dataclass
class TokenBatch:
    """Right-padded sequences and per-position targets (shape [B, L − 1])."""

    input_ids: Tensor  # [B, L]
    attention_mask: Tensor  # [B, L]
    loss_mask: Tensor  # [B, L − 1]; 1 where the next token is trained
    values: Tensor  # [B, L − 1]; per-token values aligned with loss_mask (e.g. rollout log-probs)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, rows: slice | Tensor) -> TokenBatch:
        return TokenBatch(
            self.input_ids[rows], self.attention_mask[rows], self.loss_mask[rows], self.values[rows]
        )

    def to(self, device: torch.device | str) -> TokenBatch:
        return TokenBatch(
            self.input_ids.to(device),
            self.attention_mask.to(device),
            self.loss_mask.to(device),
            self.values.to(device),
        )


def device_of(model) -> torch.device:
    """Where the model's parameters are: batches are built on the CPU and moved there."""
    return next(model.parameters()).device


def pad_sequences(
    sequences: list[list[int]],
    masks: list[list[int]],
    values: list[list[float]] | None = None,
    pad_token_id: int = 0,
) -> TokenBatch:
    """Right-pad token lists; `masks[i][t]` and `values[i][t]` belong to token t of sequence i."""
    width = max(len(s) for s in sequences)
    batch = len(sequences)
    ids = torch.full((batch, width), pad_token_id, dtype=torch.long)
    attention = torch.zeros((batch, width), dtype=torch.long)
    mask = torch.zeros((batch, width), dtype=torch.float32)
    vals = torch.zeros((batch, width), dtype=torch.float32)
    for i, seq in enumerate(sequences):
        ids[i, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention[i, : len(seq)] = 1
        mask[i, : len(seq)] = torch.tensor(masks[i], dtype=torch.float32)
        if values is not None:
            vals[i, : len(seq)] = torch.tensor(values[i], dtype=torch.float32)
    # Token t is predicted at position t − 1: shift targets left by one.
    return TokenBatch(ids, attention, mask[:, 1:], vals[:, 1:])


def token_logprobs(
    model, batch: TokenBatch, *, temperature: float = 1.0, with_entropy: bool = False
) -> tuple[Tensor, Tensor | None]:
    """log π(x_{t+1} | x_{≤t}) where a masked loss can read it, [B, L − 1] (and the entropy
    there, detached).

    Logits are divided by the rollout temperature, so these are the log-probs of the
    distribution the tokens were sampled from (before top-p / top-k truncation).

    Only what a masked loss reads is computed, from each row's first `loss_mask` token on;
    positions before it (the prompt) and after the row's end are returned as 0:
    - rows that share a prompt (a GRPO group) run its forward once (`_logits_after_prompts`);
    - otherwise one forward over the columns some row uses, with logits from the batch's first
      loss position on (`_logits_in_loss_window`).
    """
    keys, length = _prompt_keys(batch), batch.input_ids.shape[1]
    shares = len(set(keys)) < len(keys)
    if shares and not _checkpointed(model):
        logits, targets, columns = _logits_after_prompts(model, batch, keys)
    else:
        logits, targets, columns = _logits_in_loss_window(model, batch)
    logits = logits.float() / temperature
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = _place(entropy_from_logits(logits.detach()), columns, length)
    return _place(logprobs, columns, length), entropy


def _checkpointed(model) -> bool:
    """Activation checkpointing drops the KV cache in training: prompts cannot be shared."""
    return any(getattr(module, "gradient_checkpointing", False) for module in model.modules())


def _place(values: Tensor, columns: Tensor, length: int) -> Tensor:
    """[B, n] values into their `columns` of a [B, L − 1] zero tensor; column L − 1, dropped,
    receives what belongs nowhere (padding)."""
    return values.new_zeros(values.shape[0], length).scatter(1, columns, values)[:, :-1]


def _logits_in_loss_window(model, batch: TokenBatch) -> tuple[Tensor, Tensor, Tensor]:
    """One forward over the columns some row uses (trailing padding cut); logits from the
    batch's first loss position on (`logits_to_keep`). Returns (logits, targets, columns)."""
    width, first = _loss_window(batch)
    logits = model(
        input_ids=batch.input_ids[:, :width],
        attention_mask=batch.attention_mask[:, :width],
        logits_to_keep=width - first,
    ).logits[:, :-1]  # positions first … width − 2 predict tokens first + 1 … width − 1
    columns = torch.arange(first, width - 1, device=logits.device).expand(len(batch), -1)
    return logits, batch.input_ids[:, first + 1 : width], columns


def _loss_window(batch: TokenBatch) -> tuple[int, int]:
    """(width, first): columns some row attends to, and the first position with a loss token."""
    used = batch.attention_mask.any(0).nonzero()
    width = int(used.max()) + 1 if len(used) else batch.input_ids.shape[1]
    counted = batch.loss_mask.any(0).nonzero()
    first = int(counted.min()) if len(counted) else 0
    return max(width, first + 2), first


def _prompt_keys(batch: TokenBatch) -> list[tuple[int, ...]]:
    """Each row's prompt: its tokens before its first loss token (the first token if none)."""
    prompt_lengths = (batch.loss_mask.argmax(-1) + 1).tolist()
    return [tuple(row[:n]) for row, n in zip(batch.input_ids.tolist(), prompt_lengths, strict=True)]


def _logits_after_prompts(
    model, batch: TokenBatch, keys: list[tuple[int, ...]]
) -> tuple[Tensor, Tensor, Tensor]:
    """Each distinct prompt's forward once, its KV cache copied to the rows that share it, and
    the rows' continuations on top: the same logits as one forward over the full rows, with
    (n − 1)·|prompt| fewer token positions for n rows sharing a prompt.

    Prompts are left-padded, continuations right-padded; positions are the tokens' positions
    in their rows. Returns (logits, targets, columns) like `_logits_in_loss_window`.
    """
    device, length = batch.input_ids.device, batch.input_ids.shape[1]
    prompt_of = {key: i for i, key in enumerate(dict.fromkeys(keys))}
    rows = torch.tensor([prompt_of[key] for key in keys], device=device)
    prompts = [torch.tensor(key, device=device) for key in prompt_of]
    width = max(len(p) for p in prompts)
    prompt_ids = torch.stack([F.pad(p, (width - len(p), 0)) for p in prompts])
    prompt_mask = torch.stack([F.pad(torch.ones_like(p), (width - len(p), 0)) for p in prompts])
    prompt_out = model(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        position_ids=(prompt_mask.cumsum(-1) - 1).clamp(min=0),
        use_cache=True,
        logits_to_keep=1,
    )
    cache = output_cache(prompt_out)
    for layer in cache.layers:  # index_select: its backward adds deterministically on the CPU,
        layer.keys = layer.keys.index_select(0, rows)  # unlike indexing's (`x[rows]`)
        layer.values = layer.values.index_select(0, rows)
    starts = torch.tensor([len(key) for key in keys], device=device)  # first continuation token
    ends = batch.attention_mask.sum(-1)
    positions = starts[:, None] + torch.arange(int((ends - starts).max()), device=device)
    inside = positions < ends[:, None]
    targets = batch.input_ids.gather(1, positions.clamp(max=length - 1))
    out = model(
        input_ids=targets,
        attention_mask=torch.cat([prompt_mask[rows], inside.long()], dim=1),
        position_ids=positions,
        **{cache_kwarg(model): cache},
    )
    # The prompt's last position predicts continuation token 0; continuation position j, j + 1.
    logits = torch.cat([prompt_out.logits.index_select(0, rows), out.logits[:, :-1]], dim=1)
    columns = torch.where(inside, positions - 1, length - 1)  # position predicting the token
    return logits, targets, columns


def micro_batches(num_rows: int, size: int) -> list[slice]:
    """Consecutive row slices of at most `size` rows."""
    return [slice(start, min(start + size, num_rows)) for start in range(0, num_rows, size)]


def grouped_micro_batches(batch: TokenBatch, size: int) -> list[Tensor]:
    """Row indices in micro-batches of at most `size`: rows that share a prompt together (their
    prompt's forward is then shared), and longest rows first (less padding to compute).

    Any grouping gives the same per-row log-probs, and the same losses when they are normalised
    by the mini-batch's global counts (`agg_loss`), up to float rounding.
    """
    keys, lengths = _prompt_keys(batch), batch.attention_mask.sum(-1).tolist()
    longest: dict[tuple[int, ...], int] = {}
    for key, n in zip(keys, lengths, strict=True):
        longest[key] = max(longest.get(key, 0), n)
    seen = {key: i for i, key in reversed(list(enumerate(keys)))}  # first row of each prompt

    def rank(row: int) -> tuple[int, int, int]:
        return -longest[keys[row]], seen[keys[row]], -lengths[row]

    order = sorted(range(len(batch)), key=rank)
    return list(torch.tensor(order, dtype=torch.long).split(size))
