"""One GRPO step on the tiny model: toolrl vs TRL's GRPOTrainer, side by side in one run.

Both train the same checkpoint on the same prompts with the same shape of step:
  8 prompts × 4 completions = 32 trajectories, up to 128 completion tokens each, sampled at
  T = 1.0; 4 policy updates a step (mini-batches of 2 prompts, micro-batches of 4 completions);
  token-level loss ("dapo"), ε_low 0.2, ε_high 0.28, no KL; AdamW lr 1e-6; fp32 on the CPU.
TRL: per_device_train_batch_size=4, gradient_accumulation_steps=2, steps_per_generation=8 (in
micro-batches), so one generation feeds 4 optimizer steps (= one toolrl step) and TRL recomputes
the old log-probs with a forward before the updates. No tools are offered (TRL's trainer has no
sandboxed multi-turn loop to compare with).

toolrl runs twice: as a user gets it (`algorithm.old_log_probs=auto`, the default, which here
takes π_old from the engine: it sampled from the trained fp32 model itself and reported
log_softmax(logits / T), so a recomputing forward would give the same numbers to float rounding;
TRL has no such option for its own generation), and forced to recompute them as TRL does
(`algorithm.old_log_probs=recompute`).

The three runs are repeated in interleaved rounds (toolrl auto, toolrl recompute, TRL; again),
each round a fresh trainer with its own warm-up step, and each one's step time is the median
over its rounds: a shared host's slow minute then slows one round of every run, not every round
of one run.

Prints toolrl's time split (rollout, reward, old log-probs, update), the step times, the
completion-token throughput of each, the ratios, and each round's ratios. Target: toolrl >= 1.5x
TRL.

Run: .venv/bin/python benchmarks/train_step.py [--steps 3] [--rounds 3]   (needs trl: make bench)
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

PROMPTS = 8
GROUP = 4
MAX_COMPLETION = 128


def reward_of(text: str) -> float:
    """Any cheap deterministic reward: the share of distinct characters."""
    return len(set(text)) / max(1, len(text))


def write_prompts(path: Path) -> list[dict]:
    rows = [
        {
            "prompt": [
                {"role": "user", "content": f"Problem {i}: compute {i} * {i + 3} and explain."}
            ],
            "data_source": "bench",
            "reward_model": {"ground_truth": str(i * (i + 3))},
        }
        for i in range(PROMPTS * 4)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def run_toolrl(model_dir: Path, data: Path, out: Path, steps: int, old_log_probs: str) -> dict:
    from toolrl.config import load_config
    from toolrl.trainers.rl_setup import build_rl_trainer

    completion_tokens = []

    def reward_fn(trajectories):
        for t in trajectories:
            t.reward = reward_of(t.final_text)
            t.reward_info = {"score": t.reward}
        completion_tokens.append(sum(t.response_length for t in trajectories))

    config = load_config(
        None,
        [
            f"model.path={model_dir}",
            "model.dtype=float32",
            f"data.train_files=[{data}]",
            f"data.train_batch_size={PROMPTS}",
            "rollout.engine=hf",
            f"rollout.n={GROUP}",
            f"rollout.max_response_length={MAX_COMPLETION}",
            "rollout.max_turns=1",
            "reward.overlong_buffer=32",
            "trainer.ppo_mini_batch_size=2",
            "trainer.micro_batch_size=4",
            "trainer.lr=1e-6",
            f"trainer.output_dir={out}",
            "trainer.loggers=[jsonl]",
            f"algorithm.old_log_probs={old_log_probs}",
        ],
    )
    trainer, _ = build_rl_trainer(config, tools=[], reward_fn=reward_fn)
    resolved = trainer.old_log_probs_source()
    rows = [trainer.step(step) for step in range(steps + 1)][1:]  # step 0 warms up
    tokens = completion_tokens[1:]
    split = {
        k: statistics.mean(r[f"timing/{k}"] for r in rows)
        for k in ("rollout", "reward", "old_log_prob", "update", "step")
    }
    return {
        "step_s": split["step"],
        "split": split,
        "old_log_probs": resolved,
        "tokens_per_s": sum(tokens) / sum(r["timing/step"] for r in rows),
    }


def run_trl(model_dir: Path, rows: list[dict], out: Path, steps: int) -> dict:
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    completion_tokens: list[int] = []

    def reward_fn(completions, completion_ids, **kwargs):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        completion_tokens.append(sum(len(ids) for ids in completion_ids))  # sampled ids, as ours
        return [reward_of(t) for t in texts]

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.marks = []

        def on_step_end(self, args, state, control, **kwargs):
            self.marks.append(time.perf_counter())

    updates_per_step = 4
    args = GRPOConfig(
        output_dir=str(out),
        use_cpu=True,
        bf16=False,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        steps_per_generation=2 * updates_per_step,  # counted in micro-batches of 4: 32 completions
        num_generations=GROUP,
        max_completion_length=MAX_COMPLETION,
        temperature=1.0,
        top_p=1.0,
        loss_type="dapo",
        epsilon=0.2,
        epsilon_high=0.28,
        beta=0.0,
        learning_rate=1e-6,
        lr_scheduler_type="constant",
        max_steps=(steps + 1) * updates_per_step,
        seed=0,
    )
    dataset = Dataset.from_list([{"prompt": r["prompt"]} for r in rows])
    timer = StepTimer()
    trainer = GRPOTrainer(
        model=str(model_dir),
        reward_funcs=reward_fn,
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[timer],
    )
    start = time.perf_counter()
    trainer.train()
    marks = [start, *timer.marks]
    step_ends = marks[updates_per_step::updates_per_step]  # one toolrl step = 4 TRL optimizer steps
    step_times = [b - a for a, b in itertools.pairwise(step_ends)]
    tokens = completion_tokens[1 : 1 + len(step_times)]
    return {"step_s": statistics.mean(step_times), "tokens_per_s": sum(tokens) / sum(step_times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every run")
    args = parser.parse_args()
    torch.set_num_threads(2)
    from toolrl.models.tiny import write_tiny

    sources = ("auto", "recompute")
    rounds: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = write_tiny(tmp / "tiny", seed=0)
        rows = write_prompts(tmp / "prompts.jsonl")
        for r in range(args.rounds):
            runs = {
                s: run_toolrl(model_dir, tmp / "prompts.jsonl", tmp / f"{s}{r}", args.steps, s)
                for s in sources
            }
            runs["trl"] = run_trl(model_dir, rows, tmp / f"trl{r}", args.steps)
            rounds.append(runs)
    ours = {s: median_run([r[s] for r in rounds]) for s in sources}
    trl = median_run([r["trl"] for r in rounds])
    print(
        f"\nOne GRPO step: {PROMPTS} prompts x {GROUP} completions, <= {MAX_COMPLETION} tokens, 4 updates, tiny Qwen3, CPU"
    )
    print(f"{'':40}{'step (s)':>10}{'tokens/s':>12}{'vs TRL':>9}")
    for source, label in (("auto", "default (old log-probs: auto)"), ("recompute", "old log-probs recomputed, as TRL")):  # fmt: skip
        run = ours[source]
        print(f"{'toolrl, ' + label:40}{run['step_s']:>10.2f}{run['tokens_per_s']:>12.0f}{trl['step_s'] / run['step_s']:>8.2f}x")  # fmt: skip
    print(f"{'TRL GRPOTrainer':40}{trl['step_s']:>10.2f}{trl['tokens_per_s']:>12.0f}")
    for source, run in ours.items():
        split, ratio = run["split"], trl["step_s"] / run["step_s"]
        print(f"toolrl split ({source} -> {run['old_log_probs']}): " + ", ".join(f"{k} {split[k]:.2f}s" for k in ("rollout", "reward", "old_log_prob", "update")))  # fmt: skip
        print(f"step throughput ratio toolrl ({source})/TRL: {ratio:.2f}x (target >= 1.5x) {'OK' if ratio >= 1.5 else 'BELOW TARGET'}")  # fmt: skip
    for r, runs in enumerate(rounds):
        print(f"round {r}: TRL {runs['trl']['step_s']:.2f}s; " + ", ".join(f"{s} {runs[s]['step_s']:.2f}s ({runs['trl']['step_s'] / runs[s]['step_s']:.2f}x)" for s in sources))  # fmt: skip


def median_run(runs: list[dict]) -> dict:
    """The median over rounds of each timing (step, split, throughput)."""
    out = {
        "step_s": statistics.median(r["step_s"] for r in runs),
        "tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs),
    }
    if "old_log_probs" in runs[0]:
        out["old_log_probs"] = runs[0]["old_log_probs"]
    if "split" in runs[0]:
        out["split"] = {k: statistics.median(r["split"][k] for r in runs) for k in runs[0]["split"]}
    return out


if __name__ == "__main__":
    main()
