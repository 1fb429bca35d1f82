"""`fer serve`: an HTTP API and a browser page for expression recognition (FastAPI + uvicorn)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from fercli.commands import _ui
from fercli.config import build_config

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
    port: Optional[int] = typer.Option(None, "--port", help="Port \\[default: 8000]."),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="FER_API_KEY", show_envvar=True, help="Key clients send as X-API-Key or Authorization: Bearer (8+ characters)."),
    cors: Optional[list[str]] = typer.Option(None, "--cors", help="Allow browser pages from this origin (repeatable) \\[default: CORS off]."),
    detector: Optional[str] = typer.Option(None, "--detector", help="auto, retinaface-resnet50, retinaface-mobilenet, haar or none (every image is an aligned face)."),
    detector_weights: Optional[Path] = typer.Option(None, "--detector-weights", help="Detector weights file."),
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
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda, cuda:N."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads."),
    runtime: Optional[str] = typer.Option(None, "--runtime", help="An exported .onnx model runs on onnxruntime or openvino."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML/YAML file with a \\[serve] table."),
) -> None:
    """Serve the model over HTTP: POST /v1/predict, a browser page at /, OpenAPI docs at /docs, /metrics."""
    from fercli.serve import ServeConfig
    from fercli.serve import run_serve

    ws = _ui.state(ctx).workspace
    cfg = build_config(ServeConfig, "serve", dict(
        model=model, host=host, port=port, api_key=api_key, cors=tuple(cors) if cors else None, detector=detector,
        detector_weights=detector_weights, min_score=min_score, tta=tta, max_batch=max_batch, max_wait_ms=max_wait_ms,
        max_upload_mb=max_upload_mb, max_megapixels=max_megapixels, max_faces=max_faces, max_images=max_images,
        timeout_s=timeout, max_concurrency=max_concurrency, device=device, threads=threads, runtime=runtime), ws, config)

    def ready(rec) -> None:
        if rec.detector_name is not None:
            _ui.say(ctx, f"[dim]detector:[/] {rec.detector_name}" + (f" (auto: {rec.detector_note})" if rec.detector_note else ""))
        where = f"http://{'[' + cfg.host + ']' if ':' in cfg.host else cfg.host}:{cfg.port}"
        _ui.say(ctx, f"serving on {where}/ (page), {where}/docs (API), {where}/metrics; Ctrl-C stops"
                + ("; API key required" if cfg.api_key else ""))

    run_serve(cfg, ws, on_model=lambda art: _ui.using(ctx, ws, art), on_ready=ready)
