"""Starting the server: the port bound, the model loaded, then uvicorn on that socket until interrupted."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

from fercli.api import Recognizer
from fercli.errors import FerError
from fercli.serve.app import create_app
from fercli.serve.config import ServeConfig
from fercli.workspace import Artifact, Workspace


def bind_port(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (not yet listening), or a one-line :class:`FerError`.

    The server binds before the model loads, so a port in use is reported at once rather than after
    minutes of loading (uvicorn would say it in a log line of its own), and ``--port 0`` (any free
    port) knows the port it got before "serving on" is printed."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise FerError(f"--port {port}: cannot listen on {host}:{port} ({exc.strerror or exc}): stop what uses "
                       "it, or pass another --port") from None
    return sock


def run_serve(cfg: ServeConfig, ws: Workspace, on_model: Callable[[Artifact], Any] | None = None,
              on_ready: Callable[[Recognizer, int], Any] | None = None) -> None:
    """Bind the port, load the model and detector, then serve until interrupted (uvicorn, one process).

    ``on_ready(recognizer, port)`` is called once the model is loaded and the socket accepts
    connections, with the port actually bound (the one the system chose for ``port=0``)."""
    import uvicorn

    cfg.check()
    sock = bind_port(cfg.host, cfg.port)
    try:
        rec = Recognizer.from_config(cfg.recognizer_config(), ws, on_model)
        # Listening only now: while the model loads, connections are refused rather than left hanging;
        # from here they queue until uvicorn accepts them, so "serving on" is true once printed.
        sock.listen()
        if on_ready is not None:
            on_ready(rec, sock.getsockname()[1])
        config = uvicorn.Config(create_app(cfg, rec), log_level="info", access_log=False,
                                limit_concurrency=cfg.max_concurrency, timeout_keep_alive=5,
                                timeout_graceful_shutdown=int(max(1, cfg.timeout_s)))
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
