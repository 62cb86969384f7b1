"""`toolrl data collect | stitch | filter | stats | convert`: build and inspect SFT and RL data.

- `collect`: real end-to-end SFT trajectories from a teacher (`toolrl.data.collect`);
- `stitch`: the paper's stitched baseline from text-only solutions (`toolrl.data.stitch`);
- `filter`: model-aware RL data by pass rate and difficulty (`toolrl.data.filter`);
- `stats`: size, sources, lengths, difficulty, near-duplicates (`toolrl.data.stats`);
- `convert`: verl parquet <-> toolrl jsonl, lossless (`toolrl.data.convert`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("data", help="build and inspect SFT and RL data")
    commands = parser.add_subparsers(dest="data_command", metavar="COMMAND")
    parser.set_defaults(handler=lambda args: parser.print_help() or 2)
    _register_collect(commands)
    _register_stitch(commands)
    _register_filter(commands)
    _register_stats(commands)
    _register_convert(commands)
    from toolrl.commands.tasks import register as register_tasks  # `data tasks`

    register_tasks(commands)


def _engine_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer directory, or `tiny` (required for a URL; default: the checkpoint's own, "
        "or tiny for a scripted teacher)",
    )
    parser.add_argument(
        "--api",
        choices=["completions", "chat"],
        default="completions",
        help="for a URL: completions with token ids (exact; toolrl serve, vLLM) or chat "
        "completions with tools (any server; see toolrl/rollout/engines/openai.py for what is lost)",
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds per request, retries included"
    )
    parser.add_argument(
        "--max-concurrency", type=int, default=16, help="requests in flight to a URL"
    )
    parser.add_argument(
        "--api-key-env", default=None, help="environment variable holding an API key"
    )
    parser.add_argument("--limit", type=int, default=0, help="only the first N tasks (0 = all)")
    parser.add_argument(
        "--recipe", default=None, help="recipe whose rollout and reward sections to use"
    )
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. rollout.max_turns=4")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--device", default="cpu", help="torch device for a local checkpoint")


def _register_collect(commands) -> None:
    p = commands.add_parser(
        "collect",
        help="real end-to-end SFT trajectories from a teacher with the sandbox",
        description=(
            "Run the teacher n times per task through the agent loop with the sandboxed code "
            "interpreter, grade each trajectory with toolrl's graders, keep the correct ones (or "
            "all, with scores), deduplicate, and write `messages` + `tools` rows for `toolrl sft`. "
            "TEACHER is a URL (http://127.0.0.1:8000), a local checkpoint directory, or "
            "scripted:module:function / scripted:file.py:function (a Python policy)."
        ),
    )
    p.add_argument(
        "--teacher", required=True, help="URL, checkpoint directory, or scripted:MODULE:FUNCTION"
    )
    p.add_argument("--tasks", required=True, help="tasks in the RL schema (.jsonl or .parquet)")
    p.add_argument("--n", type=int, default=4, help="trajectories per task (default 4)")
    p.add_argument("--out", required=True, help="output .jsonl (SFT rows)")
    p.add_argument(
        "--keep", choices=["correct", "all"], default="correct", help="which trajectories to keep"
    )
    p.add_argument(
        "--min-tool-calls", type=int, default=0, help="drop kept rows with fewer tool calls"
    )
    p.add_argument("--no-dedupe", action="store_true", help="keep duplicate conversations")
    p.add_argument("--stats", default=None, help="statistics .json (default: OUT with .stats.json)")
    _engine_arguments(p)
    p.set_defaults(handler=run_collect)


def _register_stitch(commands) -> None:
    p = commands.add_parser(
        "stitch",
        help="the paper's stitched baseline from text-only solutions",
        description=(
            "Split each text-only solution into steps and insert code_interpreter calls with "
            "outputs after steps that state arithmetic; the outputs are the values the text "
            "claims (or, with --execute, what the sandbox prints), never read by the writer of "
            "the reasoning. Input: `prompt` or `problem` rows with a solution column, or SFT rows "
            "whose last assistant message has no tool call."
        ),
    )
    p.add_argument(
        "--data", required=True, help="rows with text-only solutions (.jsonl or .parquet)"
    )
    p.add_argument("--out", required=True, help="output .jsonl (SFT rows)")
    p.add_argument("--solution-column", default=None, help="column with the solution text")
    p.add_argument("--max-calls", type=int, default=3, help="tool calls inserted per solution (3)")
    p.add_argument(
        "--execute", action="store_true", help="outputs from running the code in the sandbox"
    )
    p.add_argument(
        "--keep-unstitched", action="store_true", help="keep rows where nothing was inserted"
    )
    p.add_argument("--recipe", default=None, help="recipe whose rollout section sets the tool")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. tools.output_max_chars=512")
    p.set_defaults(handler=run_stitch)


def _register_filter(commands) -> None:
    p = commands.add_parser(
        "filter",
        help="model-aware RL data: pass rates, drop 0%% and 100%%, difficulty labels",
        description=(
            "Roll each problem out k times under the model, grade, and keep the problems it "
            "neither always nor never solves, labelled easy (pass rate >= --easy), hard "
            "(<= --hard) or medium; optionally resample to a target difficulty histogram. Writes "
            "the filtered rows (with extra_info.pass_rate and extra_info.difficulty), the "
            "per-problem pass rates and a histogram plot."
        ),
    )
    p.add_argument(
        "--model", required=True, help="checkpoint directory, URL, or scripted:MODULE:FUNCTION"
    )
    p.add_argument("--data", required=True, help="RL rows (.jsonl or .parquet)")
    p.add_argument("--k", type=int, default=8, help="rollouts per problem (default 8)")
    p.add_argument("--out", required=True, help="filtered rows (.jsonl or .parquet)")
    p.add_argument("--easy", type=float, default=0.75, help="easy when pass rate >= this (0.75)")
    p.add_argument("--hard", type=float, default=0.25, help="hard when pass rate <= this (0.25)")
    p.add_argument(
        "--target", default=None, help="resample to a histogram, e.g. easy=0.2,medium=0.5,hard=0.3"
    )
    p.add_argument(
        "--size", type=int, default=None, help="with --target: rows to draw (repeats if needed)"
    )
    p.add_argument(
        "--rates", default=None, help="per-problem pass rates .jsonl (default OUT.pass_rates.jsonl)"
    )
    p.add_argument("--plot", default=None, help="histogram .png (default OUT.pass_rates.png)")
    _engine_arguments(p)
    p.set_defaults(handler=run_filter)


def _register_stats(commands) -> None:
    p = commands.add_parser(
        "stats",
        help="size, sources, lengths, difficulty and near-duplicates of a data file",
        description=(
            "Statistics of an RL (`prompt`) or SFT (`messages`) file. Near-duplicates: Jaccard "
            "similarity >= --threshold of normalised character n-gram sets, MinHash-LSH "
            "candidates confirmed exactly."
        ),
    )
    p.add_argument("file", metavar="FILE", help=".jsonl or .parquet")
    p.add_argument(
        "--tokenizer", default=None, help="tokenizer directory or `tiny`: adds token lengths"
    )
    p.add_argument(
        "--threshold", type=float, default=0.8, help="near-duplicate Jaccard threshold (0.8)"
    )
    p.add_argument("--ngram", type=int, default=5, help="character n-gram size (5)")
    p.add_argument("--json", default=None, help="also write the statistics to this .json")
    p.set_defaults(handler=run_stats)


def _register_convert(commands) -> None:
    p = commands.add_parser(
        "convert",
        help="verl parquet <-> toolrl jsonl, lossless both ways",
        description=(
            "Convert by extension. parquet -> jsonl also writes NAME.arrow-schema.json so the "
            "way back restores the exact Arrow schema; jsonl -> parquet stores a column as JSON "
            "strings (listed in the file metadata) when Arrow would not give its values back "
            "exactly. Rows are checked against the RL (`prompt`) or SFT (`messages`) schema."
        ),
    )
    p.add_argument("src", metavar="SRC", help=".parquet or .jsonl")
    p.add_argument("dst", metavar="DST", help=".jsonl or .parquet")
    p.add_argument("--no-validate", action="store_true", help="skip the RL / SFT schema check")
    p.set_defaults(handler=run_convert)


# ----------------------------------------------------------------------------------------------
# Handlers


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _teacher(spec: str, config, args):
    import os

    from toolrl.data.collect import load_teacher

    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    if args.api_key_env and not api_key:
        raise ValueError(f"--api-key-env {args.api_key_env}: that environment variable is not set")
    return load_teacher(
        spec,
        config,
        tokenizer=args.tokenizer,
        api=args.api,
        device=args.device,
        seed=args.seed,
        timeout=args.timeout,
        max_concurrency=args.max_concurrency,
        api_key=api_key,
    )


def _close(teacher) -> None:
    teacher.tools.close()
    teacher.engine.close()


def _with_suffix(path: str, suffix: str) -> Path:
    out = Path(path)
    return out.with_name(out.name.removesuffix(out.suffix) + suffix)


def run_collect(args: argparse.Namespace) -> int:
    import json

    from toolrl.config import ConfigError, load_config
    from toolrl.data.collect import check_sft_rows, collect
    from toolrl.data.io import DataError, write_jsonl
    from toolrl.data.rl import load_rl_samples
    from toolrl.rollout.agent_loop import settings_from_config
    from toolrl.rollout.engines.openai import OpenAIEngineError

    try:
        config = load_config(args.recipe, args.overrides)
        samples = load_rl_samples(args.tasks)
        teacher = _teacher(args.teacher, config, args)
    except (ConfigError, DataError, ValueError, OpenAIEngineError, OSError) as err:
        return _fail(str(err))
    samples = samples[: args.limit] if args.limit else samples
    settings = settings_from_config(
        config.rollout,
        tools=config.tools,
        max_context_length=teacher.context_length,
        seed=args.seed,
    )
    try:
        result = collect(
            teacher.engine, teacher.tokenizer, teacher.tools, samples, n=args.n, settings=settings,
            reward_cfg=config.reward, keep=args.keep, min_tool_calls=args.min_tool_calls,
            dedupe=not args.no_dedupe, log=print,
        )  # fmt: skip
    except OpenAIEngineError as err:
        return _fail(str(err), 1)
    except ValueError as err:  # a row's tools (extra_info.tools_kwargs) do not fit the run's
        return _fail(str(err))
    finally:
        _close(teacher)
    write_jsonl(args.out, result.rows)
    stats = result.stats
    stats["sft_check"] = check_sft_rows(args.out, teacher.tokenizer) if result.rows else "no rows"
    stats_path = Path(args.stats) if args.stats else _with_suffix(args.out, ".stats.json")
    stats_path.write_text(json.dumps(stats, indent=2, ensure_ascii=False), encoding="utf-8")
    _print_collect(stats)
    print(f"wrote {len(result.rows)} rows to {args.out}; statistics in {stats_path}")
    return 0


def _print_collect(stats: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="toolrl data collect")
    table.add_column("")
    table.add_column("all", justify="right")
    table.add_column("kept", justify="right")
    everything, kept = stats["all"], stats["kept_rows"]
    table.add_row("trajectories", str(stats["trajectories"]), str(stats["kept"]))
    table.add_row(
        "tool calls / trajectory",
        _fmt(everything["tool/calls_per_response"]),
        _fmt(kept["tool/calls_per_response"]),
    )
    table.add_row(
        "tool success rate", _fmt(everything["tool/success_rate"]), _fmt(kept["tool/success_rate"])
    )
    table.add_row(
        "turns / trajectory",
        _fmt(everything["turns_per_trajectory"]),
        _fmt(kept["turns_per_trajectory"]),
    )
    table.add_row(
        "response tokens (mean)",
        _fmt(everything["response_tokens_mean"]),
        _fmt(kept["response_tokens_mean"]),
    )
    table.add_row("accuracy", _fmt(stats["accuracy"]), "")
    for reason, count in stats["dropped"].items():
        table.add_row(f"dropped: {reason}", str(count), "")
    table.add_row(
        "stop reasons", ", ".join(f"{k} {v}" for k, v in stats["stop_reasons"].items()), ""
    )
    table.add_row("SFT check", stats["sft_check"], "")
    Console().print(table)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3g}" if isinstance(value, float) else str(value)


def run_stitch(args: argparse.Namespace) -> int:
    import asyncio

    from toolrl.config import ConfigError, load_config
    from toolrl.data.io import DataError, read_rows, write_jsonl
    from toolrl.data.stitch import stitch_rows
    from toolrl.tools.code_interpreter import CodeInterpreter, format_observation

    try:
        config = load_config(args.recipe, args.overrides)
        rows = [row for _, row in read_rows(args.data)]
    except (ConfigError, DataError) as err:
        return _fail(str(err))
    tool = CodeInterpreter.from_config(config.tools) if args.execute else None
    schema = (tool or CodeInterpreter(None)).schema  # type: ignore[arg-type]

    def run(code: str) -> str:  # the full output; stitch truncates it like the tool does
        result = asyncio.run(tool.sandbox.run(tool.prepare(code), limits=tool.limits))  # type: ignore[union-attr]
        return format_observation(result)

    try:
        out, stats = stitch_rows(
            rows, [schema], column=args.solution_column, max_calls=args.max_calls,
            run=run if tool else None, max_output_chars=config.tools.output_max_chars,
            keep_unstitched=args.keep_unstitched,
        )  # fmt: skip
    finally:
        if tool:
            tool.sandbox.close()
    write_jsonl(args.out, out)
    print(f"wrote {len(out)} stitched rows to {args.out}: {stats}")
    return 0


def run_filter(args: argparse.Namespace) -> int:
    from toolrl.config import ConfigError, load_config
    from toolrl.data.filter import annotate_row, parse_target, pass_rates, resample
    from toolrl.data.io import DataError, read_rows
    from toolrl.data.rl import row_to_sample
    from toolrl.rollout.agent_loop import settings_from_config
    from toolrl.rollout.engines.openai import OpenAIEngineError

    try:
        config = load_config(args.recipe, args.overrides)
        if Path(args.out).suffix not in (".jsonl", ".parquet"):
            raise DataError(f"--out {args.out}: use .jsonl or .parquet")
        rows = [row for _, row in read_rows(args.data)]
        rows = rows[: args.limit] if args.limit else rows
        samples = [row_to_sample(row, args.data, i) for i, row in enumerate(rows)]
        target = parse_target(args.target) if args.target else None
        teacher = _teacher(args.model, config, args)
    except (ConfigError, DataError, ValueError, OpenAIEngineError, OSError) as err:
        return _fail(str(err))
    settings = settings_from_config(
        config.rollout,
        tools=config.tools,
        max_context_length=teacher.context_length,
        seed=args.seed,
    )
    try:
        rates = pass_rates(
            teacher.engine, teacher.tokenizer, teacher.tools, samples, k=args.k, settings=settings,
            reward_cfg=config.reward, easy=args.easy, hard=args.hard,
        )  # fmt: skip
    except OpenAIEngineError as err:
        return _fail(str(err), 1)
    finally:
        _close(teacher)
    kept = [r for r in rates if r.kept]
    if target is not None and kept:
        try:
            kept = [
                kept[i]
                for i in resample(
                    [r.difficulty for r in kept], target, size=args.size, seed=args.seed
                )
            ]
        except ValueError as err:
            return _fail(f"--target: {err}")
    _write_filtered(args, [annotate_row(rows[r.index], r) for r in kept], rates)
    return 0


def _write_filtered(args: argparse.Namespace, out_rows: list[dict], rates: list) -> None:
    """`toolrl data filter`'s outputs: the kept rows, every row's pass rate, the plot, a summary."""
    import json

    from toolrl.data.convert import write_rows
    from toolrl.data.filter import plot_pass_rates, summary
    from toolrl.data.io import write_jsonl

    write_rows(args.out, out_rows)
    rates_path = Path(args.rates) if args.rates else _with_suffix(args.out, ".pass_rates.jsonl")
    write_jsonl(rates_path, [r.to_dict() for r in rates])
    plot_path = plot_pass_rates(
        rates,
        args.plot or _with_suffix(args.out, ".pass_rates.png"),
        easy=args.easy,
        hard=args.hard,
    )
    print(json.dumps(summary(rates)))
    print(f"wrote {len(out_rows)} rows to {args.out}; pass rates in {rates_path}; plot {plot_path}")


def run_stats(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from toolrl.data.io import DataError
    from toolrl.data.stats import dataset_stats, to_json

    tokenizer = None
    if args.tokenizer:
        from toolrl.rollout.engines.factory import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
    try:
        stats = dataset_stats(
            args.file, tokenizer=tokenizer, threshold=args.threshold, ngram=args.ngram
        )
    except DataError as err:
        return _fail(str(err))
    table = Table(title=f"{args.file} ({stats['schema']}, {stats['rows']} rows)")
    table.add_column("")
    table.add_column("value")
    table.add_row("data sources", _counts(stats["data_sources"]))
    if "abilities" in stats:
        table.add_row("abilities", _counts(stats["abilities"]))
    for name, d in stats["lengths"].items():
        table.add_row(
            name,
            f"mean {d['mean']}  min {d['min']:g}  p50 {d['p50']:g}  p90 {d['p90']:g}  max {d['max']:g}",
        )
    difficulty = stats["difficulty"]
    table.add_row("difficulty", _counts(difficulty.get("labels", {})) or "not labelled")
    if "pass_rate_histogram" in difficulty:
        table.add_row("pass rates", _counts(difficulty["pass_rate_histogram"]))
    dups = stats["near_duplicates"]
    table.add_row(
        "near-duplicate rate",
        f"{dups['rate']:.2%} ({dups['rows']} rows; exact {dups['exact_duplicate_rate']:.2%})",
    )
    table.add_row("near-duplicate method", dups["method"])
    Console().print(table)
    if args.json:
        Path(args.json).write_text(to_json(stats), encoding="utf-8")
        print(f"statistics in {args.json}")
    return 0


def _counts(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def run_convert(args: argparse.Namespace) -> int:
    from toolrl.data.convert import convert, validate_rows
    from toolrl.data.io import DataError

    try:
        if not args.no_validate:
            validate_rows(args.src)
        report = convert(args.src, args.dst)
    except DataError as err:
        return _fail(str(err))
    print(
        f"wrote {report.rows} rows ({', '.join(report.columns)}) to {args.dst}"
        + (f"; Arrow schema in {report.schema_file}" if report.schema_file else "")
    )
    for note in report.notes:
        print(f"note: {note}")
    return 0
