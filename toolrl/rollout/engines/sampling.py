"""Sampling one token per row from next-token logits, reproducibly per request.

Gumbel-max: argmax(log p + g) with g standard Gumbel noise is exactly a sample from p, and
restricting the argmax to the tokens top-k / top-p keep is exactly a sample from the truncated
distribution. Each request draws its noise from its own seeded generator (`GumbelNoise`), so its
tokens do not depend on what else shares its batch.
"""

from __future__ import annotations

import torch

from toolrl.rollout.engines.base import GenerationRequest


class GumbelNoise:
    """One request's sampling noise: standard Gumbel draws −log(−log u), u ~ U(0, 1), from its
    own generator seeded with the request's seed.

    Draws are made for a block of steps at once (one generator call and one transform per block
    instead of per step); a block is at most `BLOCK_BYTES`, so a large vocabulary gets one step
    a block. The stream depends only on the seed, not on the batch the request is decoded in.
    """

    BLOCK_BYTES = 1 << 18
    MAX_STEPS = 32

    def __init__(self, seed: int):
        self.generator = torch.Generator().manual_seed(seed)
        self.block: torch.Tensor | None = None
        self.used = 0

    def next(self, vocab: int) -> torch.Tensor:
        """The next step's noise over `vocab` tokens, [vocab] (on the CPU)."""
        if self.block is None or self.used == len(self.block):
            steps = max(1, min(self.MAX_STEPS, self.BLOCK_BYTES // (4 * vocab)))
            uniform = torch.rand(steps, vocab, generator=self.generator)
            self.block = uniform.clamp_(1e-20, 1.0 - 1e-7).log_().neg_().log_().neg_()
            self.used = 0
        self.used += 1
        return self.block[self.used - 1]


def sample(
    logits: torch.Tensor, requests: list[GenerationRequest], noises: list[GumbelNoise]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample one token per row; return it and its log-prob under log_softmax(logits / T).

    Truncation (top-k, then top-p over the temperature-scaled distribution) only restricts where
    the sample may fall; the reported log-prob is of the untruncated scaled distribution, which
    is what the trainer recomputes.
    """
    temperature = torch.tensor([max(r.temperature, 1e-6) for r in requests], device=logits.device)
    logprobs = torch.log_softmax(logits / temperature[:, None], dim=-1)
    vocab = logits.shape[-1]
    gumbel = torch.stack([noise.next(vocab) for noise in noises]).to(logits.device)
    score = logprobs + gumbel
    if any(r.temperature == 0 for r in requests):
        greedy = torch.tensor([r.temperature == 0 for r in requests], device=logits.device)
        score = torch.where(greedy[:, None], logprobs, score)
    allowed = truncation_mask(logprobs, requests)
    if allowed is not None:
        score = score.masked_fill(~allowed, float("-inf"))
    chosen = score.argmax(dim=-1)
    return chosen, logprobs.gather(-1, chosen[:, None]).squeeze(-1)


def truncation_mask(
    logprobs: torch.Tensor, requests: list[GenerationRequest]
) -> torch.Tensor | None:
    """True where a token survives top-k and top-p (the most likely token always survives);
    None when no request truncates."""
    if all(r.top_k <= 0 and r.top_p >= 1.0 for r in requests):
        return None
    allowed = torch.ones_like(logprobs, dtype=torch.bool)
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


def sampling_entropy(logits: torch.Tensor, temperatures: torch.Tensor) -> torch.Tensor:
    """H = −Σ_v p(v) log p(v) of each row's sampling distribution p = softmax(logits / T), in
    nats, [B] from logits [B, V] and T [B] (T = 0, greedy, counts as 1e-6, as in `sample`).

    Untruncated like the log-probs `sample` reports: top-p / top-k only restrict where the
    sample may fall. ARPO and AEPO branch on it (toolrl/rollout/branching.py)."""
    logprobs = torch.log_softmax(logits.float() / temperatures.clamp(min=1e-6)[:, None], dim=-1)
    return -(logprobs.exp() * logprobs).nan_to_num().sum(-1)
