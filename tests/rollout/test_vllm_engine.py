"""The vLLM engine's translation of requests and outputs (a fake LLM), and the real engine on
a GPU (`gpu`-marked: skipped without CUDA or without vllm)."""

import os
from dataclasses import dataclass, field

import pytest
import torch

from toolrl.rollout.engines.base import GenerationRequest
from toolrl.rollout.engines.vllm import VLLMEngine
from toolrl.rollout.engines.vllm_weights import weight_buckets


@dataclass
class Logprob:
    logprob: float


@dataclass
class Completion:
    token_ids: list
    logprobs: list
    finish_reason: str
    stop_reason: object = None


@dataclass
class Output:
    outputs: list


@dataclass
class FakeLLM:
    """Records what the engine asks of vLLM; answers with scripted completions."""

    completions: list
    calls: list = field(default_factory=list)

    def generate(self, prompts, sampling_params, use_tqdm):
        self.calls.append(("generate", prompts, sampling_params))
        return [Output([c]) for c in self.completions[: len(prompts)]]

    def collective_rpc(self, method, args=()):
        self.calls.append(("rpc", method, args))

    def reset_prefix_cache(self):
        self.calls.append(("reset_prefix_cache",))

    def sleep(self, level):
        self.calls.append(("sleep", level))

    def wake_up(self, tags=None):
        self.calls.append(("wake_up", tags))


def engine_with(*completions):
    return VLLMEngine(FakeLLM(list(completions)), sampling_params_cls=dict, tokens_prompt_cls=dict)


def steps(*pairs):
    return [{token: Logprob(lp)} for token, lp in pairs]


def test_requests_become_token_prompts_and_per_request_sampling_params():
    engine = engine_with(
        Completion([5, 9], steps((5, -0.5), (9, -1.5)), "stop", 9),
        Completion([4, 4, 4], steps((4, -0.1), (4, -0.2), (4, -0.3)), "length"),
    )
    requests = [
        GenerationRequest([1, 2], 8, temperature=0.7, stop_token_ids=(9,), seed=11),
        GenerationRequest([3], 3, top_p=0.6, top_k=20, seed=12),
    ]
    results = engine.generate(requests)
    _, prompts, params = engine.llm.calls[0]
    assert prompts == [{"prompt_token_ids": [1, 2]}, {"prompt_token_ids": [3]}]
    assert params[0]["temperature"] == 0.7 and params[0]["seed"] == 11
    assert params[0]["stop_token_ids"] == [9] and params[0]["max_tokens"] == 8
    assert params[0]["logprobs"] == 0 and params[0]["ignore_eos"] is True
    assert (params[1]["top_p"], params[1]["top_k"], params[1]["seed"]) == (0.6, 20, 12)
    assert (results[0].token_ids, results[0].logprobs, results[0].finish_reason) == (
        [5, 9],
        [-0.5, -1.5],
        "stop",
    )
    assert results[1].finish_reason == "length" and results[1].logprobs == [-0.1, -0.2, -0.3]
    assert VLLMEngine.exact_logprobs(requests[0]) and not VLLMEngine.exact_logprobs(requests[1])


def test_a_stop_token_vllm_left_out_is_put_back():
    engine = engine_with(Completion([5], steps((5, -0.5), (9, -0.25)), "stop", 9))
    (result,) = engine.generate([GenerationRequest([1], 4, stop_token_ids=(9,))])
    assert result.token_ids == [5, 9] and result.logprobs == [-0.5, -0.25]


def test_missing_logprobs_and_odd_finish_reasons_fail_clearly():
    with pytest.raises(RuntimeError, match="log-probs"):
        engine_with(Completion([5, 6], steps((5, -0.5)), "length")).generate(
            [GenerationRequest([1], 2)]
        )
    with pytest.raises(RuntimeError, match="abort"):
        engine_with(Completion([5], steps((5, -0.5)), "abort")).generate(
            [GenerationRequest([1], 2)]
        )
    with pytest.raises(ValueError, match="request 0 has no prompt tokens"):
        engine_with().generate([GenerationRequest([], 2)])


def test_weights_go_in_buckets_then_the_prefix_cache_is_reset():
    tensors = [(f"w{i}", torch.zeros(256)) for i in range(5)]  # 1 KiB each
    assert [len(b) for b in weight_buckets(tensors, 2048)] == [2, 2, 1]
    engine = engine_with()
    assert engine.load_weights(tensors) == 5
    kinds = [c[0] for c in engine.llm.calls]
    assert kinds == ["rpc", "reset_prefix_cache"]  # one reload call: every weight at once
    method, (paths,) = engine.llm.calls[0][1:]
    assert method == "toolrl_reload_weights" and len(paths) == 1
    assert not any(os.path.exists(p) for p in paths)  # the tmpfs files are gone after the sync


def test_an_engine_following_the_policy_wakes_loads_weights_and_sleeps():
    """RL in one process: the engine takes the trained model's weights before its first
    generation and after every update, and sleeps after each rollout (training follows)."""
    engine = engine_with(
        Completion([5], steps((5, -0.5)), "length"), Completion([5], steps((5, -0.5)), "length")
    )
    engine.follow(torch.nn.Linear(2, 2))
    assert not engine.samples_from(engine.policy)  # π_old is always recomputed for vLLM
    for _ in range(2):  # two steps: rollout, then an update
        engine.generate([GenerationRequest([1], 1)])
        engine.rollout_done()
        engine.weights_updated()
    order = [c[0] if c[0] != "wake_up" else f"wake_up:{c[1][0]}" for c in engine.llm.calls]
    assert order == [
        "rpc", "reset_prefix_cache", "generate", "sleep",  # first: awake, weights loaded
        "wake_up:weights", "rpc", "reset_prefix_cache", "wake_up:kv_cache", "generate", "sleep",
    ]  # fmt: skip
    assert engine.asleep


@pytest.mark.gpu
def test_real_vllm_engine_generates_and_takes_new_weights(tiny_dir):
    pytest.importorskip("vllm")
    from transformers import AutoModelForCausalLM

    engine = VLLMEngine.from_path(str(tiny_dir), dtype="float32", enforce_eager=True)
    request = GenerationRequest([1, 2, 3], 8, temperature=1.0, seed=3)
    first = engine.generate([request])[0]
    assert len(first.token_ids) == 8 and first.finish_reason == "length"
    assert engine.generate([request])[0].token_ids == first.token_ids  # per-request seed
    # The reported log-probs are log_softmax(logits / T) of the HF model at T = 1, no truncation.
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    ids = torch.tensor([[1, 2, 3, *first.token_ids]])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(ids).logits[0, 2:-1].float(), -1)
    expected = logprobs.gather(-1, torch.tensor(first.token_ids)[:, None]).squeeze(-1)
    torch.testing.assert_close(torch.tensor(first.logprobs), expected, atol=1e-3, rtol=1e-3)
    engine.sleep()
    engine.wake_up(tags=["weights"])
    zeroed = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    engine.load_weights(zeroed.items())
    engine.wake_up(tags=["kv_cache"])
    after = engine.generate([GenerationRequest([1, 2, 3], 4, temperature=0.0)])[0]
    assert after.logprobs == pytest.approx(
        [-torch.log(torch.tensor(model.config.vocab_size)).item()] * 4, abs=1e-3
    )
