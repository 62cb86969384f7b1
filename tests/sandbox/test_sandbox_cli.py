"""`toolrl sandbox run | info | serve` through the real command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

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


def _cgroups_of(pid: int) -> list[str]:
    found = []
    for root, dirs, _ in os.walk("/sys/fs/cgroup"):
        found += [os.path.join(root, d) for d in dirs if d.startswith(f"toolrl-sandbox-{pid}-")]
        if root.count(os.sep) > 6:
            dirs[:] = []
    return found


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_cleans_up_on_sigterm_and_sigint(sig, tmp_path) -> None:
    from toolrl.sandbox.testing import descendants, process_table

    def live_processes() -> set[int]:  # zombies wait for a reaper that is not ours to be
        return {pid for pid, (_, state) in process_table().items() if state != "Z"}

    runs = tmp_path / "runs"
    runs.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "toolrl.cli", "sandbox", "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "TOOLRL_SANDBOX_DIR": str(runs)},
    )
    try:
        url = process.stdout.readline().split()[1]
        body = json.dumps({"code": "open('f', 'w').write('x'); print(1)", "run_timeout": 5})
        request = urllib.request.Request(url, data=body.encode(), method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.loads(response.read())["run_result"]["stdout"] == "1\n"
        children = descendants(process.pid)
        assert children and list(runs.iterdir())  # workers and a run root exist while serving
    finally:
        process.send_signal(sig)
        assert process.wait(timeout=30) == 0
    assert not list(runs.iterdir())  # the run root and every run directory are gone
    assert not _cgroups_of(process.pid)
    deadline = time.monotonic() + 10  # a worker may take a moment to see its parent gone
    while (alive := [p for p in children if p in live_processes()]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive, f"processes left behind: {alive}"
