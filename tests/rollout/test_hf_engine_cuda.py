"""The HF engine on a CUDA GPU (`gpu`-marked: skipped without one).

The CPU tests cover the engine's logic; these check what only a GPU can break: tensors left on
the wrong device, and the lean decoding forward (fast_decode) against transformers' own forward
under CUDA kernels.
"""

import pytest
import torch

from toolrl.rollout.engines.base import GenerationRequest
from toolrl.rollout.engines.hf import HFEngine

pytestmark = pytest.mark.gpu

REQUESTS = [
    GenerationRequest([1, 2, 3], 24, temperature=1.0, seed=5),
    GenerationRequest([4, 5], 16, temperature=0.7, top_p=0.8, top_k=50, seed=6),
    GenerationRequest([1, 2, 3], 20, temperature=0.0),
    GenerationRequest([7, 8, 9, 10, 11], 24, temperature=1.2, seed=7),
]


def full_forward_logprobs(model, request, result):
    """log_softmax(logits / T) of the sampled tokens, recomputed by one forward of the whole
    sequence: the quantity the engine promises to report."""
    ids = torch.tensor([request.prompt_ids + result.token_ids], device=model.device)
    with torch.no_grad():
        logits = model(ids).logits[0, len(request.prompt_ids) - 1 : -1].float()
    logprobs = torch.log_softmax(logits / max(request.temperature, 1e-6), -1)
    return logprobs.gather(-1, torch.tensor(result.token_ids, device=model.device)[:, None])[:, 0]


@pytest.mark.parametrize("fast_decode", [True, False], ids=["fast_decode", "hf_forward"])
def test_cuda_engine_reports_the_log_probs_of_a_full_forward(tiny_dir, fast_decode):
    torch.backends.cuda.matmul.allow_tf32 = False
    engine = HFEngine.from_path(str(tiny_dir), device="cuda", seed=1, fast_decode=fast_decode)
    assert engine.device.type == "cuda" and (engine.fast is not None) == fast_decode
    results = engine.generate(REQUESTS)
    assert [len(r.token_ids) for r in results] == [r.max_new_tokens for r in REQUESTS]
    for request, result in zip(REQUESTS, results, strict=True):
        expected = full_forward_logprobs(engine.model, request, result).cpu()
        torch.testing.assert_close(torch.tensor(result.logprobs), expected, atol=1e-4, rtol=1e-4)
    # Seeded requests are reproducible, also when the prompt is served from the prefix store.
    again = engine.generate(REQUESTS)
    assert [r.token_ids for r in again] == [r.token_ids for r in results]


def test_cuda_and_cpu_engines_sample_the_same_tokens(tiny_dir):
    """The sampling noise comes from per-request CPU generators, so a seed means the same
    tokens on either device (up to float ties, which fp32 on this tiny model does not hit)."""
    on_gpu = HFEngine.from_path(str(tiny_dir), device="cuda", seed=1).generate(REQUESTS)
    on_cpu = HFEngine.from_path(str(tiny_dir), device="cpu", seed=1).generate(REQUESTS)
    assert [r.token_ids for r in on_gpu] == [r.token_ids for r in on_cpu]
    for a, b in zip(on_gpu, on_cpu, strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)
