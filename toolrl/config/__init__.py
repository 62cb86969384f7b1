"""Typed configuration: dataclass sections, YAML recipes, dotted overrides.

A recipe is a YAML file whose top-level keys are the sections below (`model`, `data`, `rollout`,
`tools`, `algorithm`, `reward`, `trainer`, `eval`, `cluster`). A recipe may start from another one with
`base: other.yaml` (a path relative to the recipe) and override only what differs, so a variant
such as GRPO-T is a few lines. Command-line overrides use dotted keys:
`algorithm.clip_ratio_high=0.315`. Values are parsed as YAML scalars and type-checked against the
dataclass field; an unknown key fails with the closest valid name.

Every default is the paper's (arXiv 2510.11701, Open-AgentRL's GRPO-TCR recipe for Qwen3-4B)
unless its comment says otherwise, so `Config()` *is* the paper's RL recipe.

`schema.py` holds the sections, `loading.py` turns recipes and overrides into them.
"""

from toolrl.config.loading import (
    apply_overrides,
    check_rl,
    from_dict,
    load_config,
    load_recipe,
    resolve_recipe_path,
    validate,
)
from toolrl.config.schema import (
    MOVED,
    SECTIONS,
    AlgorithmConfig,
    ClusterConfig,
    Config,
    ConfigError,
    DataConfig,
    EvalConfig,
    ModelConfig,
    RewardConfig,
    RolloutConfig,
    ToolsConfig,
    TrainerConfig,
)

__all__ = [
    "MOVED",
    "SECTIONS",
    "AlgorithmConfig",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "RewardConfig",
    "RolloutConfig",
    "ToolsConfig",
    "TrainerConfig",
    "apply_overrides",
    "check_rl",
    "from_dict",
    "load_config",
    "load_recipe",
    "resolve_recipe_path",
    "validate",
]
