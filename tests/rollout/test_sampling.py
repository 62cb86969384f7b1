"""The HF engine's sampler: Gumbel-max draws from softmax(logits / T), truncated by top-k / top-p,
with per-request noise streams that depend on the seed alone."""

import math

import pytest
import torch

from toolrl.rollout.engines.base import GenerationRequest
from toolrl.rollout.engines.sampling import GumbelNoise, sample, sampling_entropy

LOGITS = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0])


def frequencies(request: GenerationRequest, draws: int = 20_000) -> torch.Tensor:
    """How often each token is chosen over `draws` rows that each have their own seed."""
    logits = LOGITS.expand(draws, -1)
    noises = [GumbelNoise(seed) for seed in range(draws)]
    chosen, _ = sample(logits, [request] * draws, noises)
    return torch.bincount(chosen, minlength=len(LOGITS)).float() / draws


def assert_close_in_distribution(got: torch.Tensor, want: torch.Tensor, draws: int = 20_000):
    # 5 binomial standard deviations per token (and a floor for tokens of probability ~0).
    tolerance = 5 * (want * (1 - want) / draws).sqrt() + 1e-3
    assert ((got - want).abs() <= tolerance).all(), (got, want)


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_draws_follow_the_tempered_softmax(temperature):
    want = torch.softmax(LOGITS / temperature, dim=-1)
    got = frequencies(GenerationRequest([1], 1, temperature=temperature))
    assert_close_in_distribution(got, want)


def test_top_k_and_top_p_renormalise_over_the_tokens_they_keep():
    probs = torch.softmax(LOGITS, dim=-1)  # ≈ .57 .21 .13 .08 .03 .004
    top2 = torch.zeros_like(probs)
    top2[:2] = probs[:2] / probs[:2].sum()
    assert_close_in_distribution(frequencies(GenerationRequest([1], 1, top_k=2)), top2)
    # top-p 0.8: tokens are kept while the mass before them is < 0.8, i.e. the first three.
    top3 = torch.zeros_like(probs)
    top3[:3] = probs[:3] / probs[:3].sum()
    assert_close_in_distribution(frequencies(GenerationRequest([1], 1, top_p=0.8)), top3)


def test_reported_log_prob_is_of_the_untruncated_tempered_distribution():
    requests = [
        GenerationRequest([1], 1, temperature=0.7, top_k=2),
        GenerationRequest([1], 1, temperature=0.0),
    ]
    logits = LOGITS.expand(2, -1)
    chosen, logprobs = sample(logits, requests, [GumbelNoise(0), GumbelNoise(1)])
    assert chosen[1] == 0  # greedy: the argmax, whatever the noise
    want = torch.log_softmax(LOGITS / 0.7, dim=-1)[chosen[0]]
    assert logprobs[0].item() == pytest.approx(want.item(), abs=1e-6)


def test_a_noise_stream_depends_on_the_seed_only():
    vocab = 50
    a, b, c = GumbelNoise(7), GumbelNoise(7), GumbelNoise(8)
    steps = 3 * GumbelNoise.MAX_STEPS + 5  # across block boundaries
    stream_a = torch.stack([a.next(vocab) for _ in range(steps)])
    stream_b = torch.stack([b.next(vocab) for _ in range(steps)])
    assert torch.equal(stream_a, stream_b)
    assert not torch.equal(stream_a[0], c.next(vocab))
    assert len({tuple(row.tolist()) for row in stream_a}) == steps  # no step repeats another


def test_noise_is_standard_gumbel_and_a_large_vocabulary_draws_one_step_a_block():
    draws = GumbelNoise(0).next(200_000)  # 800 kB a step: more than BLOCK_BYTES
    assert draws.shape == (200_000,) and torch.isfinite(draws).all()
    assert draws.mean().item() == pytest.approx(0.5772, abs=0.01)  # Euler–Mascheroni
    assert draws.var().item() == pytest.approx(math.pi**2 / 6, abs=0.03)


def test_sampling_entropy_by_hand():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [math.log(3.0), 0.0, -1e9, -1e9]])
    # uniform over 4: ln 4; (3/4, 1/4): −(0.75 ln 0.75 + 0.25 ln 0.25) = 0.5623351
    h = sampling_entropy(logits, torch.tensor([1.0, 1.0]))
    assert h.tolist() == pytest.approx([math.log(4), 0.5623351], abs=1e-6)
    # T = 2 flattens (√3 : 1): p = 0.6339746, 0.3660254 → 0.6568064
    assert sampling_entropy(logits[1:], torch.tensor([2.0])).item() == pytest.approx(0.6568064)
    assert sampling_entropy(logits[1:], torch.tensor([0.0])).item() == pytest.approx(0.0)
