"""The fast Qwen decoding forward computes what the HF forward computes, through batch changes."""

import pytest
import torch

from toolrl.models.tiny import build_model
from toolrl.rollout.engines.base import GenerationRequest
from toolrl.rollout.engines.fast_decode import FastDecoder, supports
from toolrl.rollout.engines.hf import HFEngine, _HFCache
from toolrl.rollout.engines.kv_cache import GROWTH, KVCache

VOCAB = 300
TOLERANCE = 2e-5  # fp32; logits are O(1)


def tiny_qwen2(seed: int = 0):
    """A Qwen2: biased q/k/v projections, no per-head q/k norms, a separate LM head."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).float().eval()
    with torch.no_grad():  # HF initialises biases to zero; make them matter
        for layer in model.model.layers:
            for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj):
                proj.bias.normal_(std=0.5)
    return model


def tiny_qwen3_variant(seed: int = 0):
    """A Qwen3 with biases everywhere in attention, head_dim ≠ hidden / heads, YaRN RoPE."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=32,
        attention_bias=True,
        max_position_embeddings=256,
        rope_parameters={
            "rope_type": "yarn",
            "factor": 4.0,
            "rope_theta": 10000.0,
            "original_max_position_embeddings": 64,
        },
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config).float().eval()
    with torch.no_grad():
        for layer in model.model.layers:
            attention = layer.self_attn
            for module in (attention.q_proj, attention.k_proj, attention.v_proj, attention.o_proj):
                module.bias.normal_(std=0.5)
            attention.q_norm.weight.normal_(1.0, 0.2)  # HF initialises norm weights to one
            attention.k_norm.weight.normal_(1.0, 0.2)
            layer.input_layernorm.weight.normal_(1.0, 0.2)
    return model


def left_pad(prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros(len(prompts), width, dtype=torch.long)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :] = torch.tensor(p)
        mask[row, width - len(p) :] = 1
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


class Both:
    """The same rows decoded by the HF forward and by FastDecoder, compared at every step."""

    def __init__(self, model, prompts: list[list[int]]):
        self.model, self.fast = model, FastDecoder(model)
        self.fast.refresh()
        self.hf, self.kv, self.positions, self.worst = self.prefill(prompts)

    def prefill(self, prompts):
        ids, mask, positions = left_pad(prompts)
        with torch.no_grad():
            want, hf = _HFCache.prefill(self.model, ids, mask, positions)
        got, kv = self.fast.prefill(ids, mask, positions)
        return hf, kv, positions[:, -1] + 1, (want - got).abs().max().item()

    def step(self, generator: torch.Generator) -> None:
        tokens = torch.randint(VOCAB, (len(self.kv),), generator=generator)
        with torch.no_grad():
            want = self.hf.decode(self.model, tokens, self.positions)
        got = self.fast.decode(tokens, self.positions, self.kv)
        self.positions = self.positions + 1
        self.worst = max(self.worst, (want - got).abs().max().item())

    def keep(self, rows: list[int]) -> None:
        order = torch.tensor(self.kv.keep(rows))  # rows may move into freed slots
        assert sorted(order.tolist()) == rows
        self.hf = self.hf.gather(order)
        self.positions = self.positions[order]

    def admit(self, prompts: list[list[int]]) -> None:
        hf, kv, positions, worst = self.prefill(prompts)
        self.hf, self.kv = self.hf.append(hf), self.kv.append(kv)
        self.positions = torch.cat([self.positions, positions])
        self.worst = max(self.worst, worst)


def random_prompts(lengths: list[int], generator: torch.Generator) -> list[list[int]]:
    return [torch.randint(VOCAB, (n,), generator=generator).tolist() for n in lengths]


@pytest.fixture
def poisoned_allocations(monkeypatch):
    """Fill new cache memory with NaN: a column read before it is written shows up as NaN."""
    allocate = KVCache.allocate.__func__

    def poisoned(cls, like, rows, width, capacity=0):
        cache = allocate(cls, like, rows, width, capacity)
        cache.data.fill_(float("nan"))
        return cache

    monkeypatch.setattr(KVCache, "allocate", classmethod(poisoned))


@pytest.mark.parametrize(
    "make_model", [lambda: build_model(VOCAB, seed=0).eval(), tiny_qwen2, tiny_qwen3_variant]
)
def test_logits_match_hf_through_drops_admissions_and_growth(make_model, poisoned_allocations):
    model, g = make_model(), torch.Generator().manual_seed(0)
    both = Both(model, random_prompts([7, 19, 3, 12], g))
    for _ in range(10):
        both.step(g)
    both.keep([0, 1, 3])  # a row finished; the short one's columns go
    for _ in range(5):
        both.step(g)
    both.admit(random_prompts([30, 2], g))  # wider than the running batch's cache
    for _ in range(5):
        both.step(g)
    both.keep([2, 4])  # row 4 moves into slot 0; columns only they padded go
    both.admit(random_prompts([5], g))  # narrower than the running batch: into a spare row
    both.keep([0, 2])
    both.admit(random_prompts([40, 3], g))  # wider than the batch: columns grow to the left
    for _ in range(GROWTH + 10):  # past the cache's first capacity: it grows
        both.step(g)
    assert both.worst < TOLERANCE


def test_fused_weights_follow_training_updates():
    model, g = build_model(VOCAB, seed=0), torch.Generator().manual_seed(1)
    prompts = random_prompts([6, 9], g)
    fast = FastDecoder(model)
    fast.refresh()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids, mask, positions = left_pad(prompts)
    model(input_ids=ids, attention_mask=mask).logits.square().mean().backward()
    optimizer.step()  # in-place: the fused copies are now stale
    model.eval()
    fast.refresh()
    with torch.no_grad():
        want, _ = _HFCache.prefill(model, ids, mask, positions)
    got, _ = fast.prefill(ids, mask, positions)
    assert (want - got).abs().max() < TOLERANCE


def test_a_refreshed_decoder_can_be_deep_copied_and_pickled():
    """Packed (oneDNN) weights have no storage; copies carry the plain weights and pack anew."""
    import copy
    import pickle

    model, g = build_model(VOCAB, seed=0), torch.Generator().manual_seed(1)
    ids, mask, positions = left_pad(random_prompts([5, 8], g))
    fast = FastDecoder(model)
    fast.refresh()
    want, _ = fast.prefill(ids, mask, positions)
    for clone in (copy.deepcopy(fast), pickle.loads(pickle.dumps(fast))):
        got, _ = clone.prefill(ids, mask, positions)
        assert torch.equal(want, got)


def test_supports_only_plain_qwen_models():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    assert (
        supports(build_model(VOCAB)) and supports(tiny_qwen2()) and supports(tiny_qwen3_variant())
    )
    llama = LlamaForCausalLM(
        LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1)
    )
    lora = get_peft_model(build_model(VOCAB), LoraConfig(r=2, target_modules=["q_proj"]))
    assert not supports(llama) and not supports(lora)
    assert HFEngine(llama).fast is None and HFEngine(build_model(VOCAB)).fast is not None
    with pytest.raises(ValueError, match="does not support"):
        HFEngine(llama, fast_decode=True)


def test_engine_samples_the_same_tokens_with_either_forward(tiny_dir):
    group = list(range(40, 90))  # one prompt, several rollouts: prefilled once
    requests = [
        GenerationRequest(group, 40, seed=1),
        GenerationRequest(list(range(20, 30)), 25, seed=2),
        GenerationRequest(group, 40, seed=3),
        GenerationRequest(list(range(60, 65)), 3, seed=4),
        GenerationRequest(list(range(60, 75)), 30, temperature=0.0, seed=5),
        GenerationRequest(group, 40, top_p=0.8, top_k=20, seed=6),
    ]
    fast = HFEngine.from_path(str(tiny_dir), max_batch_size=4)  # admissions mid-batch
    slow = HFEngine.from_path(str(tiny_dir), max_batch_size=4, fast_decode=False)
    assert fast.fast is not None and slow.fast is None
    alone = [fast.generate([r])[0] for r in requests]
    for results in (fast.generate(requests), slow.generate(requests)):
        for got, want in zip(results, alone, strict=True):
            assert got.token_ids == want.token_ids
            assert got.logprobs == pytest.approx(want.logprobs, abs=1e-4)


@pytest.mark.parametrize(
    "make_model", [lambda: build_model(VOCAB, seed=0).eval(), tiny_qwen3_variant]
)
def test_prefill_after_a_cached_prefix_equals_the_whole_prefill(make_model, poisoned_allocations):
    """A row's stored keys/values + its new tokens give the logits of prefilling it whole, and
    decoding on from there matches the HF forward over the whole sequence."""
    model, g = make_model(), torch.Generator().manual_seed(2)
    fast = FastDecoder(model)
    fast.refresh()
    prefixes = random_prompts([9, 4, 15], g)
    suffixes = random_prompts([3, 11, 1], g)  # padding lands between prefix and suffix
    ids, mask, positions = left_pad(prefixes)
    _, cache = fast.prefill(ids, mask, positions)
    stored = [cache.row(r) for r in range(len(prefixes))]
    assert [s.shape[3] for s in stored] == [9, 4, 15]
    logits, cached, next_position = fast.prefill_after(stored, suffixes)
    whole = [p + s for p, s in zip(prefixes, suffixes, strict=True)]
    ids, mask, positions = left_pad(whole)
    with torch.no_grad():
        want, hf = _HFCache.prefill(model, ids, mask, positions)
    assert next_position.tolist() == [len(w) for w in whole]
    worst = (want - logits).abs().max().item()
    for _ in range(5):
        tokens = torch.randint(VOCAB, (len(whole),), generator=g)
        with torch.no_grad():
            want = hf.decode(model, tokens, next_position)
        got = fast.decode(tokens, next_position, cached)
        next_position = next_position + 1
        worst = max(worst, (want - got).abs().max().item())
    assert worst < TOLERANCE


def whole_sequence_logits(model, sequences: list[list[int]]) -> torch.Tensor:
    """The HF forward over each whole sequence: the logits of its last position [B, V]."""
    with torch.no_grad():
        return torch.cat([model(input_ids=torch.tensor([s])).logits[:, -1] for s in sequences])


@pytest.mark.parametrize(
    "make_model", [lambda: build_model(VOCAB, seed=0).eval(), tiny_qwen3_variant]
)
def test_rows_joining_a_decoding_step_match_the_whole_sequence(make_model, poisoned_allocations):
    """Stored prefixes + new tokens join a running batch inside its decoding step
    (`decode_and_join`): every row, running or joined, then gives the logits of the HF forward
    over its whole sequence, at that step and while decoding on, also when the joining prefix
    is wider than the cache's columns (the cache grows to the left) and after rows finish."""
    model, g = make_model(), torch.Generator().manual_seed(3)
    fast = FastDecoder(model)
    fast.refresh()
    sequences = random_prompts([6, 11, 3], g)
    ids, mask, positions = left_pad(sequences)
    logits, cache = fast.prefill(ids, mask, positions)
    next_position = positions[:, -1] + 1
    worst = 0.0

    def stored(prefixes):
        ids, mask, positions = left_pad(prefixes)
        _, kv = fast.prefill(ids, mask, positions)
        return [kv.row(r) for r in range(len(prefixes))]

    def step(prefixes=(), suffixes=()):
        nonlocal logits, next_position, worst
        tokens = torch.randint(VOCAB, (len(sequences),), generator=g)
        for row, token in enumerate(tokens.tolist()):
            sequences[row].append(token)
        logits, joined = fast.decode_and_join(
            tokens, next_position, cache, stored(prefixes) if prefixes else [], suffixes
        )
        next_position = torch.cat([next_position + 1, joined])
        sequences.extend(p + s for p, s in zip(prefixes, suffixes, strict=True))
        assert joined.tolist() == [len(p) + len(s) for p, s in zip(prefixes, suffixes, strict=True)]
        assert cache.rows == len(sequences)
        worst = max(worst, (whole_sequence_logits(model, sequences) - logits).abs().max().item())

    step()
    step(random_prompts([5, 2], g), random_prompts([1, 4], g))  # padding between prefix, suffix
    step()
    step(random_prompts([40], g), random_prompts([3], g))  # wider than the cache: it grows
    for _ in range(3):
        step()
    order = cache.keep([1, 3, 4])  # rows finish; a joined row moves into a freed slot
    sequences[:] = [sequences[r] for r in order]
    next_position = next_position[torch.tensor(order)]
    step(random_prompts([8, 1, 20], g), random_prompts([2, 1, 6], g))  # more than spare rows
    for _ in range(3):
        step()
    assert worst < TOLERANCE


def test_engine_reuses_a_finished_turn_and_samples_the_same_tokens(tiny_dir):
    """Turn 2's prompt extends turn 1's conversation: with the prefix store only the new tokens
    are prefilled, and the sampled tokens are those of a full prefill."""
    cached = HFEngine.from_path(str(tiny_dir))
    plain = HFEngine.from_path(str(tiny_dir), prefix_cache_bytes=0)
    assert plain.prefixes is None
    first = [GenerationRequest(list(range(40, 60 + 7 * i)), 12 + i, seed=i) for i in range(3)]
    second = []
    for engine in (cached, plain):
        turn1 = engine.generate(first)
        second.append(
            engine.generate(
                [
                    GenerationRequest([*r.prompt_ids, *out.token_ids, 7, 8, 9], 20, seed=10 + i)
                    for i, (r, out) in enumerate(zip(first, turn1, strict=True))
                ]
            )
        )
    assert cached.prefixes.hits == 3
    assert cached.prefixes.reused_tokens == sum(
        len(r.prompt_ids) + r.max_new_tokens - 1 for r in first
    )
    for got, want in zip(*second, strict=True):
        assert got.token_ids == want.token_ids
        assert got.logprobs == pytest.approx(want.logprobs, abs=1e-4)


@pytest.mark.parametrize(
    ("long_lengths", "own_prefills"),
    [
        ((30, 8), 0),  # both next turns join a decoding step of the long rows
        # The only running row finishes at the step the next turn joins (which then decodes
        # alone); the turn after it finds nothing running and is prefilled on its own.
        ((6,), 1),
    ],
)
def test_next_turns_join_a_running_batch_and_sample_what_a_full_prefill_samples(
    tiny_dir, monkeypatch, long_lengths, own_prefills
):
    """A request continuing a finished turn arrives while other rows still decode: it joins
    their next decoding step (no forward of its own) and samples the tokens a full prefill of
    its prompt gives."""
    engine = HFEngine.from_path(str(tiny_dir))
    plain = HFEngine.from_path(str(tiny_dir), prefix_cache_bytes=0)
    joins, prefills = [], []
    decode_and_join, prefill_after = engine.fast.decode_and_join, engine.fast.prefill_after
    monkeypatch.setattr(
        engine.fast,
        "decode_and_join",
        lambda *args: joins.append(len(args[3])) or decode_and_join(*args),
    )
    monkeypatch.setattr(
        engine.fast, "prefill_after", lambda *args: prefills.append(1) or prefill_after(*args)
    )
    short = GenerationRequest(list(range(40, 55)), 5, seed=1)
    longs = [GenerationRequest(list(range(60, 70)), n, seed=2 + n) for n in long_lengths]
    pending = [("short", short), *((f"long{i}", r) for i, r in enumerate(longs))]
    results = {}

    def take(room):
        taken, pending[:] = pending[:room], pending[room:]
        return taken

    def done(key, result):
        results[key] = result
        if key in ("short", "next"):  # its next turn: the conversation plus 3 new tokens
            turn = short if key == "short" else results["next-request"]
            request = GenerationRequest([*turn.prompt_ids, *result.token_ids, 7, 8, 9], 12, seed=9)
            if key == "short":
                results["next-request"] = request
                pending.append(("next", request))
            else:
                results["last-request"] = request
                pending.append(("last", request))

    engine.serve(take, done)
    assert [n for n in joins if n] == [1, 1] and len(prefills) == own_prefills
    for key in ("next", "last"):
        want = plain.generate([results[f"{key}-request"]])[0]
        assert results[key].token_ids == want.token_ids
        assert results[key].logprobs == pytest.approx(want.logprobs, abs=1e-4)


def test_prefix_store_is_cleared_when_the_weights_change(tiny_dir):
    engine = HFEngine.from_path(str(tiny_dir))
    engine.generate([GenerationRequest(list(range(40, 60)), 5, seed=0)])
    assert len(engine.prefixes) == 1
    with torch.no_grad():
        next(engine.model.parameters()).add_(0.01)
    engine.generate([GenerationRequest(list(range(70, 90)), 5, seed=0)])
    assert len(engine.prefixes) == 1 and engine.prefixes.hits == 0  # only the new request's


def test_prefix_store_finds_the_longest_stored_prefix_once_and_evicts_the_oldest():
    from toolrl.rollout.engines.hf import PrefixStore

    head = list(range(PrefixStore.HEAD))
    store = PrefixStore(max_bytes=3 * 4 * 10)  # three entries of ten float32 numbers
    short, long_, other = (*head, 1), (*head, 1, 2, 3), (*[7] * PrefixStore.HEAD, 1)
    for tokens in (short, long_, other):
        store.put(tokens, torch.full((10,), float(len(tokens))))
    store.put(tuple(head), torch.zeros(10))  # no longer than the head: not stored
    assert len(store) == 3
    assert store.take([*head, 1, 2]) == (len(short), pytest.approx(torch.full((10,), 17.0)))
    n, _ = store.take([*head, 1, 2, 3, 4])  # `short` is gone: only `long_` is left to match
    assert n == len(long_) and store.take([*head, 1, 2, 3, 4]) is None  # taken once
    assert store.take(list(long_)) is None  # a prefix must leave something to prefill
    assert store.take([*[7] * PrefixStore.HEAD, 2, 3]) is None  # same head, not a prefix
    for i in range(3):  # three more entries: `other`, the oldest, is dropped
        store.put((*head, 9, i), torch.zeros(10))
    assert len(store) == 3 and store.take([*[7] * PrefixStore.HEAD, 1, 5]) is None
    assert store.hits == 2 and store.reused_tokens == len(short) + len(long_)


def test_weights_updated_after_a_fused_optimizer_step(tiny_dir):
    """A fused AdamW step updates the parameters without moving their version counters, so the
    engine cannot see it by itself; after `weights_updated()` it rebuilds its fused weights and
    forgets its prefixes, and samples what a fresh engine on the updated model samples."""
    engine = HFEngine.from_path(str(tiny_dir))
    requests = [GenerationRequest(list(range(40, 60)), 16, seed=3)]
    before = engine.generate(requests)[0]
    model = engine.model
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, fused=True)
    model(input_ids=torch.tensor([requests[0].prompt_ids])).logits.square().mean().backward()
    optimizer.step()
    engine.weights_updated()
    got = engine.generate(requests)[0]
    want = HFEngine(model, seed=0).generate(requests)[0]
    assert got.token_ids == want.token_ids
    assert got.logprobs == pytest.approx(want.logprobs, abs=1e-4)
    assert got.logprobs != pytest.approx(before.logprobs, abs=1e-3)  # the update mattered
    assert engine.prefixes.hits == 0
