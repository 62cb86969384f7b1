"""Padded tensors from token sequences, and per-token log-probs of a causal LM.

Sequences are right-padded; `loss_mask[i, t]` refers to the token at position t + 1 (the token
predicted from position t), so masks, log-probs and advantages all have shape [B, L − 1].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from toolrl.algorithms import entropy_from_log_probs
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
    model,
    batch: TokenBatch,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
    entropy_grad: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """log π(x_{t+1} | x_{≤t}) where a masked loss reads it, [B, L − 1] (and the entropy there,
    detached unless `entropy_grad`, for an entropy bonus); 0 where `loss_mask` is 0.

    Logits are divided by the rollout temperature, so these are the log-probs of the
    distribution the tokens were sampled from (before top-p / top-k truncation).

    Only what a masked loss reads is computed:
    - the decoder runs from each row's first loss token on: rows that share a prompt (a GRPO
      group) run its forward once (`_features_after_prompts`), others one forward over the
      columns some row uses (`_features_in_loss_window`);
    - the LM head, the softmax and the entropy run only at the positions whose next token is
      trained, not at prompt, tool-observation or padding positions (`_split_head`).
    """
    keys, length = _prompt_keys(batch), batch.input_ids.shape[1]
    shares = len(set(keys)) < len(keys)
    if shares and not _checkpointed(model):
        features, head, columns = _features_after_prompts(model, batch, keys)
    else:
        features, head, columns = _features_in_loss_window(model, batch)
    # features[b, j] is position columns[b, j]'s output (length − 1: no position).
    read = F.pad(batch.loss_mask, (0, 1)).gather(1, columns).bool()
    rows, at = read.nonzero(as_tuple=True)
    positions = columns[rows, at]
    logits = head(features[rows, at]).float()  # [N, V]
    if temperature != 1.0:  # a pass over [N, V] forward and backward: not for nothing
        logits = logits / temperature
    all_logprobs = torch.log_softmax(logits, dim=-1)
    targets = batch.input_ids[rows, positions + 1]
    logprobs = all_logprobs.gather(-1, targets[:, None]).squeeze(-1)
    place = logprobs.new_zeros(len(batch), length)
    entropy = None
    if with_entropy or entropy_grad:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = entropy_from_log_probs(all_logprobs)
            entropy = place.index_put((rows, positions), entropy)[:, :-1]
    return place.index_put((rows, positions), logprobs)[:, :-1], entropy


# CausalLMs whose logits are exactly lm_head(decoder(…).last_hidden_state): no soft-capping,
# scaling or bias after the head, so the head can run on the positions a loss reads only.
PLAIN_HEAD_MODELS = ("Qwen2ForCausalLM", "Qwen3ForCausalLM", "LlamaForCausalLM", "MistralForCausalLM")  # fmt: skip


def _split_head(model):
    """(decoder, lm_head) of a `PLAIN_HEAD_MODELS` model (LoRA-wrapped too); None for any
    other, whose full forward then gives the logits."""
    peft = getattr(model, "active_peft_config", None)
    if peft is not None and getattr(peft, "is_prompt_learning", False):
        return None  # virtual tokens are prepended by the PEFT wrapper's own forward
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if type(base).__name__ not in PLAIN_HEAD_MODELS:
        return None
    return base.model, base.lm_head


def _forward(
    model, *, keep: int = 0, **inputs
) -> tuple[Tensor, Callable[[Tensor], Tensor], object]:
    """(features, head, output): the decoder's hidden states and the LM head, or the logits of
    the last `keep` positions (all if 0) and the identity for a model `_split_head` declines."""
    split = _split_head(model)
    if split is None:
        out = model(**inputs, logits_to_keep=keep)
        return out.logits, (lambda x: x), out
    decoder, head = split
    out = decoder(**inputs)
    return out.last_hidden_state[:, -keep:], head, out


def _checkpointed(model) -> bool:
    """Activation checkpointing drops the KV cache in training: prompts cannot be shared."""
    return any(getattr(module, "gradient_checkpointing", False) for module in model.modules())


def _features_in_loss_window(model, batch: TokenBatch) -> tuple[Tensor, Callable, Tensor]:
    """One forward over the columns some row uses (trailing padding cut), features from the
    batch's first loss position on. Returns (features, head, columns).

    Right-padded rows (each row's tokens a prefix of it) need no attention mask: causal
    attention never lets a token see the padding after it, and without a mask the attention
    kernel can skip the blocks above the diagonal."""
    width, first = _loss_window(batch)
    ids, mask = batch.input_ids[:, :width], batch.attention_mask[:, :width]
    lengths = mask.sum(-1, keepdim=True)
    prefix = bool((mask == (torch.arange(width, device=mask.device) < lengths)).all())
    features, head, _ = _forward(
        model, input_ids=ids, attention_mask=None if prefix else mask, keep=width - first
    )
    features = features[:, :-1]  # positions first … width − 2 predict tokens first + 1 …
    columns = torch.arange(first, width - 1, device=ids.device).expand(len(batch), -1)
    return features, head, columns


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


def _features_after_prompts(
    model, batch: TokenBatch, keys: list[tuple[int, ...]]
) -> tuple[Tensor, Callable, Tensor]:
    """Each distinct prompt's forward once, its KV cache copied to the rows that share it, and
    the rows' continuations on top: the same features as one forward over the full rows, with
    (n − 1)·|prompt| fewer token positions for n rows sharing a prompt.

    Prompts are left-padded, continuations right-padded; positions are the tokens' positions
    in their rows. Returns (features, head, columns) like `_features_in_loss_window`.
    """
    device, length = batch.input_ids.device, batch.input_ids.shape[1]
    prompt_of = {key: i for i, key in enumerate(dict.fromkeys(keys))}
    rows = torch.tensor([prompt_of[key] for key in keys], device=device)
    prompts = [torch.tensor(key, device=device) for key in prompt_of]
    width = max(len(p) for p in prompts)
    prompt_ids = torch.stack([F.pad(p, (width - len(p), 0)) for p in prompts])
    prompt_mask = torch.stack([F.pad(torch.ones_like(p), (width - len(p), 0)) for p in prompts])
    last, head, prompt_out = _forward(
        model,
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        position_ids=(prompt_mask.cumsum(-1) - 1).clamp(min=0),
        use_cache=True,
        keep=1,
    )
    cache = output_cache(prompt_out)
    for layer in cache.layers:  # index_select: its backward adds deterministically on the CPU,
        layer.keys = layer.keys.index_select(0, rows)  # unlike indexing's (`x[rows]`)
        layer.values = layer.values.index_select(0, rows)
    starts = torch.tensor([len(key) for key in keys], device=device)  # first continuation token
    ends = batch.attention_mask.sum(-1)
    positions = starts[:, None] + torch.arange(int((ends - starts).max()), device=device)
    inside = positions < ends[:, None]
    continuation, _, _ = _forward(
        model,
        input_ids=batch.input_ids.gather(1, positions.clamp(max=length - 1)),
        attention_mask=torch.cat([prompt_mask[rows], inside.long()], dim=1),
        position_ids=positions,
        **{cache_kwarg(model): cache},
    )
    # The prompt's last position predicts continuation token 0; continuation position j, j + 1.
    features = torch.cat([last.index_select(0, rows), continuation[:, :-1]], dim=1)
    columns = torch.where(inside, positions - 1, length - 1)  # position predicting the token
    return features, head, columns


def micro_batches(num_rows: int, size: int) -> list[slice]:
    """Consecutive row slices of at most `size` rows."""
    return [slice(start, min(start + size, num_rows)) for start in range(0, num_rows, size)]


def grouped_micro_batches(batch: TokenBatch, size: int) -> list[Tensor]:
    """Row indices in micro-batches of at most `size` rows, each about as wide as its rows, and
    rows that share a prompt together where that costs no padding.

    A forward costs as much for padding as for tokens, and one long trajectory pads every row
    of its micro-batch to its length. So rows are put in length classes [2^k, 2^(k+1)), longest
    class first, and a micro-batch never spans two classes: padding stays under half of what is
    computed. Inside a class, the rows of a prompt go together (they then share its forward,
    `token_logprobs`), prompts by their longest row, rows longest first.

    Any grouping gives the same per-row log-probs, and the same losses when they are normalised
    by the mini-batch's global counts (`agg_loss`), up to float rounding.
    """
    keys, lengths = _prompt_keys(batch), batch.attention_mask.sum(-1).tolist()
    length_class = [max(n, 1).bit_length() for n in lengths]
    longest: dict[tuple, int] = {}  # (class, prompt) → its longest row
    for key, n, c in zip(keys, lengths, length_class, strict=True):
        longest[c, key] = max(longest.get((c, key), 0), n)
    seen = {key: i for i, key in reversed(list(enumerate(keys)))}  # first row of each prompt

    def rank(row: int) -> tuple[int, int, int, int]:
        c, key = length_class[row], keys[row]
        return -c, -longest[c, key], seen[key], -lengths[row]

    parts: list[list[int]] = []
    for row in sorted(range(len(batch)), key=rank):
        if not parts or len(parts[-1]) == size or length_class[parts[-1][0]] != length_class[row]:
            parts.append([])
        parts[-1].append(row)
    return [torch.tensor(part, dtype=torch.long) for part in parts]
