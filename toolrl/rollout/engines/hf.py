"""Batched sampling with a KV cache through a transformers causal LM (CPU or GPU).

A hand-written decoding loop around the model's forward instead of `model.generate`: it returns
exactly what the rollout needs (sampled ids, their log-probs, the finish reason), drops finished
rows from the batch as it goes, and costs less per step than `generate` on small models
(DESIGN.md: 2.4x faster at 1M parameters).

Sampling is reproducible per request: each request's noise comes from its own seeded generator
(Gumbel-max over the truncated distribution, which is exactly sampling from it), so a request's
tokens do not depend on what else shares its batch.
"""

from __future__ import annotations

import torch

from toolrl.rollout.engines.base import GenerationRequest, GenerationResult


class HFEngine:
    """An `Engine` over a loaded transformers model."""

    def __init__(self, model, *, pad_token_id: int = 0, max_batch_size: int = 64, seed: int = 0):
        self.model = model
        self.pad_token_id = pad_token_id
        self.max_batch_size = max_batch_size
        self._seeds = torch.Generator().manual_seed(seed)

    @classmethod
    def from_path(
        cls, path: str, *, device: str = "cpu", dtype: str = "float32", **kwargs
    ) -> HFEngine:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device)
        tokenizer = AutoTokenizer.from_pretrained(path)
        return cls(model.eval(), pad_token_id=tokenizer.pad_token_id or 0, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        results: list[GenerationResult] = []
        for start in range(0, len(requests), self.max_batch_size):
            results += self._generate_batch(requests[start : start + self.max_batch_size])
        return results

    @torch.no_grad()
    def _generate_batch(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        from transformers import DynamicCache

        device = self.device
        generators = [
            torch.Generator().manual_seed(
                r.seed
                if r.seed is not None
                else int(torch.randint(2**62, (1,), generator=self._seeds))
            )
            for r in requests
        ]
        input_ids, attention_mask = self._left_pad([r.prompt_ids for r in requests], device)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        logits = self._forward(input_ids, attention_mask, position_ids, cache)
        next_position = position_ids[:, -1] + 1

        tokens: list[list[int]] = [[] for _ in requests]
        logprobs: list[list[float]] = [[] for _ in requests]
        finish: list[str | None] = [None] * len(requests)
        active = list(range(len(requests)))  # request index of each row still in the batch
        while active:
            chosen, chosen_logprobs = sample(
                logits, [requests[i] for i in active], [generators[i] for i in active]
            )
            keep = []
            for row, i in enumerate(active):
                token = int(chosen[row])
                tokens[i].append(token)
                logprobs[i].append(float(chosen_logprobs[row]))
                if token in requests[i].stop_token_ids:
                    finish[i] = "stop"
                elif len(tokens[i]) >= requests[i].max_new_tokens:
                    finish[i] = "length"
                else:
                    keep.append(row)
            if not keep:
                break
            if len(keep) < len(active):  # drop finished rows from the batch and the cache
                rows = torch.tensor(keep, device=device)
                cache.batch_select_indices(rows)
                attention_mask, next_position, chosen = (
                    attention_mask[rows],
                    next_position[rows],
                    chosen[rows],
                )
                active = [active[row] for row in keep]
            attention_mask = torch.cat(
                [attention_mask, attention_mask.new_ones(len(active), 1)], dim=1
            )
            logits = self._forward(
                chosen[:, None].to(device), attention_mask, next_position[:, None], cache
            )
            next_position = next_position + 1
        return [
            GenerationResult(t, lp, f) for t, lp, f in zip(tokens, logprobs, finish, strict=True)
        ]

    def _forward(self, input_ids, attention_mask, position_ids, cache) -> torch.Tensor:
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        return out.logits[:, -1].float()

    def _left_pad(self, sequences: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
        if any(not s for s in sequences):
            raise ValueError("every generation request needs at least one prompt token")
        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for row, s in enumerate(sequences):
            ids[row, width - len(s) :] = torch.tensor(s)
            mask[row, width - len(s) :] = 1
        return ids.to(device), mask.to(device)


def sample(
    logits: torch.Tensor, requests: list[GenerationRequest], generators: list[torch.Generator]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row; return it and its log-prob under log_softmax(logits / T).

    Truncation (top-k, then top-p over the temperature-scaled distribution) only restricts where
    the sample may fall; the reported log-prob is of the untruncated scaled distribution, which
    is what the trainer recomputes.
    """
    temperature = torch.tensor([max(r.temperature, 1e-6) for r in requests], device=logits.device)
    scaled = logits / temperature[:, None]
    logprobs = torch.log_softmax(scaled, dim=-1)
    allowed = truncation_mask(logprobs, requests)
    noise = torch.stack([torch.rand(logits.shape[-1], generator=g) for g in generators]).to(
        logits.device
    )
    gumbel = -torch.log(-torch.log(noise.clamp(1e-20, 1.0 - 1e-7)))
    greedy = torch.tensor([r.temperature == 0 for r in requests], device=logits.device)
    score = torch.where(greedy[:, None], logprobs, logprobs + gumbel).masked_fill(
        ~allowed, float("-inf")
    )
    chosen = score.argmax(dim=-1)
    return chosen, logprobs.gather(-1, chosen[:, None]).squeeze(-1)


def truncation_mask(logprobs: torch.Tensor, requests: list[GenerationRequest]) -> torch.Tensor:
    """True where a token survives top-k and top-p (the most likely token always survives)."""
    allowed = torch.ones_like(logprobs, dtype=torch.bool)
    if all(r.top_k <= 0 and r.top_p >= 1.0 for r in requests):
        return allowed
    sorted_lp, order = logprobs.sort(dim=-1, descending=True)
    ranks = torch.arange(logprobs.shape[-1], device=logprobs.device)
    top_k = torch.tensor(
        [r.top_k if r.top_k > 0 else logprobs.shape[-1] for r in requests], device=logprobs.device
    )
    top_p = torch.tensor([r.top_p for r in requests], device=logprobs.device)
    mass_before = sorted_lp.exp().cumsum(-1) - sorted_lp.exp()
    keep_sorted = (ranks[None, :] < top_k[:, None]) & (mass_before < top_p[:, None])
    keep_sorted[:, 0] = True
    return allowed.scatter(-1, order, keep_sorted)
