"""One engine on one background thread, fed by any number of request threads.

The HTTP server handles each request on its own thread; they all hand their generation
requests to an `EngineWorker`, which keeps the engine busy on a single thread. With a
continuously batching engine (HFEngine has `serve`), a request that arrives while others are
decoding joins their batch between two decoding steps, and each result is handed back the moment
its request finishes. Other engines get everything waiting as one `generate` call.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future

from toolrl.rollout.engines.base import (
    ContinuousEngine,
    Engine,
    GenerationRequest,
    GenerationResult,
)


class EngineWorker:
    """Runs `engine` on a daemon thread; `generate` may be called from any thread."""

    def __init__(self, engine: Engine, max_batch_size: int = 64):
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.continuous = isinstance(engine, ContinuousEngine)
        self._inbox: deque[tuple[Future, GenerationRequest]] = deque()
        self._in_flight: set[Future] = set()
        self._wake = threading.Condition()
        self._closed = False
        self.requests_done = 0
        self.peak_running = 0
        """The most requests decoded together so far: above 1 means requests shared batches."""
        self._thread = threading.Thread(target=self._run, name="toolrl-engine", daemon=True)
        self._thread.start()

    def submit(self, requests: list[GenerationRequest]) -> list[Future]:
        """Queue requests; each future resolves to its GenerationResult (or the engine's error)."""
        futures = [Future() for _ in requests]
        with self._wake:
            if self._closed:
                raise RuntimeError("the engine worker is closed")
            self._inbox.extend(zip(futures, requests, strict=True))
            self._wake.notify()
        return futures

    def generate(
        self, requests: list[GenerationRequest], timeout: float | None = None
    ) -> list[GenerationResult]:
        return [future.result(timeout) for future in self.submit(requests)]

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=5)

    def _take(self, room: int) -> list[tuple[Future, GenerationRequest]]:
        with self._wake:
            taken = [self._inbox.popleft() for _ in range(min(room, len(self._inbox)))]
            taken = [(f, r) for f, r in taken if f.set_running_or_notify_cancel()]
            self._in_flight.update(f for f, _ in taken)
            self.peak_running = max(self.peak_running, len(self._in_flight))
        return taken

    def _done(self, future: Future, result: GenerationResult) -> None:
        with self._wake:
            self._in_flight.discard(future)
            self.requests_done += 1
        future.set_result(result)

    def _run(self) -> None:
        while True:
            with self._wake:
                self._wake.wait_for(lambda: self._inbox or self._closed)
                if self._closed:
                    self._fail(RuntimeError("the server is shutting down"))
                    return
            try:
                if self.continuous:
                    self.engine.serve(self._take, self._done)  # type: ignore[attr-defined]
                else:
                    batch = self._take(self.max_batch_size)
                    results = self.engine.generate([r for _, r in batch])
                    for (future, _), result in zip(batch, results, strict=True):
                        self._done(future, result)
            except Exception as err:  # every request waiting on the engine learns why
                self._fail(err)

    def _fail(self, err: BaseException) -> None:
        with self._wake:
            futures = [*self._in_flight, *(f for f, _ in self._inbox)]
            self._in_flight.clear()
            self._inbox.clear()
        for future in futures:
            if not future.done():
                if not future.running():
                    future.set_running_or_notify_cancel()
                future.set_exception(err)
