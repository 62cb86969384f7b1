"""Generation requests of many trajectories fed to one engine (`BatchScheduler`), and the states
of a trajectory's state machine (`State`): the agent loop's machinery, shared by the loop and by
branching rollouts (toolrl/rollout/branching.py).
"""

from __future__ import annotations

import asyncio
import enum
import threading
from collections import deque

from toolrl.rollout.engines.base import (
    ContinuousEngine,
    Engine,
    GenerationRequest,
    GenerationResult,
)


class _Stopped(Exception):
    """Raised from `take` into a driven engine's `serve` once the rollout it decodes for has
    ended."""


class State(enum.Enum):
    GENERATE = "generate"
    CALL_TOOLS = "call_tools"
    DONE = "done"


class BatchScheduler:
    """Feeds generation requests from many trajectories to the engine.

    With an engine that batches continuously (a `ContinuousEngine`, like HFEngine) one decoding batch
    keeps running: requests join it between decoding steps and each result comes back the
    moment its request finishes. It is served either by `drive()`, called from another thread
    than the event loop's (`driven=True`; `AgentLoop.run` does this), or else by a worker thread
    of the event loop's own. Other engines get every waiting request as one `generate` call in
    a worker thread. Either way the engine runs off the event loop, so tools run meanwhile.
    """

    def __init__(self, engine: Engine, max_batch_size: int = 256, *, driven: bool = False):
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.continuous = isinstance(engine, ContinuousEngine)
        if driven and not self.continuous:
            raise ValueError("only a ContinuousEngine can be driven from another thread")
        self.driven = driven
        self._inbox: deque[tuple[GenerationRequest, asyncio.Future]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)  # driven: a request arrived, or `stop()`
        self._stopped = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._serving = False
        self._in_flight: set[asyncio.Future] = set()
        self._worker: asyncio.Task | None = None
        self.batch_sizes: list[int] = []
        """Requests taken per engine call (batch mode) or per admission (continuous mode)."""

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        loop = self._loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            self._inbox.append((request, future))
            start = not self._serving and not self.driven
            self._serving = True
            self._wake.notify()
        if start:
            self._worker = asyncio.create_task(
                self._serve() if self.continuous else self._run_batches()
            )
        return await future

    def _take(self, room: int) -> list[tuple[GenerationRequest, asyncio.Future]]:
        with self._lock:
            taken = [self._inbox.popleft() for _ in range(min(room, len(self._inbox)))]
            self._in_flight.update(future for _, future in taken)
        if taken:
            self.batch_sizes.append(len(taken))
        return taken

    def _go_idle(self) -> bool:
        """Stop serving unless a request arrived meanwhile (checked under the inbox lock)."""
        with self._lock:
            if self._inbox:
                return False
            self._serving = False
            return True

    def _take_live(self, room: int):
        if self._stopped:  # nobody waits any more: end the engine's `serve` early
            raise _Stopped
        # A request whose trajectory was cancelled is dropped instead of decoded.
        return [(future, request) for request, future in self._take(room) if not future.done()]

    def _done(self, future: asyncio.Future, result: GenerationResult) -> None:
        """A result from the engine's thread, handed to the event loop's."""
        self._call_in_loop(self._resolve, future, result)

    def _call_in_loop(self, function, *args) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(function, *args)
        except RuntimeError:  # the loop has closed: nobody waits any more
            if not self._loop.is_closed():
                raise

    async def _serve(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.engine.serve, self._take_live, self._done)
            except Exception as err:  # the engine failed: every waiting trajectory learns why
                self._fail_all(err)
            if self._go_idle():
                return

    def drive(self) -> None:
        """Serve the engine on the calling thread (not the event loop's) until `stop()`: whenever
        requests are waiting, `engine.serve` runs until nothing is left to decode."""
        while True:
            with self._wake:
                while not self._inbox and not self._stopped:
                    self._wake.wait()
                if self._stopped:
                    return
            try:
                self.engine.serve(self._take_live, self._done)
            except _Stopped:
                return
            except Exception as err:  # the engine failed: every waiting trajectory learns why
                self._call_in_loop(self._fail_all, err)

    def stop(self) -> None:
        """End `drive()` (from any thread); requests still waiting are not decoded."""
        with self._wake:
            self._stopped = True
            self._wake.notify()

    async def _run_batches(self) -> None:
        while True:
            await asyncio.sleep(0)  # let every trajectory that is ready enqueue its request
            batch = self._take(self.max_batch_size)
            if not batch:
                if self._go_idle():
                    return
                continue
            try:
                results = await asyncio.to_thread(self.engine.generate, [r for r, _ in batch])
            except Exception as err:
                self._fail_all(err)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                self._resolve(future, result)

    def _resolve(self, future: asyncio.Future, result: GenerationResult) -> None:
        with self._lock:
            self._in_flight.discard(future)
        if not future.done():
            future.set_result(result)

    def _fail_all(self, err: Exception) -> None:
        """Fail every request taken by the engine or still waiting."""
        with self._lock:
            futures = [*self._in_flight, *(f for _, f in self._inbox)]
            self._in_flight.clear()
            self._inbox.clear()
        for future in futures:
            if not future.done():
                future.set_exception(err)

    async def close(self) -> None:
        if self._worker is not None:
            await asyncio.gather(self._worker, return_exceptions=True)
