"""Loading the policy: a local HF checkpoint (or the embedded tiny model), optionally with LoRA."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch


def resolve_model_path(path: str, run_dir: Path) -> Path:
    """A local checkpoint directory; `tiny` builds the embedded model into the run directory."""
    if path == "tiny":
        from toolrl.models.tiny import write_tiny

        target = Path(run_dir) / "base_model"
        if not (target / "config.json").is_file():
            write_tiny(target, seed=0)
        return target
    local = Path(path)
    if not (local / "config.json").is_file():
        raise FileNotFoundError(
            f"model.path {path!r} is not a local checkpoint directory (no config.json there). "
            "toolrl never downloads weights: give the path of a model saved with save_pretrained, "
            "or `tiny` for the embedded model."
        )
    return local


def load_policy(path: Path, model_cfg, *, device: str = "cpu", adapter_path: Path | None = None):
    """(model, tokenizer) ready to train: dtype from config, LoRA adapters when lora_rank > 0.

    `adapter_path` resumes a LoRA run from saved PEFT adapters on top of the base at `path`.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, model_cfg.dtype)).to(
        device
    )
    if model_cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if model_cfg.lora_rank > 0:
        from peft import LoraConfig, PeftModel, get_peft_model

        if adapter_path is not None:
            model = PeftModel.from_pretrained(model, adapter_path, is_trainable=True)
        else:
            lora = LoraConfig(
                r=model_cfg.lora_rank,
                lora_alpha=model_cfg.lora_alpha,
                target_modules=list(model_cfg.lora_target_modules),
                task_type="CAUSAL_LM",
            )
            model = get_peft_model(model, lora)
    return model, tokenizer


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's CPU threads set to `count` inside the block (0: unchanged; −1: every core)."""
    before = torch.get_num_threads()
    if count:
        torch.set_num_threads((os.cpu_count() or 1) if count < 0 else count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
