"""Padded tensors from token sequences, and per-token log-probs of a causal LM.

Sequences are right-padded; `loss_mask[i, t]` refers to the token at position t + 1 (the token
predicted from position t), so masks, log-probs and advantages all have shape [B, L − 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from toolrl.algorithms import entropy_from_logits


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
    """log π(x_{t+1} | x_{≤t}) for every position, [B, L − 1] (and the entropy there, detached).

    Logits are divided by the rollout temperature, so these are the log-probs of the
    distribution the tokens were sampled from (before top-p / top-k truncation).
    """
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    logits = logits.float() / temperature
    targets = batch.input_ids[:, 1:]
    logprobs = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = None
    if with_entropy:
        with torch.no_grad():
            entropy = entropy_from_logits(logits.detach())
    return logprobs, entropy


def micro_batches(num_rows: int, size: int) -> list[slice]:
    """Consecutive row slices of at most `size` rows."""
    return [slice(start, min(start + size, num_rows)) for start in range(0, num_rows, size)]
