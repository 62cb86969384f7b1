"""`toolrl sandbox run | info | serve` through the real command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request

from toolrl.cli import main


def test_run_prints_the_json_result(tmp_path, capsys) -> None:
    program = tmp_path / "prog.py"
    program.write_text("print(input().upper())\n")
    stdin = tmp_path / "in.txt"
    stdin.write_text("shout\n")
    code = main(["sandbox", "run", str(program), "--stdin", str(stdin), "--timeout", "5"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["status"] == "Success" and result["run_result"]["stdout"] == "SHOUT\n"
    assert result["isolation"] in ("bwrap", "landlock")


def test_run_exit_code_follows_the_program(tmp_path, capsys) -> None:
    program = tmp_path / "loop.py"
    program.write_text("while True: pass\n")
    code = main(["sandbox", "run", str(program), "--timeout", "0.5", "--memory-mb", "128"])
    result = json.loads(capsys.readouterr().out)
    assert code == 1 and result["run_result"]["status"] == "TimeLimitExceeded"


def test_run_missing_file_is_a_usage_error(tmp_path, capsys) -> None:
    assert main(["sandbox", "run", str(tmp_path / "nope.py")]) == 2
    assert "nope.py" in capsys.readouterr().err


def test_info(capsys) -> None:
    assert main(["sandbox", "info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["default_level"] in ("bwrap", "landlock")
    assert main(["sandbox", "info"]) == 0
    assert "default level" in capsys.readouterr().out


def test_serve_answers_run_code_then_stops() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "toolrl.cli", "sandbox", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        line = process.stdout.readline()
        url = line.split()[1]
        body = json.dumps({"code": "print(6 * 7)", "language": "python", "run_timeout": 5})
        request = urllib.request.Request(url, data=body.encode(), method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
        assert answer["run_result"]["stdout"] == "42\n"
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
