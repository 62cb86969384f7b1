"""The sandbox's parts on their own: limits and results, run directories, level choice,
Landlock and seccomp, and behaviour a Python programmer expects from a run."""

from __future__ import annotations

import base64
import os
import struct
import textwrap
from pathlib import Path

import pytest

from toolrl.sandbox import isolation, landlock, rundir, seccomp
from toolrl.sandbox.local import Sandbox
from toolrl.sandbox.result import Limits, RunResult, SandboxError, SandboxUnavailable

SANDBOXFUSION_KEYS = {"status", "message", "compile_result", "run_result", "executor_pod_name"}
RUN_RESULT_KEYS = {"status", "execution_time", "return_code", "stdout", "stderr"}


def test_limits_reject_nonsense() -> None:
    with pytest.raises(ValueError, match="timeout_s"):
        Limits(timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb"):
        Limits(memory_mb=-1)
    with pytest.raises(ValueError, match="max_open_files"):
        Limits(max_open_files=3)
    assert Limits(timeout_s=2.5).cpu_seconds == 4


def test_result_has_sandboxfusion_shape_and_round_trips() -> None:
    result = RunResult.sandbox_error("worker gone", "bwrap")
    data = result.to_dict()
    assert SANDBOXFUSION_KEYS | {"files", "isolation"} == set(data)
    assert set(data["run_result"]) >= RUN_RESULT_KEYS
    assert data["status"] == "SandboxError" and data["run_result"]["status"] == "Error"
    assert RunResult.from_dict(data).to_dict() == data
    with pytest.raises(ValueError, match="unknown status"):
        RunResult.from_dict({"status": "Weird"})


def test_run_directory_rejects_escaping_names(tmp_path) -> None:
    for name in ("../x", "/etc/passwd", "a/../../x", ""):
        with pytest.raises(rundir.RunDirError):
            rundir.create(str(tmp_path / f"run{len(name)}"), {name: b"x"})
    rundir.create(str(tmp_path / "ok"), {"sub/dir/data.txt": b"hi"})
    assert (tmp_path / "ok/sub/dir/data.txt").read_bytes() == b"hi"


def test_fetch_reads_only_plain_files_inside(tmp_path) -> None:
    run = tmp_path / "run"
    rundir.create(str(run), {"good.txt": b"ok"})
    secret = tmp_path / "secret"
    secret.write_text("secret")
    os.symlink(secret, run / "link.txt")
    os.link(secret, run / "hard.txt")
    os.mkfifo(run / "fifo")  # reading it would block forever
    os.symlink(tmp_path, run / "dirlink")
    names = ["good.txt", "link.txt", "hard.txt", "fifo", "dirlink/secret", "missing", "../secret"]
    assert rundir.fetch(str(run), names, 1 << 20) == {"good.txt": b"ok"}
    rundir.remove(str(run))
    assert not run.exists() and secret.exists()


def test_remove_survives_hostile_trees(tmp_path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    fd = os.open(run, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(1500):  # deeper than Python's recursion limit and than PATH_MAX
        os.mkdir("d", dir_fd=fd)
        inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.close(fd)
    locked = run / "locked"
    locked.mkdir()
    (locked / "f").write_text("x")
    locked.chmod(0)
    rundir.remove(str(run))
    assert not run.exists()


def test_choose_level_refuses_weak_isolation_unless_allowed(monkeypatch) -> None:
    monkeypatch.delenv(isolation.WEAK_ENV, raising=False)
    with pytest.raises(SandboxUnavailable, match="allow_weak_isolation"):
        isolation.choose_level("rlimits")
    assert isolation.choose_level("rlimits", allow_weak=True) == "rlimits"
    monkeypatch.setenv(isolation.WEAK_ENV, "1")
    assert isolation.choose_level("rlimits") == "rlimits"
    with pytest.raises(ValueError, match="isolation must be one of"):
        isolation.choose_level("docker")


def test_describe_reports_every_level() -> None:
    info = isolation.describe()
    assert [level["name"] for level in info["levels"]] == list(isolation.LEVELS)
    assert {"default_level", "landlock_abi", "seccomp", "cgroups"} <= set(info)


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_seccomp_filter_is_well_formed(machine: str) -> None:
    program = seccomp.build_filter(machine)
    assert len(program) % 8 == 0 and len(program) // 8 < 4096
    first = struct.unpack("HBBI", program[:8])
    assert first == (0x20, 0, 0, 4)  # load the architecture first
    last = struct.unpack("HBBI", program[-8:])
    assert last == (0x06, 0, 0, 0x7FFF0000)  # default: allow


def test_landlock_confines_a_child_process(tmp_path) -> None:
    if landlock.abi_version() < 1:
        pytest.skip("Landlock unavailable on this kernel")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    outside = tmp_path / "outside.txt"
    outside.write_text("secret")
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        status = 1
        try:
            landlock.restrict(isolation.run_read_paths(), [str(allowed)])
            (allowed / "ok").write_text("ok")
            try:
                outside.read_text()
            except PermissionError:
                status = 0
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert (allowed / "ok").read_text() == "ok"


def test_run_behaves_like_python_main(strongest_sandbox: Sandbox) -> None:
    code = textwrap.dedent(
        """
        import sys, os, threading, atexit, tempfile
        atexit.register(lambda: print("atexit ran"))
        threading.Thread(target=lambda: print("thread ran")).start()
        print(__name__, os.path.basename(sys.argv[0]), os.path.basename(__file__))
        print(input(), input())
        print(tempfile.gettempdir() == os.getcwd(), file=sys.stderr)
        sys.exit(4)
        """
    )
    result = strongest_sandbox.run_sync(code, stdin="first\nsecond\n")
    assert result.run_result.return_code == 4, result.to_dict()
    lines = result.stdout.splitlines()
    assert "__main__ main.py main.py" in lines and "first second" in lines
    assert lines[-1] == "atexit ran" and "thread ran" in lines
    assert result.stderr == "True\n"


def test_traceback_shows_only_user_frames(strongest_sandbox: Sandbox) -> None:
    result = strongest_sandbox.run_sync("def f():\n    return 1 / 0\n\nf()")
    assert result.status == "Failed"
    assert "toolrl" not in result.stderr
    assert "return 1 / 0" in result.stderr and "ZeroDivisionError" in result.stderr


def test_files_in_and_out(strongest_sandbox: Sandbox) -> None:
    code = "data = open('in/data.txt').read()\nopen('out.txt', 'w').write(data.upper())"
    result = strongest_sandbox.run_sync(
        code, files={"in/data.txt": b"hello"}, fetch_files=["out.txt", "absent.txt"]
    )
    assert result.status == "Success", result.to_dict()
    assert base64.b64decode(result.files["out.txt"]) == b"HELLO"
    assert "absent.txt" not in result.files


def test_syntax_error_is_a_failed_run(strongest_sandbox: Sandbox) -> None:
    result = strongest_sandbox.run_sync("def (:")
    assert result.status == "Failed" and "SyntaxError" in result.stderr


def test_numpy_and_sympy_are_preloaded(strongest_sandbox: Sandbox) -> None:
    info = strongest_sandbox.info()
    assert {"numpy", "sympy"} <= set(info["preloaded"]), info["preload_failed"]
    result = strongest_sandbox.run_sync(
        "import numpy, sympy\nprint(numpy.arange(4).sum(), sympy.factorint(360))"
    )
    assert result.stdout == "6 {2: 3, 3: 2, 5: 1}\n", result.to_dict()


def test_cgroup_files_written_for_v1_and_v2(tmp_path) -> None:
    from toolrl.sandbox import cgroups

    (tmp_path / "v2/me").mkdir(parents=True)
    (tmp_path / "v2/me/cgroup.subtree_control").write_text("cpu memory pids\n")
    found = cgroups._find_hierarchies([(str(tmp_path / "v2"), "cgroup2", set())], {"": "/me"})
    assert [(h.version, h.controller) for h in found] == [(2, "unified")]
    run = cgroups.CgroupManager(found).create("run1", 256 << 20, 32)
    path = run._dirs[0][1]
    assert Path(path, "memory.max").read_text() == str(256 << 20)
    assert Path(path, "pids.max").read_text() == "32"
    run.add(1234)
    assert Path(path, "cgroup.procs").read_text() == "1234"
    assert not run.oom_killed()
    with open(os.path.join(path, "memory.events"), "w") as f:
        f.write("low 0\noom 1\noom_kill 1\n")
    assert run.oom_killed()

    for name in ("memory", "pids"):
        (tmp_path / name / "grp").mkdir(parents=True)
    mounts = [(str(tmp_path / n), "cgroup", {"rw", n}) for n in ("memory", "pids")]
    found = cgroups._find_hierarchies(mounts, {"memory": "/grp", "pids": "/grp"})
    assert [(h.version, h.controller) for h in found] == [(1, "memory"), (1, "pids")]
    run = cgroups.CgroupManager(found).create("run1", 64 << 20, 8)
    memory_dir, pids_dir = (d for _, d in run._dirs)
    assert Path(memory_dir, "memory.limit_in_bytes").read_text() == str(64 << 20)
    assert Path(pids_dir, "pids.max").read_text() == "8"


def test_auto_falls_back_when_a_worker_cannot_start(monkeypatch) -> None:
    if not isolation.bwrap_version()[0]:
        pytest.skip("bubblewrap unavailable: nothing to fall back from")
    from toolrl.sandbox import worker

    monkeypatch.setattr(worker.isolation, "bwrap_argv", lambda *args: ["false"])
    with Sandbox("auto", allow_weak_isolation=True) as sandbox:
        assert sandbox.isolation in ("landlock", "rlimits")
        assert sandbox.run_sync("print('ok')").stdout == "ok\n"
    with pytest.raises(SandboxError, match="bwrap"):
        Sandbox("bwrap").start()


def test_bwrap_binds_python_paths_after_its_tmpfs(monkeypatch):
    """A virtualenv under /tmp (e.g. a CI clone) must be bound over the private /tmp, not hidden."""
    from toolrl.sandbox import isolation

    monkeypatch.setattr(isolation, "python_paths", lambda: ["/tmp/clone/.venv", "/opt/py"])
    argv = isolation.bwrap_argv("bwrap", "/dev/shm/runs", ["python"], {})
    tmpfs = argv.index("--tmpfs")
    assert argv[tmpfs + 1] == "/tmp"
    venv = argv.index("/tmp/clone/.venv")
    assert argv[venv - 1] == "--ro-bind-try" and venv > tmpfs
