"""Sandboxes for the tests: one per isolation level available here, started once per session.

Tests that take the `sandbox` fixture run once per level; a level the machine lacks is skipped
with the reason `toolrl sandbox info` gives. The limits are short, to keep the hostile programs
quick on a 2-core machine.
"""

from __future__ import annotations

import os

import pytest

from toolrl.sandbox import isolation
from toolrl.sandbox.local import Sandbox
from toolrl.sandbox.result import Limits

TEST_LIMITS = Limits(
    timeout_s=1.0, memory_mb=256, max_processes=32, max_output_bytes=64 << 10, max_file_mb=8
)
SECRET_ENV = "TOOLRL_TEST_SECRET"
SECRET_VALUE = "s3cr3t-value-that-must-not-leak"
_STATUSES = {s.name: s for s in isolation.level_statuses()}
_SANDBOXES: dict[str, Sandbox] = {}


def _sandbox_for(level: str) -> Sandbox:
    status = _STATUSES[level]
    if not status.available:
        pytest.skip(f"isolation level {level} unavailable here: {status.reason}")
    if level not in _SANDBOXES:
        # The secret is in the test process's environment while the worker starts: runs must
        # not see it.
        os.environ[SECRET_ENV] = SECRET_VALUE
        sandbox = Sandbox(level, limits=TEST_LIMITS, allow_weak_isolation=True, max_concurrency=8)
        _SANDBOXES[level] = sandbox.start()
    return _SANDBOXES[level]


@pytest.fixture(scope="session", params=isolation.LEVELS)
def sandbox(request) -> Sandbox:
    """A started sandbox for each isolation level (skipped where unavailable)."""
    return _sandbox_for(request.param)


@pytest.fixture(scope="session")
def strongest_sandbox() -> Sandbox:
    """The sandbox with the default (strongest available) level."""
    return _sandbox_for(isolation.choose_level("auto", allow_weak=True))


@pytest.fixture(scope="session")
def secret_value() -> str:
    """A value in the test process's environment that no run may see."""
    return SECRET_VALUE


def pytest_sessionfinish(session, exitstatus) -> None:
    for sandbox in _SANDBOXES.values():
        sandbox.close()
    _SANDBOXES.clear()
