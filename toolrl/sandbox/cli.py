"""`toolrl sandbox run | serve | info`.

    toolrl sandbox run prog.py --stdin in.txt --timeout 5 --memory-mb 256   # prints the JSON result
    toolrl sandbox serve --host 127.0.0.1 --port 8080                       # SandboxFusion /run_code
    toolrl sandbox info                                                    # isolation available here

`run` exits with 0 when the program succeeded, 1 when it failed (error, timeout, limit) and 3 when
the sandbox itself could not run it. Only the standard library is imported at module level.
`serve` stops on SIGINT or SIGTERM alike, and leaves no process, run directory or cgroup behind.
"""

from __future__ import annotations

import argparse
import json
import sys

_EXIT = {"Success": 0, "Failed": 1, "SandboxError": 3}


def _add_isolation_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--isolation",
        default="auto",
        choices=["auto", "bwrap", "landlock", "rlimits"],
        help="isolation level (default: the strongest available; see `toolrl sandbox info`)",
    )
    parser.add_argument(
        "--allow-weak-isolation",
        action="store_true",
        default=None,
        help="permit the rlimits-only level (no filesystem or network isolation)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `toolrl sandbox` and its subcommands."""
    parser = subparsers.add_parser(
        "sandbox",
        help="run untrusted Python in the sandbox, or serve it over HTTP",
        description="Run untrusted Python isolated (bubblewrap, Landlock + seccomp, cgroups).",
    )
    parser.set_defaults(handler=lambda _args: parser.print_help() or 2)
    commands = parser.add_subparsers(dest="sandbox_command", metavar="SUBCOMMAND")

    run = commands.add_parser("run", help="run a Python file and print the JSON result")
    run.add_argument("file", help="the Python program to run ('-' for standard input)")
    run.add_argument("--stdin", metavar="FILE", help="file whose content is the program's stdin")
    run.add_argument("--timeout", type=float, default=10.0, help="wall-clock seconds (10)")
    run.add_argument("--memory-mb", type=int, default=1024, help="memory limit in MB (1024)")
    run.add_argument(
        "--fetch", action="append", default=[], metavar="NAME", help="file to return (base64)"
    )
    _add_isolation_options(run)
    run.set_defaults(handler=run_command)

    serve = commands.add_parser("serve", help="serve SandboxFusion's POST /run_code over HTTP")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8080, help="port (8080; 0 picks a free one)")
    serve.add_argument("--max-concurrency", type=int, default=None, help="runs at once")
    serve.add_argument("--timeout", type=float, default=10.0, help="default run timeout (10 s)")
    serve.add_argument("--memory-mb", type=int, default=1024, help="default memory limit (1024)")
    _add_isolation_options(serve)
    serve.set_defaults(handler=serve_command)

    info = commands.add_parser("info", help="show the isolation levels available here")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(handler=info_command)


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return f.read()


def run_command(args: argparse.Namespace) -> int:
    """Run one file in a local sandbox and print its SandboxFusion-shaped result."""
    from toolrl.sandbox.local import Sandbox
    from toolrl.sandbox.result import Limits, SandboxError

    try:
        code = _read(args.file)
        stdin = _read(args.stdin) if args.stdin else ""
        limits = Limits(timeout_s=args.timeout, memory_mb=args.memory_mb)
    except (OSError, ValueError) as exc:
        print(f"toolrl sandbox run: {exc}", file=sys.stderr)
        return 2
    try:
        with Sandbox(
            args.isolation, limits=limits, allow_weak_isolation=args.allow_weak_isolation
        ) as sandbox:
            result = sandbox.run_sync(code, stdin=stdin, fetch_files=args.fetch)
    except SandboxError as exc:  # no acceptable isolation, or its worker cannot start
        print(f"toolrl sandbox run: {exc}", file=sys.stderr)
        return 3
    print(json.dumps(result.to_dict(), indent=2))
    return _EXIT[result.status]


def serve_command(args: argparse.Namespace) -> int:
    """Serve /run_code until interrupted."""
    from toolrl.sandbox.local import Sandbox
    from toolrl.sandbox.result import Limits, SandboxError
    from toolrl.sandbox.server import SandboxHTTPServer

    limits = Limits(timeout_s=args.timeout, memory_mb=args.memory_mb)
    sandbox = Sandbox(
        args.isolation,
        limits=limits,
        max_concurrency=args.max_concurrency,
        allow_weak_isolation=args.allow_weak_isolation,
    )
    try:
        sandbox.start()
    except SandboxError as exc:
        print(f"toolrl sandbox serve: {exc}", file=sys.stderr)
        return 3
    try:
        server = SandboxHTTPServer((args.host, args.port), sandbox)
    except OSError as exc:
        sandbox.close()
        print(
            f"toolrl sandbox serve: cannot listen on {args.host}:{args.port}: {exc}",
            file=sys.stderr,
        )
        return 2
    print(
        f"serving {server.url} (isolation: {sandbox.isolation}); Ctrl-C or SIGTERM stops",
        flush=True,
    )
    try:
        server.serve_forever()  # returns after a graceful shutdown on SIGINT or SIGTERM
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.close()  # kills its workers, removes its run directories and cgroups
    return 0


def info_command(args: argparse.Namespace) -> int:
    """Describe the isolation levels; exit 1 when only the weak level is available."""
    from toolrl.sandbox.isolation import describe

    info = describe()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for level in info["levels"]:
            mark = "yes" if level["available"] else "no "
            print(f"  [{mark}] {level['name']:<9} {level['reason']}")
        print(f"default level: {info['default_level']}")
        print(f"landlock ABI:  {info['landlock_abi'] or 'unavailable'}")
        print(f"seccomp:       {'yes' if info['seccomp'] else 'no'}")
        print(f"cgroups:       {info['cgroups']} (memory and pids per run)")
        print(f"user:          {info['user']}")
    return 0 if info["default_level"] in ("bwrap", "landlock") else 1
