"""The RL maths: advantages, policy losses and their aggregation, KL, entropy, reward shaping,
and the group stages (GRPO-RoC's resampling).

Pure functions over torch tensors, each with its formula and paper in its docstring, registered
by name in plain dicts (`ADVANTAGE_ESTIMATORS`, `POLICY_LOSSES`, `LOSS_AGG_MODES`,
`KL_ESTIMATORS`); the `get_*` functions look a name up and say what the valid names are, and
`with_config` gives a looked-up function the settings it takes from the algorithm config.
"""

from toolrl.algorithms.advantages import (
    ADVANTAGE_ESTIMATORS,
    broadcast_to_tokens,
    dr_grpo_advantages,
    get_advantage_estimator,
    grpo_advantages,
    rloo_advantages,
)
from toolrl.algorithms.binding import config_fields_read, with_config
from toolrl.algorithms.kl import KL_ESTIMATORS, get_kl_estimator, kl_k1, kl_k2, kl_k3
from toolrl.algorithms.losses import (
    LOSS_AGG_MODES,
    POLICY_LOSSES,
    aepo_loss,
    agg_loss,
    cispo_loss,
    entropy_from_log_probs,
    entropy_from_logits,
    get_policy_loss,
    gspo_loss,
    num_valid_seqs,
    num_valid_tokens,
    ppo_clip_loss,
    reads_entropy,
)
from toolrl.algorithms.masked import masked_mean, masked_sum
from toolrl.algorithms.resample import RoCStats, resample_on_correct
from toolrl.algorithms.rollout_correction import MismatchTally, correct, correction_rates
from toolrl.algorithms.self_imitation import (
    group_mean_rewards,
    recalibrated_advantages,
    replay_count,
    reward_baseline,
    self_imitation_loss,
    warmup_weight,
)
from toolrl.algorithms.shaping import (
    overlong_penalty,
    tool_call_curriculum,
    tool_call_shaping,
    tool_curriculum_weight,
)

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "KL_ESTIMATORS",
    "LOSS_AGG_MODES",
    "POLICY_LOSSES",
    "MismatchTally",
    "RoCStats",
    "aepo_loss",
    "agg_loss",
    "broadcast_to_tokens",
    "cispo_loss",
    "config_fields_read",
    "correct",
    "correction_rates",
    "dr_grpo_advantages",
    "entropy_from_log_probs",
    "entropy_from_logits",
    "get_advantage_estimator",
    "get_kl_estimator",
    "get_policy_loss",
    "group_mean_rewards",
    "grpo_advantages",
    "gspo_loss",
    "kl_k1",
    "kl_k2",
    "kl_k3",
    "masked_mean",
    "masked_sum",
    "num_valid_seqs",
    "num_valid_tokens",
    "overlong_penalty",
    "ppo_clip_loss",
    "reads_entropy",
    "recalibrated_advantages",
    "replay_count",
    "resample_on_correct",
    "reward_baseline",
    "rloo_advantages",
    "self_imitation_loss",
    "tool_call_curriculum",
    "tool_call_shaping",
    "tool_curriculum_weight",
    "warmup_weight",
    "with_config",
]
