"""Log-probs over trimmed micro-batches equal the plain full-width computation."""

from types import SimpleNamespace

import pytest
import torch

from toolrl.algorithms import agg_loss, entropy_from_logits
from toolrl.config import Config
from toolrl.models.tiny import build_model
from toolrl.trainers.batching import (
    grouped_micro_batches,
    pad_sequences,
    token_logprobs,
)
from toolrl.trainers.rl import PolicyBatch, RLTrainer

VOCAB = 300


def rows_with_padding(seed: int = 0, extra_columns: int = 5, shared: bool = True):
    """Prompts then responses of varied lengths, right-padded; the loss covers responses only.

    With `shared`, rows come in groups with one prompt (as a GRPO group's rollouts), prompts of
    different lengths; one row has no loss token at all. `extra_columns` of padding no row
    uses, as a mini-batch cut from a wider batch has."""
    g = torch.Generator().manual_seed(seed)
    shape = [(9, 14), (5, 3), (12, 20), (7, 1), (9, 9), (6, 17), (12, 4), (5, 11), (3, 8)]
    prompts = {n: torch.randint(VOCAB, (n,), generator=g).tolist() for n, _ in shape}
    sequences, masks = [], []
    for prompt, response in shape:
        own = torch.randint(VOCAB, (prompt,), generator=g).tolist()
        sequences.append((prompts[prompt] if shared else own) + rand(response, g))
        masks.append([0] * prompt + [1] * response)
    masks[-1] = [0] * len(masks[-1])  # e.g. a trajectory whose every token is a tool's
    longest = max(range(len(sequences)), key=lambda i: len(sequences[i]))
    sequences[longest] += [0] * extra_columns  # padding, masked by hand below
    masks[longest] += [0] * extra_columns
    batch = pad_sequences(sequences, masks)
    batch.attention_mask[longest, -extra_columns:] = 0
    return batch


def rand(n: int, g: torch.Generator) -> list[int]:
    return torch.randint(VOCAB, (n,), generator=g).tolist()


def reference_logprobs(model, batch, temperature):
    """The plain computation: logits at every position of the full width."""
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    logits = logits[:, :-1].float() / temperature
    return logits.log_softmax(-1).gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)


@pytest.mark.parametrize("shared", [True, False])
def test_token_logprobs_equal_the_full_computation_where_the_loss_reads_them(shared):
    model, batch = build_model(VOCAB, seed=0).eval(), rows_with_padding(shared=shared)
    mask = batch.loss_mask.bool()
    with torch.no_grad():
        want = reference_logprobs(model, batch, temperature=0.7)
        got, entropy = token_logprobs(model, batch, temperature=0.7, with_entropy=True)
        want_entropy = entropy_from_logits(
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
            / 0.7
        )
    assert got.shape == want.shape == entropy.shape == batch.loss_mask.shape
    assert torch.allclose(got[mask], want[mask], atol=1e-5)
    assert torch.allclose(entropy[mask], want_entropy[mask], atol=1e-5)


def test_micro_batches_cover_every_row_once_with_little_padding_and_prompts_together():
    batch = rows_with_padding()
    parts = grouped_micro_batches(batch, 2)
    assert sorted(torch.cat(parts).tolist()) == list(range(len(batch)))
    lengths = batch.attention_mask.sum(-1)
    for part in parts:
        assert len(part) <= 2 and 2 * lengths[part].min() > lengths[part].max()
    # lengths 32 | 23 23 18 16 16 | 11 8 8: rows 0 and 4 share a prompt and a class, so go
    # together; rows 2 and 6 share a prompt but not a class
    assert [p.tolist() for p in parts] == [[2], [0, 4], [5, 7], [6], [8, 1], [3]]


def test_a_long_row_does_not_pad_a_micro_batch_of_short_ones():
    sequences = [[1] * 40] + [[2] * 10] * 4 + [[3] * 4]
    batch = pad_sequences(sequences, [[0] + [1] * (len(s) - 1) for s in sequences])
    parts = grouped_micro_batches(batch, 8)
    assert [p.tolist() for p in parts] == [[0], [1, 2, 3, 4], [5]]
    assert [p.tolist() for p in grouped_micro_batches(batch, 3)] == [[0], [1, 2, 3], [4], [5]]


@pytest.mark.parametrize("shared", [True, False])
def test_micro_batch_gradients_equal_the_full_batch_gradient(shared):
    """Token-mean losses accumulated with the global normaliser: any grouping, same gradient."""
    batch = rows_with_padding(seed=1, shared=shared)
    advantages = torch.linspace(-1, 1, len(batch))[:, None] * batch.loss_mask
    num_tokens = batch.loss_mask.sum()

    def gradient(logprobs_of, parts):
        model = build_model(VOCAB, seed=0)  # training mode
        for rows in parts:
            part = batch.select(rows)
            loss = agg_loss(
                -logprobs_of(model, part) * advantages[rows],
                part.loss_mask,
                "token-mean",
                global_num_tokens=num_tokens,
            )
            loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    want = gradient(lambda m, b: reference_logprobs(m, b, 1.0), [slice(None)])
    got = gradient(lambda m, b: token_logprobs(m, b)[0], grouped_micro_batches(batch, 3))
    assert torch.allclose(got, want, atol=1e-6, rtol=1e-4)


def test_old_logprobs_do_not_depend_on_the_logprob_micro_batch_size():
    model, batch = build_model(VOCAB, seed=0).eval(), rows_with_padding(seed=2)
    mask = batch.loss_mask.bool()
    with torch.no_grad():
        want = reference_logprobs(model, batch, Config().rollout.temperature)
    for size in (1, 4, Config().trainer.logprob_micro_batch_size):
        config = Config()
        config.trainer.logprob_micro_batch_size = size
        with torch.no_grad():
            got = RLTrainer.logprobs_of(SimpleNamespace(config=config), model, batch)
        assert torch.allclose(got[mask], want[mask], atol=1e-5)


def updated(batch, *, precompute_all: bool, attention_dropout: float = 0.0):
    """Two PPO epochs over three mini-batches; old log-probs as the trainer computes them, or
    all of them recomputed up front. Returns (old log-probs, metrics, parameters)."""
    config = Config()
    config.rollout.n, config.trainer.ppo_mini_batch_size = 3, 1
    config.trainer.micro_batch_size, config.trainer.ppo_epochs = 2, 2
    config.algorithm.old_log_probs = "recompute"
    model = build_model(VOCAB, seed=0)
    model.config.attention_dropout = attention_dropout  # read only in training mode
    # SGD: Adam's m/√v would blow float rounding in near-zero gradients up to ±lr
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    trainer = RLTrainer(config, model, None, None, None, None, optimizer, scheduler)
    model.eval()
    rows = PolicyBatch(batch, torch.linspace(-1, 1, len(batch)))
    trainer.fill_reference_logprobs(rows)
    if precompute_all:
        with torch.no_grad():
            rows.old_logprobs = trainer.logprobs_of(model, batch)
        rows.old_from_first_forward[:] = False
    skipped = rows.old_from_first_forward.clone()
    metrics = trainer.update_policy(rows)
    return (
        skipped,
        rows.old_logprobs,
        metrics,
        torch.cat([p.detach().flatten() for p in model.parameters()]),
    )


def test_the_first_mini_batch_takes_its_old_logprobs_from_its_own_forward():
    """Nothing has moved the policy when the first mini-batch trains: its forward's log-probs
    are the old ones. The update is the one with every old log-prob recomputed up front."""
    batch = rows_with_padding(seed=3)
    mask = batch.loss_mask.bool()
    skipped, old, metrics, params = updated(batch, precompute_all=False)
    _, want_old, want_metrics, want_params = updated(batch, precompute_all=True)
    assert skipped.tolist() == [True] * 3 + [False] * 6  # filled in by the first update
    assert torch.allclose(old[mask], want_old[mask], atol=1e-5)
    assert torch.allclose(params, want_params, atol=1e-6)
    for key in ("actor/pg_loss", "actor/ppo_kl", "actor/pg_clipfrac", "actor/grad_norm"):
        assert metrics[key] == pytest.approx(want_metrics[key], abs=1e-6)
    skipped, *_ = updated(batch, precompute_all=False, attention_dropout=0.1)
    assert not skipped.any()  # with dropout, a training forward is not the old policy's


def test_lora_wrapped_models_take_the_same_path_and_keep_their_adapters():
    """The LM head runs on loss positions only for a LoRA model too: its decoder's LoRA layers
    (and a LoRA on the head itself) still apply."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=4, target_modules=["q_proj", "down_proj", "lm_head"], init_lora_weights=False)  # fmt: skip
    model = get_peft_model(build_model(VOCAB, seed=0), lora).eval()
    batch = rows_with_padding(seed=4)
    mask = batch.loss_mask.bool()
    with torch.no_grad():
        want = reference_logprobs(model, batch, temperature=1.0)
        got, _ = token_logprobs(model, batch)
        with model.disable_adapter():
            plain = reference_logprobs(model, batch, temperature=1.0)
    assert torch.allclose(got[mask], want[mask], atol=1e-5)
    assert not torch.allclose(got[mask], plain[mask], atol=1e-3)  # the adapters matter here
