"""Starting the server: the port checked, the model loaded, then uvicorn until interrupted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fercli.api import Recognizer
from fercli.errors import FerError
from fercli.serve.app import create_app
from fercli.serve.config import ServeConfig
from fercli.workspace import Artifact, Workspace


def check_port_free(host: str, port: int) -> None:
    """A one-line error when ``host:port`` cannot be bound (uvicorn would fail only after the model
    loaded, with its own log line). Port 0 (any free port) is always fine."""
    import socket

    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise FerError(f"--port {port}: cannot listen on {host}:{port} ({exc.strerror or exc}): stop what uses "
                           "it, or pass another --port") from None


def run_serve(cfg: ServeConfig, ws: Workspace, on_model: Callable[[Artifact], Any] | None = None,
          on_ready: Callable[[Recognizer], Any] | None = None) -> None:
    """Load the model and detector, then serve until interrupted (uvicorn, one process)."""
    import uvicorn

    cfg.check()
    check_port_free(cfg.host, cfg.port)  # before the model loads, and before "serving on" is printed
    rec = Recognizer.from_config(cfg.recognizer_config(), ws, on_model)
    if on_ready is not None:
        on_ready(rec)
    app = create_app(cfg, rec)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="info", access_log=False,
                limit_concurrency=cfg.max_concurrency, timeout_keep_alive=5,
                timeout_graceful_shutdown=int(max(1, cfg.timeout_s)))
