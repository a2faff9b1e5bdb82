"""Running the app under uvicorn: in the foreground (`biomedgpt serve`) or on a background thread (tests, demo).

uvicorn is driven programmatically (`uvicorn.Server`), so the CLI owns argument parsing and the process keeps
one event loop; the background variant waits until the socket is bound before returning. Connections are served
by `protocol.GuardedH11Protocol`: uvicorn's HTTP/1.1 protocol with header and body deadlines and the connection
cap of `ServeConfig`.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from biomedgpt.serve.config import ServeConfig


def uvicorn_config(app: Any, config: ServeConfig, **overrides: Any) -> Any:
    import uvicorn

    from biomedgpt.serve.protocol import guarded_protocol

    settings: dict[str, Any] = {
        "host": config.host,
        "port": config.port,
        "log_level": config.log_level,
        "server_header": False,  # do not advertise the server software
        "http": guarded_protocol(
            header_timeout_s=config.header_timeout_s,
            body_timeout_s=config.body_timeout_s,
            max_connections=config.max_connections,
        ),
        "ws": "none",  # the API has no websocket route: an Upgrade header must not switch protocols
        "timeout_keep_alive": config.keep_alive_timeout_s,
        "timeout_graceful_shutdown": 10,
        "backlog": max(128, 2 * config.max_connections),
        **overrides,
    }
    return uvicorn.Config(app, **settings)


def run_server(app: Any, config: ServeConfig) -> None:
    """Serve until interrupted. SIGINT/SIGTERM shut down gracefully (in-flight requests finish); uvicorn then
    re-raises the signal, so SIGTERM ends the process as a signal would, and Ctrl-C returns here cleanly."""
    import uvicorn

    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(uvicorn_config(app, config)).run()


class BackgroundServer:
    """`with BackgroundServer(app, config) as server: server.url` - a real server on a thread, for tests."""

    def __init__(
        self, app: Any, config: ServeConfig, *, startup_timeout_s: float = 30.0, **uvicorn_overrides: Any
    ):
        import uvicorn

        self.config = config
        self.server = uvicorn.Server(uvicorn_config(app, config, **uvicorn_overrides))
        self.thread = threading.Thread(target=self.server.run, name="biomedgpt-uvicorn", daemon=True)
        self.startup_timeout_s = startup_timeout_s

    @property
    def url(self) -> str:
        host = f"[{self.config.host}]" if ":" in self.config.host else self.config.host
        return f"http://{host}:{self.config.port}"

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + self.startup_timeout_s
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"the server on {self.url} stopped during startup (port in use?)")
            if time.monotonic() > deadline:
                self.server.should_exit = True
                raise TimeoutError(
                    f"the server on {self.url} did not start within {self.startup_timeout_s} s"
                )
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
