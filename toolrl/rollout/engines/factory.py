"""`build_engine`: the one place an engine is made from a config, for every command.

`rollout.engine` means the same in `toolrl rl`, `rollout`, `eval`, `serve`, `data collect`,
`data filter`, the demo and the Ray workers:

| engine | what generates | `model_path` is | settings |
|---|---|---|---|
| `hf` | transformers in this process (CPU or GPU, `device`) | the checkpoint | — |
| `vllm` | vLLM (the `vllm` extra) | the checkpoint | `model.dtype`, `trainer.seed` |
| `openai` | an OpenAI-compatible server (vLLM, `toolrl serve`, ...) | the served model's tokenizer | `rollout.server_url`, `rollout.server_api` |
| `scripted` | a Python function `context_text -> turn_text` | a tokenizer (`tiny`: the embedded one) | `rollout.scripted_policy` |

RL needs an engine that follows the trained policy (`PolicyEngine`: `hf`, `vllm`); a command
given one it cannot use gets an `EngineError` that says which it can.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from toolrl.rollout.engines.base import Engine

ENGINES = ("hf", "vllm", "openai", "scripted")
POLICY_ENGINES = ("hf", "vllm")
"""Engines that can follow the trained policy through an RL run."""


class EngineError(ValueError):
    """An engine that cannot be built, or cannot serve this command; the message says why."""


def build_engine(
    config,
    model_path: str | Path | None,
    *,
    tokenizer=None,
    model=None,
    device: str = "cpu",
    seed: int | None = None,
    tool_schemas: list[dict] | None = None,
    purpose: str = "",
    needs_policy: bool = False,
    api_key: str | None = None,
    hf_options: dict[str, Any] | None = None,
) -> Engine:
    """The engine `config.rollout.engine` names.

    `model`: the trained model itself, for RL in this process (`hf` decodes with it; `vllm`
    follows its weights). `tokenizer` defaults to the one at `model_path`. `seed` defaults to
    `trainer.seed`. `purpose` names the command in errors; `needs_policy` refuses engines that
    cannot follow a trained policy (`openai`, `scripted`). `api_key`: the server's, for `openai`
    (never part of a config: configs are written into run directories). `hf_options` go to
    `HFEngine.from_path` (`dtype`, `max_batch_size`: what `toolrl serve` sets).
    """
    name, rollout = config.rollout.engine, config.rollout
    seed = config.trainer.seed if seed is None else seed
    if name not in ENGINES:
        raise EngineError(f"rollout.engine={name!r} is not an engine; valid: {list(ENGINES)}")
    if needs_policy and name not in POLICY_ENGINES:
        raise EngineError(
            f"{purpose or 'this command'} cannot use rollout.engine={name}: it trains a policy, "
            f"and only {' or '.join(POLICY_ENGINES)} can follow its weights"
        )
    if name == "hf":
        return _hf_engine(model_path, model, tokenizer, device, seed, hf_options or {})
    if name == "vllm":
        from toolrl.rollout.engines.vllm import VLLMEngine

        path = model_path if model is None else getattr(model, "name_or_path", model_path)
        engine = VLLMEngine.from_config(config, path)
        return engine if model is None else engine.follow(model)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(str(model_path or "tiny"))
    if name == "openai":
        return _openai_engine(rollout, tokenizer, tool_schemas, api_key)
    from toolrl.rollout.engines.scripted import ScriptedEngine

    if not rollout.scripted_policy:
        raise EngineError(
            "rollout.engine=scripted needs rollout.scripted_policy=module:function "
            "(or path/to/file.py:function)"
        )
    return ScriptedEngine(tokenizer, load_script(rollout.scripted_policy))


def _hf_engine(model_path, model, tokenizer, device: str, seed: int, options: dict) -> Engine:
    from toolrl.rollout.engines.hf import HFEngine

    if model is not None:
        pad = (tokenizer.pad_token_id if tokenizer is not None else None) or 0
        return HFEngine(model, pad_token_id=pad, seed=seed)
    if model_path is None or not (Path(model_path) / "config.json").is_file():
        raise EngineError(
            f"rollout.engine=hf needs a local checkpoint directory; {model_path} has no config.json"
        )
    return HFEngine.from_path(str(model_path), device=device, seed=seed, **options)


def _openai_engine(rollout, tokenizer, tool_schemas, api_key) -> Engine:
    from toolrl.rollout.engines.openai import OpenAIEngine, OpenAIEngineError

    if not rollout.server_url:
        raise EngineError("rollout.engine=openai needs rollout.server_url=http://HOST:PORT")
    engine = OpenAIEngine(
        rollout.server_url,
        tokenizer,
        api=rollout.server_api,
        tools=tool_schemas,
        timeout=rollout.server_timeout,
        max_concurrency=rollout.server_max_concurrency,
        api_key=api_key,
    )
    try:
        engine.check()  # fail now, not mid-rollout, when the server is unreachable
    except OpenAIEngineError as err:
        raise EngineError(str(err)) from err
    return engine


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")


def load_tokenizer(path: str):
    """A tokenizer from a directory, or the embedded one for `tiny`."""
    if path == "tiny":
        from toolrl.models.tiny import build_tokenizer

        return build_tokenizer()
    if not Path(path).is_dir():
        raise EngineError(f"{path}: no such model or tokenizer directory")
    if not any((Path(path) / name).is_file() for name in TOKENIZER_FILES):
        raise EngineError(
            f"{path}: not a tokenizer directory (none of {', '.join(TOKENIZER_FILES)} is there)"
        )
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise EngineError(f"{path}: the tokenizer cannot be loaded ({err})") from None


def load_script(target: str) -> Callable[[str], str]:
    """`module:function` or `path/to/file.py:function` -> the function (a scripted policy)."""
    where, sep, name = target.rpartition(":")
    if not sep or not where or not name:
        raise EngineError(f"scripted policy {target!r}: expected module:function")
    module: Any
    if where.endswith(".py"):
        path = Path(where)
        if not path.is_file():
            raise EngineError(f"scripted policy: no such file {path}")
        spec = importlib.util.spec_from_file_location(f"toolrl_policy_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    else:
        module = importlib.import_module(where)
    policy = getattr(module, name, None)
    if not callable(policy):
        raise EngineError(f"scripted policy: {where} has no function {name!r}")
    return policy
