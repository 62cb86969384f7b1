"""`toolrl sft RECIPE [overrides]`, `toolrl rl RECIPE [overrides]` (both with --resume), and
`toolrl export` (merge LoRA adapters into a plain HF checkpoint)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    for name, help_text in (
        ("sft", "cold-start SFT on multi-turn tool-use conversations"),
        ("rl", "agentic RL (GRPO-TCR by default) with the sandboxed code interpreter"),
    ):
        parser = subparsers.add_parser(
            name,
            help=help_text,
            description=f"{help_text}. Run directory: trainer.output_dir/trainer.run_name.",
        )
        parser.add_argument("recipe", help="recipe path or name in recipes/")
        parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. trainer.lr=1e-6")
        parser.add_argument(
            "--resume", action="store_true", help="continue from the last complete checkpoint"
        )
        parser.add_argument(
            "--overwrite",
            action="store_true",
            help="the run directory holds an old run: move it aside (to NAME.old-N) and start anew",
        )
        parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
        parser.set_defaults(handler=run_sft if name == "sft" else run_rl)
    export = subparsers.add_parser("export", help="merge LoRA adapters into a plain HF checkpoint")
    export.add_argument(
        "adapter", help="a checkpoint directory with PEFT adapters (checkpoints/step_N)"
    )
    export.add_argument("out", help="output directory for the merged model")
    export.set_defaults(handler=run_export)


def _config(args):
    from toolrl.config import load_config

    return load_config(args.recipe, args.overrides)


def run_sft(args: argparse.Namespace) -> int:
    from toolrl.trainers.sft import run_sft as train

    return _train("sft", lambda config: train(config, resume=args.resume, device=args.device), args)


def run_rl(args: argparse.Namespace) -> int:
    from toolrl.distributed.launch import fit_on_backend

    def train(config):
        return fit_on_backend(config, resume=args.resume, device=args.device)

    return _train("rl", train, args)


def _train(name: str, train, args: argparse.Namespace) -> int:
    """Load the config, train, and turn user errors into a message and exit code 2."""
    from toolrl.config import ConfigError
    from toolrl.data.io import DataError
    from toolrl.rollout.engines.factory import EngineError
    from toolrl.trainers.checkpoint import RunDirInUse, claim_run_dir

    try:
        config = _config(args)
        if args.resume and args.overwrite:
            raise ConfigError("--resume and --overwrite contradict each other: give one")
        run_dir = Path(config.trainer.output_dir) / config.trainer.run_name
        aside = claim_run_dir(run_dir, resume=args.resume, overwrite=args.overwrite)
        if aside is not None:
            print(f"note: moved the old run in {run_dir} to {aside}", file=sys.stderr)
        run_dir = train(config)
    except (ConfigError, DataError, EngineError, FileNotFoundError, RunDirInUse) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{name} finished: {run_dir}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = Path(args.adapter)
    config_file = adapter / "adapter_config.json"
    if not config_file.is_file():
        print(
            f"error: {adapter} has no adapter_config.json (not a LoRA checkpoint)", file=sys.stderr
        )
        return 2
    base_path = json.loads(config_file.read_text())["base_model_name_or_path"]
    base = AutoModelForCausalLM.from_pretrained(base_path)
    merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    merged.save_pretrained(args.out)
    AutoTokenizer.from_pretrained(adapter).save_pretrained(args.out)
    print(f"merged {adapter} into {base_path} -> {args.out}")
    return 0
