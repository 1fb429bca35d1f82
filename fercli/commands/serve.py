"""`fer serve`: an HTTP API and a browser page for expression recognition (FastAPI + uvicorn)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

from fercli.commands import _options as _o
from fercli.commands import _ui
from fercli.config import build_config

if TYPE_CHECKING:  # the command imports its stage only when it runs (fer --help stays light)
    from fercli.api import Recognizer

EXAMPLE = """Examples:

  fer serve                                   # http://127.0.0.1:8000/ : the page; /docs : the API

  curl -F file=@photo.jpg http://127.0.0.1:8000/v1/predict

  fer serve --detector retinaface-mobilenet --detector-weights mobilenet0.25_Final.pth --max-batch 32

  FER_API_KEY=$(openssl rand -hex 16) fer serve --host 0.0.0.0 --cors https://app.example.org
"""


def serve(
    ctx: typer.Context,
    model: Optional[Path] = typer.Option(None, "--model", "-m", help="Checkpoint or export \\[default: the workspace's student, else the bundled model]."),
    host: Optional[str] = typer.Option(None, "--host", help="Address to bind \\[default: 127.0.0.1]; any other than loopback needs --api-key."),
    port: Optional[int] = typer.Option(None, "--port", help="Port \\[default: 8000]; 0 takes any free port (the serving line names it)."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="FER_API_KEY", show_envvar=True, help="Key clients send as X-API-Key or Authorization: Bearer (8+ characters)."),
    cors: Optional[list[str]] = typer.Option(None, "--cors", help="Allow browser pages from this origin (repeatable) \\[default: CORS off]."),
    detector: Optional[str] = typer.Option(None, "--detector", help="auto, retinaface-resnet50, retinaface-mobilenet, haar or none (every image is an aligned face)."),
    detector_weights: _o.DetectorWeights = None,
    min_score: Optional[float] = typer.Option(None, "--min-score", help="Default minimum detection score (0.8)."),
    tta: Optional[str] = typer.Option(None, "--tta", help="Default none or flip \\[default: the model's recommendation]."),
    max_batch: Optional[int] = typer.Option(None, "--max-batch", help="Faces per classifier pass across concurrent requests (16)."),
    max_wait_ms: Optional[float] = typer.Option(None, "--max-wait-ms", help="How long a pass waits for more faces (5)."),
    max_upload_mb: Optional[float] = typer.Option(None, "--max-upload-mb", help="Largest request body, MB (10); more is 413."),
    max_megapixels: Optional[float] = typer.Option(None, "--max-megapixels", help="Largest image, from its header (40); more is 413."),
    max_faces: Optional[int] = typer.Option(None, "--max-faces", help="Faces classified per image (32); more are dropped and reported."),
    max_images: Optional[int] = typer.Option(None, "--max-images", help="Images per batch request (16)."),
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Seconds to read a request and to answer it (30)."),
    max_concurrency: Optional[int] = typer.Option(None, "--max-concurrency", help="Open connections before answering 503 (64)."),
    device: _o.Device = None,
    threads: _o.Threads = None,
    runtime: _o.ServeRuntime = None,
    config: Optional[Path] = _o.config_file("serve"),
) -> None:
    """Serve the model over HTTP: POST /v1/predict, a browser page at /, OpenAPI docs at /docs, /metrics."""
    from fercli.serve.config import ServeConfig  # light: the server (torch, FastAPI) comes after validation

    ws = _ui.state(ctx).workspace
    overrides = _o.given(ServeConfig, locals(), cors=tuple(cors) if cors else None, timeout_s=timeout)
    cfg = build_config(ServeConfig, "serve", overrides, ws, config)

    def ready(rec: Recognizer, port: int) -> None:
        if rec.detector_name is not None:
            _ui.say(ctx, f"[dim]detector:[/] {rec.detector_name}" + (f" (auto: {rec.detector_note})" if rec.detector_note else ""))
        host = cfg.host.strip("[]")
        where = f"http://{'[' + host + ']' if ':' in host else host}:{port}"  # the bound port: --port 0 picks one
        _ui.say(ctx, f"serving on {where}/ (page), {where}/docs (API), {where}/metrics; Ctrl-C stops"
                + ("; API key required" if cfg.api_key else ""))

    from fercli.serve import run_serve

    run_serve(cfg, ws, on_model=lambda art: _ui.using(ctx, ws, art), on_ready=ready)
