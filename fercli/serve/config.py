"""The options of `fer serve`, checked before anything is loaded (light: no torch, OpenCV or FastAPI)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from typing import TYPE_CHECKING

from fercli.align.config import DEFAULT_DETECTOR, DEFAULT_MIN_SCORE
from fercli.choices import TTA_MODES
from fercli.errors import FerError
from fercli.serve.security import API_KEY_ENV, is_loopback

if TYPE_CHECKING:
    from fercli.api import RecognizerConfig


@dataclass
class ServeConfig:
    """Options of `fer serve`; the detection options mean what they mean for `fer predict`."""

    model: Path | None = None  # default: the workspace's student, else the bundled model
    detector: str = DEFAULT_DETECTOR
    detector_weights: Path | None = None
    min_score: float = DEFAULT_MIN_SCORE
    tta: str | None = None  # default: the model's recommendation
    device: str = "auto"
    threads: int | None = None
    runtime: str = "onnxruntime"
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None  # required for a non-loopback host ($FER_API_KEY)
    cors: tuple[str, ...] = ()  # allowed origins; none: CORS off
    max_batch: int = 16  # faces per classifier pass across concurrent requests
    max_wait_ms: float = 5.0  # how long a pass waits for more faces
    max_upload_mb: float = 10.0  # request body limit
    max_megapixels: float = 40.0  # decoded image limit, from the header
    max_faces: int = 32  # faces classified per image; more are dropped and reported
    max_images: int = 16  # images per batch request
    timeout_s: float = 30.0  # reading a body, and answering, each
    max_concurrency: int = 64  # open connections before uvicorn answers 503

    def check(self) -> None:
        """Refuse bad values (FerError naming the option) before anything is loaded."""
        if self.tta is not None and self.tta not in TTA_MODES:
            raise FerError(f"--tta must be none or flip, got {self.tta!r}")
        if not 0 <= self.min_score < 1:
            raise FerError(f"--min-score must be in [0, 1), got {self.min_score}")
        if not 0 <= self.port <= 65535:
            raise FerError(f"--port must be in 0..65535, got {self.port}")
        for name, value, lo, hi in (("--max-batch", self.max_batch, 1, 1024), ("--max-wait-ms", self.max_wait_ms, 0, 1000),
                                    ("--max-upload-mb", self.max_upload_mb, 0.001, 1024),
                                    ("--max-megapixels", self.max_megapixels, 0.001, 250),
                                    ("--max-faces", self.max_faces, 1, 1000), ("--max-images", self.max_images, 1, 256),
                                    ("--timeout", self.timeout_s, 0.1, 3600), ("--max-concurrency", self.max_concurrency, 1, 100_000)):
            if not lo <= value <= hi:
                raise FerError(f"{name} must be in [{lo:g}, {hi:g}], got {value:g}")
        if self.api_key is not None and len(self.api_key) < 8:
            raise FerError("--api-key must be at least 8 characters")
        for origin in self.cors:
            if origin != "*" and not origin.startswith(("http://", "https://")):
                raise FerError(f"--cors takes origins such as https://example.org (or *), got {origin!r}")
        if not is_loopback(self.host) and not self.api_key:
            raise FerError(f"--host {self.host} is reachable from other machines: pass --api-key KEY (or set "
                           f"${API_KEY_ENV}), or bind 127.0.0.1")

    def recognizer_config(self) -> RecognizerConfig:
        from fercli.api import RecognizerConfig

        return RecognizerConfig(model=self.model, detector=self.detector, detector_weights=self.detector_weights,
                                min_score=self.min_score, tta=self.tta, device=self.device, threads=self.threads,
                                runtime=self.runtime, max_faces=self.max_faces)
