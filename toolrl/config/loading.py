"""Recipes and overrides into a checked `Config`: YAML with `base:` inheritance, dotted
command-line overrides, type checks against the schema, and errors that name the closest key.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from toolrl.config.schema import MOVED, SECTIONS, TOOL_NAMES, Config, ConfigError

_FLOAT_RE = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")

# ----------------------------------------------------------------------------------------------
# Building a Config from plain data


def from_dict(data: dict[str, Any], *, source: str = "<dict>") -> Config:
    """Build a checked Config from nested plain data (as read from YAML)."""
    config = _build(Config, data, path="", source=source)
    validate(config, source=source)
    return config


def _build(cls: type, data: Any, *, path: str, source: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: `{path or '<top>'}` must be a mapping of keys, got {type(data).__name__}"
        )
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key_path in MOVED:
            raise ConfigError(f"{source}: `{key_path}` {_moved(key_path)}")
        if key not in names:
            raise ConfigError(f"{source}: unknown key `{key_path}`{_suggest(key, names, path)}")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, path=key_path, source=source)
        else:
            kwargs[key] = _check_type(value, hint, key_path, source)
    return cls(**kwargs)


def _moved(old: str) -> str:
    section, name = MOVED[old].split(".")
    return f"has moved: it is `{MOVED[old]}` now (`{section}:` section, key `{name}`)"


def _suggest(key: str, names: list[str], path: str) -> str:
    close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
    prefix = f"{path}." if path else ""
    if close:
        return f"; did you mean `{prefix}{close[0]}`?"
    return f"; valid keys: {', '.join(names)}"


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _check_type(value: Any, hint: Any, path: str, source: str) -> Any:
    """Return `value` if it fits `hint` (int is accepted for float), else raise with the key path."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)

    def fail(expected: str) -> ConfigError:
        return ConfigError(
            f"{source}: `{path}` must be {expected}, got {value!r} ({type(value).__name__})"
        )

    if origin is Literal:
        if value not in args:
            raise fail("one of " + ", ".join(repr(a) for a in args))
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return _check_type(value, arg, path, source)
            except ConfigError:
                continue
        raise fail(" or ".join(_describe(a) for a in args))
    if origin is list:
        if not isinstance(value, list):
            raise fail(f"a list of {args[0].__name__}")
        return [_check_type(v, args[0], f"{path}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise fail("a mapping")
        return {
            _check_type(k, args[0], f"{path} key", source): _check_type(
                v, args[1], f"{path}.{k}", source
            )
            for k, v in value.items()
        }
    if hint is type(None):
        if value is not None:
            raise fail("null")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise fail("true or false")
        return value
    if hint is float:
        # YAML 1.1 reads `1e-6` (no dot) as a string; users mean a number.
        if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
            return float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail("a number")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise fail("a string")
        return value
    raise ConfigError(f"{source}: `{path}` has an unsupported type {hint!r} (a toolrl bug)")


def validate(config: Config, *, source: str = "<config>") -> None:
    """Cross-field checks that a type cannot express; raise ConfigError naming the keys."""
    a, r, ro, t = config.algorithm, config.reward, config.rollout, config.trainer
    problems = []
    if not 0 <= a.clip_ratio_low < 1:
        problems.append("`algorithm.clip_ratio_low` must be in [0, 1)")
    if a.clip_ratio_high < 0:
        problems.append("`algorithm.clip_ratio_high` must be >= 0")
    if a.clip_ratio_c <= 1:
        problems.append("`algorithm.clip_ratio_c` must be > 1 (dual-clip bound c·|A|)")
    if r.overlong_shaping and not 0 < r.overlong_buffer <= ro.max_response_length:
        problems.append(
            "`reward.overlong_buffer` must be in (0, rollout.max_response_length] "
            f"(got {r.overlong_buffer} and {ro.max_response_length}): lower the buffer, "
            "or set reward.overlong_shaping=false"
        )
    if ro.n < 1 or ro.max_turns < 1 or ro.max_parallel_calls < 1:
        problems.append(
            "`rollout.n`, `rollout.max_turns`, `rollout.max_parallel_calls` must be >= 1"
        )
    if not 0 < ro.top_p <= 1 or not 0 < config.eval.top_p <= 1:
        problems.append("`rollout.top_p` and `eval.top_p` must be in (0, 1]")
    for key, value in (("lr", t.lr), ("grad_clip", t.grad_clip)):
        if not value > 0:  # also catches NaN
            problems.append(f"`trainer.{key}` must be > 0, got {value:g}")
    if not t.weight_decay >= 0:
        problems.append(f"`trainer.weight_decay` must be >= 0, got {t.weight_decay:g}")
    if t.total_steps < 0 or t.epochs < 1:
        problems.append("`trainer.total_steps` must be >= 0 and `trainer.epochs` >= 1")
    if config.eval.k < 1:
        problems.append(f"`eval.k` (--k) must be >= 1, got {config.eval.k}")
    if not 0 <= t.warmup_ratio < 1:
        problems.append("`trainer.warmup_ratio` must be in [0, 1)")
    if t.micro_batch_size < 1 or t.ppo_mini_batch_size < 1:
        problems.append("`trainer.micro_batch_size` and `trainer.ppo_mini_batch_size` must be >= 1")
    if t.max_staleness < 0:
        problems.append("`trainer.max_staleness` must be >= 0")
    if t.mode == "async" and a.old_log_probs == "rollout":
        problems.append(
            "`trainer.mode=async` trains on trajectories of older weights: π_old must be "
            "recomputed (algorithm.old_log_probs=auto or recompute)"
        )
    if t.logprob_micro_batch_size < 1:
        problems.append("`trainer.logprob_micro_batch_size` must be >= 1")
    c = config.cluster
    if (
        c.nodes < 1
        or min(c.gpus_per_node, c.ranks_per_node, c.rollout_workers, c.sandbox_workers) < 0
    ):
        problems.append(
            "`cluster.nodes` must be >= 1, and `cluster.gpus_per_node`, `cluster.ranks_per_node`, "
            "`cluster.rollout_workers`, `cluster.sandbox_workers` >= 0"
        )
    problems += _rollout_correction_problems(a)
    problems += _neighbour_algorithm_problems(a)
    problems += _self_imitation_problems(a.self_imitation)
    problems += _tools_problems(config.tools)
    problems += _branching_problems(config)
    if problems:
        raise ConfigError(f"{source}: " + "; ".join(problems))


def _neighbour_algorithm_problems(a) -> list[str]:
    """CISPO's weight bounds and GRPO-RoC's oversampling."""
    problems = []
    if not 0 <= a.cispo_clip_low <= 1 or not a.cispo_clip_high >= 0:
        problems.append(
            "`algorithm.cispo_clip_low` must be in [0, 1] (1: no lower bound) and "
            "`algorithm.cispo_clip_high` >= 0"
        )
    if a.roc.enabled and a.roc.oversample < 2:
        problems.append(
            f"`algorithm.roc.oversample` must be >= 2 with algorithm.roc.enabled (got "
            f"{a.roc.oversample}): GRPO-RoC keeps rollout.n of oversample·rollout.n rollouts"
        )
    return problems


def _tools_problems(tools) -> list[str]:
    problems = []
    for i, name in enumerate(tools.enabled):
        if name not in TOOL_NAMES:
            close = difflib.get_close_matches(str(name), TOOL_NAMES, n=1, cutoff=0.5)
            hint = f"did you mean `{close[0]}`?" if close else f"tools: {', '.join(TOOL_NAMES)}"
            problems.append(f"`tools.enabled[{i}]`: unknown tool `{name}`; {hint}")
    if len(set(tools.enabled)) != len(tools.enabled):
        problems.append("`tools.enabled` lists a tool twice")
    if "search" in tools.enabled and not tools.search_index:
        problems.append(
            "`tools.enabled` has `search` but `tools.search_index` is empty: "
            "build one with `toolrl index build CORPUS --out DIR` and set tools.search_index=DIR"
        )
    if 0 < tools.call_timeout <= tools.timeout:
        problems.append(
            f"`tools.call_timeout` ({tools.call_timeout:g}s) must exceed `tools.timeout` "
            f"({tools.timeout:g}s), or a slow program would count as an infrastructure failure "
            "(masked) instead of the model's timeout; or set it to 0 (no limit)"
        )
    if min(tools.search_top_k, tools.search_passage_chars) < 1:
        problems.append("`tools.search_top_k` and `tools.search_passage_chars` must be >= 1")
    for name, command in tools.mcp_servers.items():
        if not command:
            problems.append(
                f"`tools.mcp_servers.{name}` must be a command line, e.g. [python, x.py]"
            )
    return problems


def _branching_problems(config) -> list[str]:
    b, n, name = config.rollout.branching, config.rollout.n, "`rollout.branching"
    if b.mode == "none":
        return []
    problems = []
    if n < 2:
        problems.append(f"{name}.mode={b.mode}` needs `rollout.n` >= 2 (global samples + branches)")
    if b.mode == "arpo" and not 0 <= b.initial_samples < n:
        problems.append(
            f"{name}.initial_samples` ({b.initial_samples}) must be in [0, rollout.n) = [0, {n}): "
            "the rest of rollout.n is the branch budget (0 = half of rollout.n)"
        )
    if b.entropy_tokens < 1 or b.branch_factor < 1:
        problems.append(f"{name}.entropy_tokens` and `{name[1:]}.branch_factor` must be >= 1")
    if not 0 <= b.branch_probability <= 1:
        problems.append(f"{name}.branch_probability` (α) must be in [0, 1]")
    if not (b.monitor_beta >= 0 and b.consecutive_penalty >= 0 and math.isfinite(b.entropy_weight)):
        problems.append(
            f"{name}.monitor_beta` and `consecutive_penalty` must be >= 0, `entropy_weight` finite"
        )
    if config.rollout.engine not in ("hf", "scripted"):
        problems.append(
            f"{name}` branches on the entropy of the sampling distribution, which only the `hf` "
            f"engine reports (vLLM returns top-k log-probs only): set rollout.engine=hf, or "
            f"{name[1:]}.mode=none`"
        )
    if config.trainer.mode == "async" or config.cluster.backend == "ray":
        problems.append(
            f"{name}` runs in the synchronous single-process rollout: it does not take "
            "trainer.mode=async or cluster.backend=ray yet"
        )
    if "python_session" in config.tools.enabled:
        problems.append(
            f"{name}`: a branch cannot copy its parent's `python_session` interpreter (its "
            "variables), so its prefix would not match its tool: use code_interpreter"
        )
    return problems


def _rollout_correction_problems(a) -> list[str]:
    rc, name = a.rollout_correction, "`algorithm.rollout_correction"
    problems = []
    if rc.rollout_is_threshold <= 0:
        problems.append(f"{name}.rollout_is_threshold` must be > 0")
    upper = rc.rollout_is_threshold if rc.rollout_rs_threshold is None else rc.rollout_rs_threshold
    lower = 1 / upper if rc.rollout_rs_threshold_lower is None else rc.rollout_rs_threshold_lower
    if rc.rollout_rs is not None and not 0 <= lower <= 1 <= upper:
        problems.append(
            f"{name}.rollout_rs_threshold_lower` <= 1 <= `rollout_rs_threshold` must hold "
            f"(got {lower} and {upper})"
        )
    if rc.bypass_mode and (rc.rollout_is or rc.rollout_rs):
        problems.append(
            f"{name}.bypass_mode` uses π_rollout as π_old, so there is no π_old/π_rollout to "
            "weight or reject by: set rollout_is and rollout_rs to null, or bypass_mode=false"
        )
    if rc.bypass_mode and a.old_log_probs == "recompute":
        problems.append(f"{name}.bypass_mode=true` contradicts `algorithm.old_log_probs=recompute`")
    if (rc.rollout_is or rc.rollout_rs) and a.old_log_probs == "rollout":
        problems.append(
            "rollout correction weighs π_old (recomputed by the trainer) against π_rollout; "
            "`algorithm.old_log_probs=rollout` makes them the same: use recompute or auto"
        )
    return problems


def _self_imitation_problems(si) -> list[str]:
    name = "`algorithm.self_imitation"
    problems = []
    if si.buffer_size < 1 or si.baseline_size < 1:
        problems.append(f"{name}.buffer_size` and `{name[1:]}.baseline_size` must be >= 1")
    if si.capacity <= 1.5 * si.buffer_size:
        problems.append(
            f"{name}.capacity` ({si.capacity}) must exceed 1.5 × buffer_size "
            f"({1.5 * si.buffer_size:g}): a replay starts once more than that many held "
            "trajectories beat the baseline, so a smaller buffer would never replay"
        )
    if si.max_age < 0 or si.warmup_steps < 0:
        problems.append(f"{name}.max_age` and `{name[1:]}.warmup_steps` must be >= 0")
    if not 0 <= si.baseline_percentile <= 100:
        problems.append(f"{name}.baseline_percentile` must be in [0, 100]")
    for key in ("loss_coef", "tool_reward_per_call", "tool_reward_cap"):
        if not getattr(si, key) >= 0:  # also catches NaN
            problems.append(f"{name}.{key}` must be >= 0, got {getattr(si, key):g}")
    if si.tool_reward == "cosine" and si.tool_reward_steps < 1:
        problems.append(f"{name}.tool_reward_steps` must be >= 1 for tool_reward=cosine")
    return problems


def check_rl(config: Config) -> None:
    """Checks that only an RL run needs (SFT shares `data.train_batch_size` differently)."""
    data, trainer = config.data, config.trainer
    if data.train_batch_size % trainer.ppo_mini_batch_size:
        raise ConfigError(
            f"`data.train_batch_size` ({data.train_batch_size}) must be a multiple of "
            f"`trainer.ppo_mini_batch_size` ({trainer.ppo_mini_batch_size}) for RL"
        )


# ----------------------------------------------------------------------------------------------
# Recipes and overrides


def load_recipe(path: str | Path) -> dict[str, Any]:
    """Read a recipe YAML into nested plain data, resolving `base:` chains (child keys win)."""
    path = resolve_recipe_path(path)
    seen: list[Path] = []
    return _load_with_bases(path, seen)


def _load_with_bases(path: Path, seen: list[Path]) -> dict[str, Any]:
    if path in seen:
        chain = " -> ".join(str(p) for p in [*seen, path])
        raise ConfigError(f"recipe `base:` chain loops: {chain}")
    seen.append(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of sections")
    base = data.pop("base", None)
    if base is None:
        return data
    parent = _load_with_bases((path.parent / base).resolve(), seen)
    return _deep_merge(parent, data)


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def resolve_recipe_path(name: str | Path) -> Path:
    """A recipe path as given, or a name found in the repository's `recipes/` directory."""
    candidates = [Path(name)]
    if not str(name).endswith((".yaml", ".yml")):
        candidates.append(Path(f"{name}.yaml"))
    recipes_dir = Path(__file__).resolve().parents[2] / "recipes"  # toolrl/config/ → the repo
    candidates += [recipes_dir / c.name for c in list(candidates)]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(f"recipe not found: {name} (looked in ., and {recipes_dir})")


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides (`section.group.key=value` inside a nested group,
    e.g. `algorithm.rollout_correction.rollout_is=token`) to nested plain data; values are YAML
    scalars. Keys are checked against the schema here so a typo fails before anything runs.
    """
    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        parts = key.split(".")
        if not sep or len(parts) < 2 or not all(parts):
            raise ConfigError(
                f"override `{item}` must look like section.key=value "
                "(e.g. algorithm.clip_ratio_high=0.315)"
            )
        if parts[0] not in SECTIONS:
            raise ConfigError(
                f"override `{item}`: unknown section `{parts[0]}`"
                + _suggest(parts[0], list(SECTIONS), "")
            )
        if key in MOVED:
            raise ConfigError(f"override `{item}`: `{key}` {_moved(key)}")
        cls, target = _section_cls(parts[0]), data
        for depth, name in enumerate(parts[1:], start=1):
            hints, where = typing.get_type_hints(cls), ".".join(parts[:depth])
            if name not in hints:
                raise ConfigError(
                    f"override `{item}`: unknown key `{where}.{name}`"
                    + _suggest(name, list(hints), where)
                )
            target = target.setdefault(parts[depth - 1], {})
            if not isinstance(target, dict):
                raise ConfigError(f"override `{item}`: `{where}` is not a mapping")
            if depth < len(parts) - 1:
                if not dataclasses.is_dataclass(hints[name]):
                    raise ConfigError(f"override `{item}`: `{where}.{name}` has no keys inside")
                cls = hints[name]
                continue
            if dataclasses.is_dataclass(hints[name]):
                raise ConfigError(
                    f"override `{item}`: `{key}` is a group; set its keys ({key}.KEY=value)"
                )
            target[name] = _check_type(
                _parse_scalar(raw, hints[name]), hints[name], key, f"override `{item}`"
            )
    return data


def _section_cls(name: str) -> type:
    return typing.get_type_hints(Config)[name]


def _parse_scalar(raw: str, hint: Any) -> Any:
    # A string field keeps the text as typed, so `model.path=123` or `trainer.run_name=1e-3`
    # stay strings; everything else is read as YAML (numbers, booleans, [lists], {maps}).
    if hint is str:
        return raw
    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw


def load_config(recipe: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """The resolved Config: the paper's defaults, then the recipe, then the overrides."""
    data = load_recipe(recipe) if recipe is not None else {}
    data = apply_overrides(data, overrides or [])
    source = str(resolve_recipe_path(recipe)) if recipe is not None else "<defaults>"
    return from_dict(data, source=source)
