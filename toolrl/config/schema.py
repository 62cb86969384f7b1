"""The configuration's schema: one dataclass per section, the defaults the paper's.

Every default is the paper's (arXiv 2510.11701, Open-AgentRL's GRPO-TCR recipe for Qwen3-4B)
unless its comment says otherwise, so `Config()` *is* the paper's RL recipe. Reading recipes
and overrides into these classes is `toolrl.config.loading`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import yaml

SECTIONS = (
    "model",
    "data",
    "rollout",
    "tools",
    "algorithm",
    "reward",
    "trainer",
    "eval",
    "cluster",
)

MOVED = {
    "rollout.tool_output_max_chars": "tools.output_max_chars",
    "rollout.tool_timeout": "tools.timeout",
    "rollout.tool_memory_mb": "tools.memory_mb",
    "rollout.max_concurrent_tools": "tools.max_concurrent",
    "rollout.sandbox_url": "tools.sandbox_url",
    "rollout.num_workers": "cluster.rollout_workers",
    "rollout.sandbox_workers": "cluster.sandbox_workers",
    "trainer.backend": "cluster.backend",
    "trainer.nodes": "cluster.nodes",
    "trainer.gpus_per_node": "cluster.gpus_per_node",
    "trainer.ranks_per_node": "cluster.ranks_per_node",
    "trainer.max_length": "data.max_length",
}
"""Keys that moved to another section (old → new): a recipe or override using the old key
fails with a message naming the new one."""


TOOL_NAMES = ("code_interpreter", "python_session", "search")
"""The built-in tools `tools.enabled` may list (each built by `toolrl.tools.registry.TOOLS`)."""


class ConfigError(ValueError):
    """A recipe or override that does not fit the schema; the message says what, where and why."""


@dataclass
class ModelConfig:
    path: str = "tiny"
    """Local path of an HF checkpoint, or `tiny` for the embedded model toolrl builds itself.
    Nothing is downloaded: a hub name that is not a local directory is an error."""
    dtype: Literal["float32", "bfloat16", "float16"] = "bfloat16"
    """Parameter dtype for training and rollout. The paper trains in bf16; on CPU use float32."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass to save memory (slower)."""
    lora_rank: int = 0
    """0 trains all weights (the paper); > 0 trains LoRA adapters of this rank through peft."""
    lora_alpha: int = 32
    """LoRA scaling numerator (effective scale lora_alpha / lora_rank)."""
    lora_target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    """Module names LoRA adapts (Qwen-family attention projections by default)."""


@dataclass
class DataConfig:
    train_files: list[str] = field(default_factory=list)
    """RL: Open-AgentRL-30K / verl-schema parquet or jsonl. SFT: `messages` + `tools` rows."""
    val_files: list[str] = field(default_factory=list)
    """Held-out files evaluated every `trainer.val_every` steps (same schema as train_files)."""
    train_batch_size: int = 64
    """Prompts per RL step (the paper: 64 prompts × 16 rollouts = 1024 trajectories)."""
    max_prompt_length: int = 2560
    """Prompts longer than this many tokens are dropped and counted, never silently truncated."""
    max_length: int = 16384
    """SFT: conversations are right-truncated to this many tokens (counted and reported)."""
    shuffle: bool = True
    """Shuffle the training order each epoch (the order is part of the checkpoint)."""


@dataclass
class BranchingConfig:
    """Entropy-guided branching rollouts (toolrl/rollout/branching.py has the formulas); off by
    default. Each prompt still gets exactly `rollout.n` trajectories (GRPO over all of them):
    some are global samples from the prompt, the rest branch from a trajectory's midpoint, just
    after a tool's observation, when the next tokens are uncertain. Defaults are the ARPO
    release's (scripts/ARPO_*.sh: n 16, initial_rollouts 8, beam_size 2,
    branch_probability 0.5, entropy_weight 0.2; 20 tokens of entropy)."""

    mode: Literal["none", "arpo", "aepo"] = "none"
    """`none`: n independent samples (GRPO); `arpo`: ARPO's entropy-based adaptive rollout
    (Dong et al. 2025, arXiv 2507.19849); `aepo`: AEPO's dynamic entropy-balanced rollout
    (arXiv 2510.14545): the split between global and branch samples from a first sample's
    entropies, and a penalty on consecutive branches."""
    initial_samples: int = 0
    """ARPO: N, the global samples each prompt starts with; the other n − N are the branch
    budget (0 = n // 2, the release's 8 of 16). AEPO decides N itself (`monitor_beta`)."""
    entropy_tokens: int = 20
    """k: a turn's entropy is the mean over its first k sampled tokens."""
    branch_probability: float = 0.5
    """α: the branching probability when the entropy did not change (ΔH = 0)."""
    entropy_weight: float = 0.2
    """β: how much the entropy change raises it: p = clip(α + β·ΔH, 0, 1)."""
    branch_factor: int = 1
    """Z: children per branching (the release's beam_size − 1)."""
    reuse_prefix: bool = True
    """Children reuse the keys and values their parent computed for the shared prefix (HF
    engine); false re-runs the prefix (for measuring what reuse saves)."""
    monitor_beta: float = 0.5
    """AEPO: the sensitivity of the split, N = ⌊n·σ(monitor_beta·(H_root − H_tool))⌋ + 1 (0.5:
    the authors' code)."""
    consecutive_penalty: float = 0.05
    """AEPO: a branch after l consecutive branches has p·(1 − min(1, consecutive_penalty·l))
    (0.05: the authors' code)."""


@dataclass
class RolloutConfig:
    engine: Literal["hf", "vllm", "openai", "scripted"] = "hf"
    """Generation backend, the same in every command (`toolrl.rollout.engines.factory`): `hf`
    (transformers, CPU or GPU; works everywhere, so the default), `vllm` (the vllm extra; the
    paper's recipes set it), `openai` (a served model at `server_url`), `scripted` (a Python
    function, `scripted_policy`). RL needs `hf` or `vllm`."""
    server_url: str = ""
    """`engine=openai`: the OpenAI-compatible server's base URL (http://HOST:PORT)."""
    server_api: Literal["completions", "chat"] = "completions"
    """`engine=openai`: `completions` sends and receives token ids (exact); `chat` sends messages."""
    server_timeout: float = 600.0
    """`engine=openai`: seconds one request may take (retried with backoff on 5xx and 429)."""
    server_max_concurrency: int = 16
    """`engine=openai`: requests in flight at once."""
    vllm_memory: float = 0.4
    """`engine=vllm`: the share of memory vLLM may take for weights and KV cache: of the GPU's
    (CUDA; the rest is the trainer's when they share it) or of the machine's (the CPU)."""
    scripted_policy: str = ""
    """`engine=scripted`: `module:function` or `path/to/file.py:function`, called with the
    context text, returning the next assistant turn's text (scripted teachers and tests)."""
    n: int = 16
    """Rollouts per prompt: the GRPO group size."""
    temperature: float = 1.0
    """Sampling temperature for training rollouts."""
    top_p: float = 1.0
    """Nucleus sampling for training rollouts (1.0 = off)."""
    top_k: int = 0
    """Top-k sampling for training rollouts (0 = off)."""
    max_turns: int = 16
    """Assistant turns per trajectory before it stops with `max_turns`."""
    max_response_length: int = 20480
    """Token budget of the whole response: sampled tokens and tool observations, as the paper counts."""
    max_tokens_per_turn: int = 0
    """Cap on one generation call (0 = only the remaining response budget limits it)."""
    max_parallel_calls: int = 1
    """Tool calls executed per assistant turn (the paper: 1); extra calls become an error observation."""
    trajectory_timeout: float = 0.0
    """Wall-clock seconds one trajectory may take before it stops with `timeout` (0 = no limit)."""
    branching: BranchingConfig = field(default_factory=BranchingConfig)
    """Entropy-guided branching rollouts (ARPO, AEPO); `mode: none` = independent samples."""


@dataclass
class ToolsConfig:
    """The tools the policy calls and the sandbox their code runs in (`toolrl.tools.registry`)."""

    enabled: list[str] = field(default_factory=lambda: ["code_interpreter"])
    """Built-in tools offered to the model, in order: `code_interpreter` (the paper's, stateless),
    `python_session` (variables persist across one trajectory's calls), `search` (BM25 over
    `search_index`). A dataset row may narrow them (`extra_info.tools_kwargs`)."""
    output_max_chars: int = 256
    """Tool observations are middle-truncated to this many characters before the model sees them."""
    timeout: float = 30.0
    """Wall-clock seconds a code_interpreter or python_session call may run (SandboxFusion's
    default run_timeout)."""
    memory_mb: int = 1024
    """Memory limit of one code_interpreter or python_session call."""
    max_concurrent: int = 64
    """Tool calls in flight at once across all trajectories."""
    sandbox_url: str = ""
    """A SandboxFusion (or `toolrl sandbox serve`) server for the code interpreter; empty = the
    local sandbox (isolation chosen at start: bubblewrap, else Landlock + seccomp)."""
    call_timeout: float = 120.0
    """Seconds any tool call may take before it is abandoned as an `infra_error` (masked from
    training); the code interpreter's own `timeout` stops a slow program well before. 0 = none."""
    search_index: str = ""
    """`search`: the directory `toolrl index build` wrote."""
    search_top_k: int = 3
    """`search`: passages returned per query (a row may set `top_k` in its create_kwargs)."""
    search_passage_chars: int = 400
    """`search`: each passage's text is cut to this many characters."""
    search_max_chars: int = 1500
    """`search`: the whole observation is middle-truncated to this many characters."""
    session_idle_timeout: float = 300.0
    """`python_session`: seconds a trajectory's interpreter may sit unused before it is stopped
    (its variables are then lost, and the next call says so)."""
    mcp_servers: dict[str, list[str]] = field(default_factory=dict)
    """MCP servers started over stdio, name → command line (`{calc: [python, calc.py]}`); every
    tool they list is offered. A server that dies or hangs is restarted; the calls it failed are
    `infra_error` observations."""
    mcp_timeout: float = 30.0
    """Seconds an MCP server may take to start or to answer one call."""


@dataclass
class ClusterConfig:
    """Where an RL run's processes are placed: one process, or a Ray cluster."""

    backend: Literal["local", "ray"] = "local"
    """`local`: one process; `ray`: rollout, sandbox and training workers placed by Ray."""
    nodes: int = 1
    """Machines in a Ray run."""
    gpus_per_node: int = 8
    """GPUs per machine in a Ray run (the paper: 8); 0 = a CPU run (gloo instead of NCCL)."""
    ranks_per_node: int = 0
    """Training processes per machine in a Ray run; 0 = one per GPU (one on a CPU run)."""
    rollout_workers: int = 0
    """Rollout workers (Ray actors, one engine each); 0 = one per training rank. On GPUs each
    takes half of a GPU, next to a training rank (colocated)."""
    sandbox_workers: int = 0
    """Code-interpreter workers (a Ray actor pool) serving every rollout worker; 0 = each
    rollout worker runs its tool calls in its own sandbox."""


@dataclass
class RolloutCorrectionConfig:
    """Correcting for the rollout engine's log-probs differing from the trainer's (vLLM's
    kernels, precisions, batch shapes), under verl's names; off by default. With
    ρ_t = π_old(y_t) / π_rollout(y_t) (π_old: the trainer's recomputed log-probs), see
    toolrl/algorithms/rollout_correction.py for the formulas."""

    rollout_is: Literal["token", "sequence"] | None = None
    """Importance weights on the policy loss: `token` w_t = min(ρ_t, C) (truncated IS, TIS);
    `sequence` w = min(Π_t ρ_t, C) on every token of the trajectory; null = none."""
    rollout_is_threshold: float = 2.0
    """C, the cap of the importance weights."""
    rollout_rs: Literal["token", "sequence", "geometric"] | None = None
    """Rejection: tokens (`token`: ρ_t), or whole trajectories (`sequence`: Π_t ρ_t;
    `geometric`: its geometric mean), outside [lower, upper] leave the loss and its
    denominator; null = none."""
    rollout_rs_threshold: float | None = None
    """The rejection's upper bound; null = `rollout_is_threshold`."""
    rollout_rs_threshold_lower: float | None = None
    """The rejection's lower bound; null = 1 / upper."""
    bypass_mode: bool = False
    """π_rollout is π_old: no recompute, the PPO ratio is π_θ / π_rollout (the same as
    `algorithm.old_log_probs=rollout`); importance weights and rejection then do not apply."""


@dataclass
class ResampleOnCorrectConfig:
    """GRPO-RoC (rStar2-Agent): oversample, then keep the correct trajectories with the cleanest
    tool use and a uniform draw of the wrong ones (toolrl/algorithms/resample.py); off by
    default."""

    enabled: bool = False
    """Roll out `oversample`·rollout.n trajectories a prompt and keep rollout.n."""
    oversample: int = 2
    """How many times rollout.n to roll out (the paper: 2)."""


@dataclass
class SelfImitationConfig:
    """SPEAR's self-imitation and tool-call reward curriculum (arXiv 2509.22601); off by default.
    Defaults are the release's SPEAR scripts (TencentYoutuResearch/SPEAR, run_*_spear.sh); the
    formulas are in toolrl/algorithms/self_imitation.py and toolrl/trainers/self_imitation.py."""

    enabled: bool = False
    """Keep the trajectories that beat their group and replay them with an imitation loss."""
    buffer_size: int = 2048
    """The most trajectories one replay trains on (the release's trajectory_buffer_size): the
    largest power of two of those whose recalibrated advantage is > 0. A replay happens once
    more than 1.5 × buffer_size held trajectories beat the baseline; the buffer is then emptied."""
    capacity: int = 4096
    """The most trajectories the buffer holds; beyond it the oldest leave first (FIFO)."""
    max_age: int = 5
    """Trajectories sampled more than this many steps ago leave the buffer (the release's
    trajectory_tolerate_steps)."""
    require_tool_call: bool = True
    """Admit only trajectories that called a tool (the release's rule), besides A > 0."""
    baseline_size: int = 10240
    """The baseline's history: the mean rewards of the last this many groups."""
    baseline_percentile: float = 50.0
    """b = this percentile of the history; replayed advantages are r − b (the release: median)."""
    loss_coef: float = 1.0
    """γ₀, the imitation loss's weight after warm-up (the release's replay_loss_coef)."""
    warmup_steps: int = 300
    """T: γ rises as γ₀·(1 − cos(π·t/T))/2 over the first T steps (max_replay_loss_steps)."""
    tool_reward: Literal["none", "constant", "cosine"] = "cosine"
    """The tool-call reward curriculum (use_toolcall_reward): its weight μ is 0, 1, or decays
    as (1 + cos(π·t/T))/2 to 0 at T = tool_reward_steps."""
    tool_reward_steps: int = 200
    """T of the `cosine` tool-call reward (max_toolcall_steps)."""
    tool_reward_per_call: float = 0.1
    """A failed trajectory's bonus per assistant turn that calls a tool."""
    tool_reward_cap: float = 1.0
    """The most a failed trajectory's tool-call bonus can be (before μ)."""


@dataclass
class AlgorithmConfig:
    advantage: Literal["grpo", "dr_grpo", "rloo"] = "grpo"
    """Advantage estimator: GRPO (r − mean)/(std + eps) over the group (the paper)."""
    adv_eps: float = 1e-6
    """The eps in the GRPO denominator."""
    policy_loss: Literal["ppo_clip", "gspo", "cispo", "aepo"] = "ppo_clip"
    """`ppo_clip` (token-level ratio: GRPO-T/TCR), `gspo` (sequence-level ratio: GRPO-SCR),
    `cispo` (clipped importance weight, every token keeps its gradient: MiniMax-M1) or `aepo`
    (ppo_clip with AEPO's gradient-preserving high clip and entropy-aware advantage)."""
    clip_ratio_low: float = 0.2
    """ε_low: the ratio is clipped below at 1 − ε_low."""
    clip_ratio_high: float = 0.28
    """ε_high: clip-higher, the ratio is clipped above at 1 + ε_high (the paper's final model: 0.315)."""
    clip_ratio_c: float = 10.0
    """Dual-clip constant c: for A < 0 the loss is bounded by c·|A| (PPO dual-clip, Ye et al. 2020)."""
    cispo_clip_low: float = 1.0
    """CISPO's ε_low: the importance weight is clipped below at 1 − ε_low (1: no lower bound,
    as MiniMax-M1)."""
    cispo_clip_high: float = 0.28
    """CISPO's ε_high: the importance weight is clipped above at 1 + ε_high."""
    aepo_entropy_advantage: float = 0.2
    """AEPO's α: a token's advantage is scaled by max(0, 1 + α·z), z its entropy standardised
    over its trajectory (0.2: the authors' code)."""
    loss_agg_mode: Literal[
        "token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"
    ] = "token-mean"
    """How per-token losses become one number; token-mean over the mini-batch is the paper's `T`."""
    kl_coef: float = 0.0
    """Weight of a KL(π‖π_ref) loss term; 0 = no reference model (the paper)."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    """Sample estimator of the KL term when kl_coef > 0."""
    entropy_coef: float = 0.0
    """Entropy bonus weight: the loss is pg_loss − entropy_coef · agg(entropy), aggregated like
    the policy loss (verl's entropy_coeff): > 0 rewards entropy, < 0 penalises it. 0 in the paper
    (entropy is logged and kept alive by clip-higher)."""
    filter_groups: bool = False
    """Drop groups whose rewards are all equal (DAPO dynamic sampling); off in the released recipe."""
    old_log_probs: Literal["auto", "recompute", "rollout"] = "auto"
    """π_old of the PPO ratio. `recompute`: a no-grad forward of the trainer over the step's rows
    before any update (verl's default; needed wherever the engine's numerics differ from the
    trainer's: vLLM, bf16 kernels). `rollout`: the log-probs the engine reported while sampling,
    log_softmax(logits / T) before truncation, which is the same quantity, and saves that
    forward. With the HF engine on the trainer's own model in the same dtype they agree to float
    rounding (tests/trainers/test_rl.py). `auto`: `rollout` exactly where that holds (the
    in-process HF engine sampling from the trained model itself, float32 on the CPU, no
    dropout), `recompute` everywhere else (`RLTrainer.old_log_probs_source`)."""
    rollout_correction: RolloutCorrectionConfig = field(default_factory=RolloutCorrectionConfig)
    """Importance weights and rejection for the rollout engine's mismatch (off by default)."""
    roc: ResampleOnCorrectConfig = field(default_factory=ResampleOnCorrectConfig)
    """GRPO-RoC resampling of each prompt's oversampled group (off by default)."""
    self_imitation: SelfImitationConfig = field(default_factory=SelfImitationConfig)
    """SPEAR's replay buffer, imitation loss and tool-call reward curriculum (off by default)."""


@dataclass
class RewardConfig:
    correct_score: float = 1.0
    """Outcome reward of a correct answer."""
    wrong_score: float = -1.0
    """Outcome reward of a wrong or missing answer (code: −1 when no code block is found)."""
    math_mode: Literal["strict", "equivalent"] = "strict"
    """`strict`: exact string of the last \\boxed{} (the paper); `equivalent`: math-verify."""
    code_execution: Literal["isolated", "official"] = "isolated"
    """How code tests run for RL rewards. `isolated`: a fresh sandboxed process per test, exit
    status 0 required, 1 GiB and 16 MiB output per test, returned values checked outside the
    sandbox (nothing the program returns is trusted). `official`: LiveCodeBench's own harness
    reproduced in the sandbox, quirks included (README, "LiveCodeBench grading")."""
    overlong_shaping: bool = True
    """DAPO soft overlong punishment on the response length."""
    overlong_buffer: int = 4096
    """L_buf: the penalty ramps from 0 at L_max − L_buf to −factor at L_max."""
    overlong_penalty_factor: float = 1.0
    """Size of the overlong penalty at L_max."""
    tool_shaping: bool = True
    """On a wrong answer with k completed tool calls: −1 + bonus·k, capped (released code meant it)."""
    tool_shaping_bonus: float = 0.1
    """Reward per completed tool call on a wrong answer."""
    tool_shaping_cap: float = -0.6
    """Upper bound of a shaped wrong-answer reward."""


@dataclass
class TrainerConfig:
    run_name: str = "demystify"
    """Run directory name under `output_dir`."""
    output_dir: str = "runs"
    """Where run directories are written."""
    seed: int = 42
    """Seeds data order, sampling and initialisation; the same seed gives the same run."""
    total_steps: int = 0
    """Optimizer steps to run (RL: one step = one batch of prompts); 0 = from `epochs`."""
    epochs: int = 1
    """Passes over the training data when total_steps is 0."""
    mode: Literal["sync", "async"] = "sync"
    """`sync`: each step rolls out, then trains (the paper). `async`: rollouts are generated
    ahead of the trainer on a copy of the weights (in this process, or on the Ray rollout
    workers with cluster.backend=ray), at most `max_staleness` versions behind
    (toolrl/rollout/async_rollout.py); π_old is then always recomputed."""
    max_staleness: int = 1
    """`mode=async`: k, how many weight versions behind the trainer a trajectory's oldest token
    may be when it is trained on (0 = the synchronous step, run by the producer)."""
    partial_rollouts: bool = True
    """`mode=async`: a weight update reaches trajectories in flight at their next turn (each
    turn records its version); false = the engine updates only between trajectories."""
    lr: float = 1e-6
    """Peak learning rate (AdamW)."""
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    """Learning-rate schedule after warmup."""
    warmup_ratio: float = 0.0
    """Fraction of the steps spent in linear warmup."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    grad_clip: float = 1.0
    """Global gradient-norm clip."""
    ppo_mini_batch_size: int = 16
    """Prompts per policy update (× rollout.n trajectories); 64 / 16 = 4 updates a step."""
    ppo_epochs: int = 1
    """Passes over a step's trajectories."""
    micro_batch_size: int = 4
    """Trajectories per forward/backward; accumulation keeps the aggregation exact."""
    logprob_micro_batch_size: int = 16
    """Trajectories per no-grad forward when recomputing old (and reference) log-probs, as
    verl's log_prob_micro_batch_size. A no-grad forward keeps no activations for a backward
    pass, so it fits more rows than a training micro-batch (4x micro_batch_size by default);
    lower it if this pass runs out of memory."""
    update_threads: int = 0
    """RL on the CPU: torch threads while old log-probs and policy updates run; 0 keeps the
    process's setting, −1 uses every core. No sandbox runs in those phases, so on a small
    machine where the rollout keeps cores free for the sandbox (`toolrl demo --threads`), the
    updates can still use them all."""
    val_every: int = 10
    """Validate every this many steps and after the last (0 = only after the last)."""
    save_every: int = 10
    """Checkpoint every this many steps and after the last (0 = only after the last)."""
    loggers: list[str] = field(default_factory=lambda: ["console", "jsonl"])
    """Metric sinks: console, jsonl (always written), tensorboard, wandb (offline works)."""


@dataclass
class EvalConfig:
    benchmarks: dict[str, str] = field(default_factory=dict)
    """Benchmark name → local file (aime24, aime25, gpqa_diamond, livecodebench_v6, humaneval)."""
    k: int = 32
    """Samples per problem for avg@k / pass@k / maj@k."""
    temperature: float = 1.0
    """Validation sampling temperature (the paper: 1.0)."""
    top_p: float = 0.6
    """Validation nucleus sampling (the paper: 0.6)."""
    bootstrap_resamples: int = 1000
    """Resamples for the verl-style best@k / maj@k and for confidence intervals."""
    bootstrap_seed: int = 42
    """Seed of the bootstrap, as verl's."""
    code_execution: Literal["official", "isolated"] = "official"
    """How evaluation runs code tests: `official` (LiveCodeBench's harness reproduced in the
    sandbox, so LiveCodeBench numbers compare with published ones) or `isolated` (as the RL
    reward, `reward.code_execution`). Summaries say which one produced a number."""


@dataclass
class Config:
    """The whole configuration; every command reads the sections it needs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)
