"""`toolrl serve MODEL_PATH --port N`: an OpenAI-compatible API over an engine, on loopback."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="serve a model through an OpenAI-compatible API (completions with token ids, chat)",
        description=(
            "Load a local HF checkpoint into the continuously batching HF engine and serve "
            "/v1/completions (text or token-id prompts; token ids and log-probs back), "
            "/v1/chat/completions (tools rendered by the chat template, hermes tool calls parsed "
            "back), /v1/models and /health. Concurrent requests share decoding batches. "
            "There is no authentication: it listens on 127.0.0.1 unless --host says otherwise."
        ),
    )
    parser.add_argument("model", metavar="MODEL_PATH", help="local HF checkpoint directory")
    parser.add_argument(
        "--port", type=int, default=8000, help="port (0 = any free port; default 8000)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--served-model-name", default=None, help="model id (default: directory name)"
    )
    parser.add_argument("--max-batch-size", type=int, default=64, help="rows decoded together (64)")
    parser.add_argument(
        "--engine",
        choices=("hf", "vllm"),
        default="hf",
        help="what generates: transformers in this process (hf, default) or vLLM",
    )
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--dtype", default="float32", help="torch dtype (default float32)")
    parser.add_argument("--seed", type=int, default=0, help="seed for requests without one")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from toolrl.config import ConfigError, load_config
    from toolrl.rollout.engines.factory import EngineError, build_engine, load_tokenizer
    from toolrl.serving.server import OpenAIServer

    path = Path(args.model)
    if not (path / "config.json").is_file():
        print(
            f"error: {path} is not a local checkpoint directory (no config.json)", file=sys.stderr
        )
        return 2
    try:
        config = load_config(None, [f"rollout.engine={args.engine}", f"model.dtype={args.dtype}"])
        tokenizer = load_tokenizer(str(path))
        engine = build_engine(
            config,
            path,
            tokenizer=tokenizer,
            device=args.device,
            seed=args.seed,
            purpose="toolrl serve",
            hf_options={"dtype": args.dtype, "max_batch_size": args.max_batch_size},
        )
    except (ConfigError, EngineError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    context = engine.max_context_length or int(tokenizer.model_max_length)
    try:
        server = OpenAIServer(
            engine,
            tokenizer,
            model_name=args.served_model_name or path.resolve().name,
            max_model_len=context,
            host=args.host,
            port=args.port,
            max_batch_size=args.max_batch_size,
        )
    except OSError as err:
        print(
            f"error: cannot listen on {args.host}:{args.port}: {err.strerror or err}",
            file=sys.stderr,
        )
        return 2
    print(
        f"serving {server.model_name} at {server.url}/v1 (context {context}); "
        "Ctrl-C or SIGTERM stops",
        flush=True,
    )
    try:
        server.serve_forever()  # SIGINT and SIGTERM alike: requests in flight finish first
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0
