"""Building an RL run from a Config, and running it with checkpoints, resume and logging.

`build_rl_trainer` is the one place a Config becomes objects (model, engine, tools, data,
optimizer); `fit` is the outer loop: step, validate, log, save. The step itself is in rl.py.
"""

from __future__ import annotations

import dataclasses
import sys
from copy import deepcopy
from pathlib import Path

import torch
import yaml

from toolrl.chat import encode, render
from toolrl.config import Config, ConfigError, check_rl
from toolrl.data.io import DataError, write_jsonl
from toolrl.data.rl import load_rl_samples
from toolrl.rollout.agent_loop import settings_from_config
from toolrl.rollout.async_rollout import StepPlan
from toolrl.rollout.engines.factory import build_engine
from toolrl.rollout.provider import LocalRollout, RolloutProvider
from toolrl.rollout.records import trajectory_record
from toolrl.tools.toolset import ToolSet, as_toolset
from toolrl.trainers.checkpoint import latest_checkpoint, load_trainer_state, save_checkpoint
from toolrl.trainers.model_io import load_policy, resolve_model_path
from toolrl.trainers.optim import build_optimizer, build_scheduler, due
from toolrl.trainers.parallel import SingleProcess
from toolrl.trainers.rl import PromptStream, RLTrainer, rollout_seed, rollouts_per_prompt
from toolrl.trainers.tracking import MetricsLogger


def run_dir_of(config: Config) -> Path:
    return Path(config.trainer.output_dir) / config.trainer.run_name


def load_prompts(config: Config, tokenizer, tools: ToolSet | list) -> tuple[list, int]:
    """Training samples from every train file; prompts over max_prompt_length are dropped and
    counted. Each prompt is rendered with the tools its row is offered; a row whose
    `extra_info.tools_kwargs` does not fit the run's tools fails here, before any rollout."""
    if not config.data.train_files:
        raise DataError(
            "data.train_files is empty: give RL data (jsonl or parquet in the verl schema)"
        )
    samples = []
    for path in config.data.train_files:
        rows = load_rl_samples(path)
        if not rows:
            raise DataError(f"{path}: no rows (data.train_files names an empty file)")
        samples += rows
    limit, toolset = config.data.max_prompt_length, as_toolset(tools)

    def length(s) -> int:
        schemas = toolset.schemas_for(s)
        return len(
            encode(tokenizer, render(tokenizer, s.messages, schemas, add_generation_prompt=True))
        )

    try:
        kept = [s for s in samples if length(s) <= limit]
    except ValueError as err:  # a row's tools_kwargs
        raise ConfigError(str(err)) from err
    if not kept:
        raise DataError(
            f"every prompt of data.train_files is longer than data.max_prompt_length={limit} "
            "tokens: raise data.max_prompt_length"
        )
    return kept, len(samples) - len(kept)


def total_steps_of(config: Config, prompts: PromptStream) -> int:
    return config.trainer.total_steps or config.trainer.epochs * prompts.steps_per_epoch()


def step_plan(config: Config, prompts: PromptStream, start: int) -> StepPlan | None:
    """The steps an asynchronous rollout produces ahead (`trainer.mode=async`), else None."""
    if config.trainer.mode != "async":
        return None
    return StepPlan(
        batch_of=prompts.batch,
        seed_of=lambda step: rollout_seed(config, step),
        n=rollouts_per_prompt(config),
        start=start,
        total=total_steps_of(config, prompts),
        max_staleness=config.trainer.max_staleness,
    )


def async_journal(config: Config) -> Path:
    """Where the asynchronous producer notes the batches it started (for a resume's count)."""
    return run_dir_of(config) / "async_batches.json"


def local_rollout(config: Config):
    """`make_rollout` for a single process: an agent loop on the engine `rollout.engine` names,
    following the trained model (HF decodes with it; vLLM takes its weights after updates), or
    with a `StepPlan` the asynchronous producer (`async_rollout`)."""

    def make(model, tokenizer, tools: list, plan: StepPlan | None = None) -> RolloutProvider:
        if plan is not None:
            return async_rollout(config, model, tokenizer, tools, plan)
        engine = build_engine(
            config,
            model.name_or_path,
            tokenizer=tokenizer,
            model=model,
            needs_policy=True,
            purpose="toolrl rl",
        )
        settings = settings_from_config(
            config.rollout,
            tools=config.tools,
            max_context_length=engine.max_context_length,
            seed=config.trainer.seed,
        )
        return LocalRollout(engine, tokenizer, tools, settings)

    return make


def async_rollout(config: Config, model, tokenizer, tools: list, plan: StepPlan) -> RolloutProvider:
    """The asynchronous producer (toolrl/rollout/async_rollout.py) on its own copy of the
    policy: a deep copy for `hf`, vLLM's own processes for `vllm`; validation generates with the
    trained model itself (`hf`) or with the newest weights in the shared vLLM engine."""
    from toolrl.rollout.async_rollout import (
        AsyncRollout,
        EngineProducer,
        NewestWeights,
        VersionedEngine,
    )

    def snapshot() -> dict:
        return {k: v.detach().clone() for k, v in model.state_dict().items()}

    t, start = config.trainer, plan.start
    if config.rollout.engine == "hf":
        copy = deepcopy(model).eval().requires_grad_(False)
        inner = build_engine(config, model.name_or_path, tokenizer=tokenizer, model=copy)
        versioned = VersionedEngine(inner, copy.load_state_dict, start, partial=t.partial_rollouts)
        validation = build_engine(config, model.name_or_path, tokenizer=tokenizer, model=model)
    else:
        inner = build_engine(config, model.name_or_path, tokenizer=tokenizer, needs_policy=True)
        load = lambda state: inner.load_weights(state.items())  # noqa: E731
        load(snapshot())  # the engine starts from the trainer's weights (a resumed checkpoint's)
        versioned = VersionedEngine(inner, load, start, partial=t.partial_rollouts)
        validation = NewestWeights(versioned)
    settings = settings_from_config(
        config.rollout,
        tools=config.tools,
        max_context_length=inner.max_context_length,
        seed=t.seed,
    )
    producer = EngineProducer(versioned, tokenizer, tools, settings)
    return AsyncRollout(
        producer,
        validation,
        tools,
        settings.max_context_length,
        plan,
        snapshot,
        journal=async_journal(config),
    )


def default_reward_fn(config: Config):
    from toolrl.rewards import score_trajectories

    return lambda trajectories: score_trajectories(
        trajectories, config.reward, config.rollout.max_response_length
    )


def default_tools(config: Config) -> ToolSet:
    """The tools `config.tools` chooses (`toolrl.tools.registry.build_tools`)."""
    from toolrl.tools.registry import build_tools

    return build_tools(config.tools)


def build_rl_trainer(
    config: Config,
    *,
    resume: bool = False,
    tools=None,
    reward_fn=None,
    device: str = "cpu",
    make_rollout=None,
    parallel=None,
) -> tuple[RLTrainer, int]:
    """An RLTrainer and the step to start from (the last checkpoint's when resuming).

    `make_rollout(model, tokenizer, tools, plan)` builds the `RolloutProvider` (default: an
    agent loop in this process, `local_rollout`; `plan`: the `StepPlan` of `trainer.mode=async`,
    else None); `parallel` is the data-parallel group this process
    trains in (default: a single process). The Ray backend passes both.
    """
    check_rl(config)
    run_dir = run_dir_of(config)
    checkpoint = latest_checkpoint(run_dir) if resume else None
    base = resolve_model_path(config.model.path, run_dir)
    model, tokenizer = load_starting_policy(config, base, checkpoint, device)
    parallel = parallel or SingleProcess()
    model = parallel.prepare(model)
    tools = tools if tools is not None else default_tools(config)
    samples, dropped = load_prompts(config, tokenizer, tools)
    if dropped:
        print(
            f"note: dropped {dropped} prompts longer than data.max_prompt_length", file=sys.stderr
        )
    prompts = PromptStream(
        samples, config.data.train_batch_size, config.trainer.seed, config.data.shuffle
    )
    optimizer = build_optimizer(model.parameters(), config.trainer)
    scheduler = build_scheduler(optimizer, config.trainer, total_steps_of(config, prompts))
    ref_model = load_reference(config, base, device) if config.algorithm.kl_coef > 0 else None
    state = {"step": 0}
    if checkpoint is not None:
        state = load_trainer_state(checkpoint, optimizer, scheduler)
    start = state["step"]
    plan = step_plan(config, prompts, start)
    rollout = (make_rollout or local_rollout(config))(model, tokenizer, tools, plan)
    trainer = RLTrainer(
        config,
        model,
        tokenizer,
        rollout,
        prompts,
        reward_fn or default_reward_fn(config),
        optimizer,
        scheduler,
        ref_model,
        parallel,
    )
    if trainer.self_imitation is not None and "self_imitation" in state:
        trainer.self_imitation.load_state_dict(state["self_imitation"])
    return trainer, start


def load_reference(config: Config, base: Path, device: str):
    """The KL term's reference: the starting policy (without LoRA), frozen."""
    ref_model = load_policy(base, dataclasses.replace(config.model, lora_rank=0), device=device)[0]
    return ref_model.eval().requires_grad_(False)


def load_starting_policy(config: Config, base: Path, checkpoint, device: str):
    """The policy a run starts from: the checkpoint's full weights when resuming, or the base
    model (with the checkpoint's LoRA adapters when resuming a LoRA run)."""
    lora = config.model.lora_rank > 0
    if checkpoint is not None and not lora:
        return load_policy(
            checkpoint, dataclasses.replace(config.model, lora_rank=0), device=device
        )
    return load_policy(base, config.model, device=device, adapter_path=checkpoint if lora else None)


def load_validation_sets(config: Config) -> dict[str, list]:
    """Benchmarks validated during RL: `eval.benchmarks` (name → file) and `data.val_files`."""
    from toolrl.eval.benchmarks import load_benchmark

    sets = {name: load_benchmark(name, path) for name, path in config.eval.benchmarks.items()}
    for path in config.data.val_files:
        sets.setdefault(Path(path).stem, load_rl_samples(path))
    return sets


def make_validator(config: Config, benchmarks: dict[str, list]):
    """validate(trainer, step) → `val-core/<benchmark>/<metric>` through the eval runner, with
    per-sample records in `validation/step_N/`; None when there is nothing to validate."""
    if not benchmarks:
        return None
    from toolrl.eval.runner import evaluate

    def validate(trainer: RLTrainer, step: int) -> dict[str, float]:
        trainer.model.eval()
        rollout = trainer.rollout
        summaries = evaluate(
            rollout.engine,
            trainer.tokenizer,
            rollout.tools,
            benchmarks,
            config.eval,
            config.rollout,
            run_dir_of(config) / "validation" / f"step_{step}",
            reward_cfg=config.reward,
            tools_cfg=config.tools,
            max_context_length=rollout.max_context_length,
            seed=config.trainer.seed + step,
        )
        return {
            f"val-core/{name}/{metric}": value
            for name, summary in summaries.items()
            for metric, value in summary["metrics"].items()
            if isinstance(value, int | float)
        }

    return validate


def fit(
    config: Config,
    *,
    resume: bool = False,
    tools=None,
    reward_fn=None,
    validate=None,
    device: str = "cpu",
    make_rollout=None,
    parallel=None,
) -> Path:
    """Run (or resume) an RL run; returns its run directory.

    Validation runs every `trainer.val_every` steps and after the last, on `eval.benchmarks` and
    `data.val_files` (or through `validate` when given). The Ray backend
    (`toolrl.distributed.launch.fit_ray`) calls this on every rank with `make_rollout` and
    `parallel`: every rank runs the steps, and rank 0 alone validates, logs and saves (the
    replicas are equal).
    """
    torch.manual_seed(config.trainer.seed)
    trainer, start = build_rl_trainer(
        config,
        resume=resume,
        tools=tools,
        reward_fn=reward_fn,
        device=device,
        make_rollout=make_rollout,
        parallel=parallel,
    )
    try:
        return run_steps(config, trainer, start, validate)
    finally:
        trainer.rollout.close()


def run_steps(config: Config, trainer: RLTrainer, start: int, validate) -> Path:
    """The steps of `fit` from `start`: train, validate, log, write rollouts, checkpoint."""
    run_dir = run_dir_of(config)
    if trainer.parallel.rank != 0:
        for step in range(start, total_steps_of(config, trainer.prompts)):
            trainer.step(step)
        return run_dir
    validate = validate or make_validator(config, load_validation_sets(config))
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config.to_yaml())
    logger = MetricsLogger(run_dir, config.trainer.loggers, config.to_dict(), resume_step=start)
    total, t = total_steps_of(config, trainer.prompts), config.trainer
    with progress_bar("rl", disabled="console" not in t.loggers) as progress:
        task = progress.add_task("rl", total=total, completed=start, status="")
        for step in range(start, total):
            metrics = trainer.step(step)
            done = step + 1
            if validate is not None and due(t.val_every, done, total):
                metrics.update(validate(trainer, done))
            logger.log(done, metrics)
            records = [trajectory_record(r, trainer.tokenizer) for r in trainer.last_trajectories]
            write_jsonl(run_dir / "rollouts" / f"step_{done}.jsonl", records)
            if due(t.save_every, done, total):
                save_step(run_dir, done, trainer, config)
            progress.update(task, completed=done, status=step_status(metrics))
    logger.close()
    write_run_report(run_dir)
    return run_dir


def save_step(run_dir: Path, step: int, trainer: RLTrainer, config: Config) -> None:
    """A checkpoint of the policy, optimizer, scheduler (and self-imitation's replay buffer)
    after `step` steps."""
    state = {"config": yaml.safe_dump(config.to_dict())}
    if trainer.self_imitation is not None:  # SPEAR's replay buffer and baseline history
        state["self_imitation"] = trainer.self_imitation.state_dict()
    parts = (trainer.model, trainer.tokenizer, trainer.optimizer, trainer.scheduler)
    save_checkpoint(run_dir, step, *parts, state)


def write_run_report(run_dir: Path) -> None:
    """`report.html` in the run directory; a failure is printed, never raised: the run is done."""
    try:
        from toolrl.eval.report import write_report

        write_report(run_dir)
    except Exception as err:  # the report is a view of the run; losing it must not lose the run
        print(f"warning: could not write {run_dir / 'report.html'}: {err!r}", file=sys.stderr)


def progress_bar(name: str, *, disabled: bool):
    """A rich progress bar with step count, elapsed time, ETA and a status field."""
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn(f"[bold]{name}"),
        BarColumn(),
        TextColumn("step {task.completed}/{task.total}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        disable=disabled,
    )


def step_status(metrics: dict[str, float]) -> str:
    return (
        f"score {metrics['critic/score/mean']:+.3f} acc {metrics['acc/mean']:.2f} "
        f"tools/resp {metrics['tool/calls_per_response']:.2f}"
    )
