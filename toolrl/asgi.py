"""Running toolrl's HTTP servers (`toolrl serve`, `toolrl sandbox serve`): an ASGI app on uvicorn.

`AppServer` binds its socket at construction (so `port=0` has its real port, and a port in use
fails before anything else starts) with a listen backlog of `BACKLOG`: a burst of connections
waits in the kernel's queue instead of being reset, as it was with http.server's backlog of 5.

- `serve_forever()` runs in the calling (main) thread. uvicorn turns SIGINT and SIGTERM alike
  into a graceful shutdown: it stops accepting, lets requests in flight finish (up to
  `graceful_s`), then returns, and the caller's `finally` cleans up.
- `start()` / `close()` run it on a background thread (tests, notebooks).
"""

from __future__ import annotations

import signal
import socket
import threading
import time

BACKLOG = 2048
"""Connections the kernel queues before the server accepts them (the system's somaxconn caps it)."""


class AppServer:
    """`app` served by uvicorn on `host:port` (see the module docstring)."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, *, graceful_s: float = 5.0):
        import uvicorn

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.socket.bind((host, port))
        except OSError:
            self.socket.close()
            raise
        self.socket.listen(BACKLOG)
        config = uvicorn.Config(
            app,
            backlog=BACKLOG,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=graceful_s,
            lifespan="off",
        )
        self.server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.socket.getsockname()[:2]
        return host, port

    @property
    def base_url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def serve_forever(self) -> None:
        """Serve until SIGINT or SIGTERM (main thread) or `close()`; then return normally."""

        # uvicorn re-raises the signal it handled once it has shut down; with these handlers
        # that only asks for the exit already under way, so the caller's clean-up runs instead
        # of the default SIGTERM death (and a signal before uvicorn's own handlers still stops).
        def stop(signum, frame) -> None:
            self.server.should_exit = True

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            self.server.run(sockets=[self.socket])
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.socket.close()

    def start(self) -> AppServer:
        """Serve on a daemon thread; returns once the server accepts connections."""
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the HTTP server did not start")
            time.sleep(0.01)
        return self

    def close(self) -> None:
        """Stop serving (requests in flight may finish) and release the socket."""
        self.server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.socket.close()
