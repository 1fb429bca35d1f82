"""`fer serve`: the :class:`~fercli.api.Recognizer` behind an HTTP API (FastAPI + uvicorn) and a browser page.

Endpoints: ``POST /v1/predict`` (one image: multipart upload or raw bytes), ``POST /v1/predict/batch``
(several images, multipart), ``GET /v1/model``, ``GET /healthz``, ``GET /metrics`` (Prometheus) and
the page at ``/`` (``fercli/static/index.html``, self-contained). The model and detector are loaded
once, before the port opens; answers equal `fer predict`'s for the same image and options.

Concurrency: the event loop only parses and answers. Decoding and detection run in a small thread
pool (detection serialised by the Recognizer's lock); classification goes through
:class:`MicroBatcher`, which gathers the faces of concurrent requests into one forward pass of up to
``max_batch`` faces, waiting at most ``max_wait_ms`` for more, on its own thread.

Safety: bodies are read into memory under ``max_upload_mb`` (413, and Content-Length is checked
before reading); multipart is parsed in memory (upload file names are ignored; nothing touches disk);
an image's pixel count comes from its header and is refused (413) before any decoding; an unknown
format is 415, an empty, truncated or corrupt one 422; faces beyond ``max_faces`` are dropped and
the answer says so. A non-loopback bind needs an API key, compared in constant time (401). CORS is
off unless origins are given. Reading a body and answering each have a time limit, and any failure
in one request is that request's error (JSON), never the server's end.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import logging
import time
from contextlib import asynccontextmanager
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from fercli.align.imageio import NOT_AN_IMAGE, ImageProblem, LoadedImage
from fercli.api import Detection, FaceResult, Recognizer, RecognizerConfig
from fercli.calibration import TTA_MODES
from fercli.errors import FerError
from fercli.workspace import Artifact, Workspace

log = logging.getLogger(__name__)

API_KEY_ENV = "FER_API_KEY"
LOOPBACK_NAMES = ("localhost",)


@dataclass
class ServeConfig:
    """Options of `fer serve`; the detection options mean what they mean for `fer predict`."""

    model: Path | None = None  # default: the workspace's student, else the bundled model
    detector: str = "auto"
    detector_weights: Path | None = None
    min_score: float = 0.8
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
        return RecognizerConfig(model=self.model, detector=self.detector, detector_weights=self.detector_weights,
                                min_score=self.min_score, tta=self.tta, device=self.device, threads=self.threads,
                                runtime=self.runtime, max_faces=self.max_faces)


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (127.0.0.0/8, ::1, localhost)."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


class HTTPProblem(Exception):
    """A request's failure: an HTTP status, a short machine-readable code and a one-line message."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, **self.extra}}


def image_problem(exc: ImageProblem) -> HTTPProblem:
    """An undecodable upload's status: too many pixels 413, not an image 415, damaged or empty 422."""
    if exc.status == "too_large":
        return HTTPProblem(413, "too_many_pixels", exc.reason)
    if exc.reason == NOT_AN_IMAGE:
        return HTTPProblem(415, "not_an_image", exc.reason)
    return HTTPProblem(422, "unreadable_image", exc.reason)


# ---- micro-batching ----------------------------------------------------------------------------
@dataclass
class _Job:
    crops: np.ndarray  # (n, S, S, 3) uint8 RGB
    tta: str
    future: asyncio.Future[np.ndarray]


@dataclass
class MicroBatcher:
    """Classifies the faces of concurrent requests together.

    :meth:`classify` queues a request's crops; one collector task takes queued jobs until they hold
    ``max_batch`` faces or ``max_wait_ms`` has passed since the first, then runs them as one pass on a
    single worker thread (a job larger than ``max_batch`` runs alone). While a pass runs, new jobs
    queue up, so under load passes fill without waiting. Jobs with different TTA run as separate
    passes of one round.
    """

    classify_fn: Callable[[np.ndarray, str], np.ndarray]
    max_batch: int = 16
    max_wait_ms: float = 5.0
    on_batch: Callable[[int, float], None] | None = None  # (faces, seconds) of each pass, for metrics
    _queue: asyncio.Queue[_Job] | None = None
    _carry: _Job | None = None  # the job that did not fit the last pass: first in the next
    _task: asyncio.Task[None] | None = None
    _executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="fer-classify"))

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def classify(self, crops: np.ndarray, tta: str) -> np.ndarray:
        """Probabilities (n, C) of ``crops``, classified in a shared pass."""
        if len(crops) == 0:
            return np.empty((0, 0))
        assert self._queue is not None, "MicroBatcher.start() was not called"
        fut: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(crops, tta, fut))
        return await fut

    async def _collect(self) -> list[_Job]:
        assert self._queue is not None
        jobs = [self._carry or await self._queue.get()]
        self._carry = None
        n = len(jobs[0].crops)
        deadline = time.monotonic() + self.max_wait_ms / 1000
        while n < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), left)
                except asyncio.TimeoutError:
                    break
            if n + len(job.crops) > self.max_batch:
                self._carry = job
                break
            jobs.append(job)
            n += len(job.crops)
        return jobs

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._collect()
            jobs = [j for j in jobs if not j.future.done()]  # the request gave up (timeout, disconnect)
            for tta in dict.fromkeys(j.tta for j in jobs):
                group = [j for j in jobs if j.tta == tta]
                crops = np.concatenate([j.crops for j in group])
                t0 = time.perf_counter()
                try:
                    probs = await loop.run_in_executor(self._executor, self.classify_fn, crops, tta)
                except Exception as exc:  # one bad pass fails its requests, never the batcher
                    log.exception("classification failed")
                    for j in group:
                        if not j.future.done():
                            j.future.set_exception(exc)
                    continue
                if self.on_batch is not None:
                    self.on_batch(len(crops), time.perf_counter() - t0)
                k = 0
                for j in group:
                    if not j.future.done():
                        j.future.set_result(probs[k:k + len(j.crops)])
                    k += len(j.crops)


# ---- request bodies ----------------------------------------------------------------------------
async def read_body(request: Any, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` bytes (Content-Length first)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise HTTPProblem(413, "upload_too_large", f"the body is {int(declared):,} bytes; the limit is {limit:,}")
        except ValueError:
            raise HTTPProblem(400, "bad_request", "Content-Length is not a number") from None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPProblem(413, "upload_too_large", f"the body is over the limit of {limit:,} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def multipart_files(body: bytes, content_type: str, max_parts: int) -> list[bytes]:
    """The file parts of a multipart/form-data body, in order, parsed in memory.

    A part counts as a file when it has a filename or a non-text content type; its filename is
    never used. Plain form fields are ignored."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise HTTPProblem(400, "bad_request", "multipart/form-data without a boundary")
    parts: list[tuple[dict[bytes, bytes], list[bytes]]] = []
    header = [b"", b""]

    def on_part_begin() -> None:
        if len(parts) >= max_parts:
            raise HTTPProblem(413, "too_many_images", f"more than {max_parts} parts in one request")
        parts.append(({}, []))
        header[:] = [b"", b""]

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header[0] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header[1] += data[start:end]

    def on_header_end() -> None:
        parts[-1][0][header[0].strip().lower()] = header[1].strip()
        header[:] = [b"", b""]

    def on_part_data(data: bytes, start: int, end: int) -> None:
        parts[-1][1].append(data[start:end])

    parser = MultipartParser(boundary, {"on_part_begin": on_part_begin, "on_header_field": on_header_field,
                                        "on_header_value": on_header_value, "on_header_end": on_header_end,
                                        "on_part_data": on_part_data})
    try:
        parser.write(body)
        parser.finalize()
    except HTTPProblem:
        raise
    except Exception as exc:
        raise HTTPProblem(400, "bad_request", f"malformed multipart body ({type(exc).__name__})") from None
    files = []
    for headers, data in parts:
        _, disp = parse_options_header(headers.get(b"content-disposition", b""))
        ctype = headers.get(b"content-type", b"text/plain").split(b";")[0].strip().lower()
        if b"filename" in disp or not ctype.startswith(b"text/"):
            files.append(b"".join(data))
    return files


# ---- the app -----------------------------------------------------------------------------------
@dataclass
class PredictOptions:
    """The query options of both predict endpoints (None: the server's default)."""

    detect: bool | None = None
    tta: str | None = None
    top_k: int | None = None
    detector: str | None = None
    min_score: float | None = None


def predict_options(
    detect: bool | None = Query(None, description="Find faces first (default: true when the server has a "
                                                  "detector); false: the image is one aligned face."),
    tta: str | None = Query(None, pattern="^(none|flip)$", description="none or flip (default: the model's recommendation)."),
    top_k: int | None = Query(None, ge=1, le=100, description="Also list the k most probable classes per face."),
    detector: str | None = Query(None, max_length=40, description="A detector the server has offline (default: its own)."),
    min_score: float | None = Query(None, ge=0, lt=1, description="Minimum detection score, in [0, 1)."),
) -> PredictOptions:
    """FastAPI dependency: the options, validated (a bad value is a 422 naming it)."""
    return PredictOptions(detect, tta, top_k, detector, min_score)


def model_card(rec: Recognizer, cfg: ServeConfig) -> dict[str, Any]:
    """What `GET /v1/model` and the page show: the model, its calibration, its accuracy as recorded in
    the file (when it records one) and the server's limits."""
    meta = rec.model.meta or {}
    metrics = meta.get("metrics")
    best = metrics.get("best") if isinstance(metrics, dict) else None
    accuracy = None
    if isinstance(best, dict) and isinstance(best.get("val_acc"), (int, float)):
        accuracy = {"value": round(float(best["val_acc"]), 4), "what": "validation accuracy recorded at training"
                    + (f" (epoch {best['epoch']})" if "epoch" in best else "")}
    clf = rec.classifier
    return {
        "arch": clf.arch, "kind": clf.kind, "classes": list(clf.classes), "input_size": clf.preprocess.input_size,
        "temperature": clf.temperature, "tta": cfg.tta or rec.tta, "sha256": rec.sha256, "file": rec.model.path.name,
        "bundled": bool(getattr(rec.model, "bundled", False)), "accuracy": accuracy,
        "detector": rec.detector_name, "min_score": cfg.min_score,
        "limits": {"max_upload_mb": cfg.max_upload_mb, "max_megapixels": cfg.max_megapixels,
                   "max_faces": cfg.max_faces, "max_images": cfg.max_images, "timeout_s": cfg.timeout_s},
        "notes": ["Probabilities describe the look of a face, not what a person feels.",
                  "Trained on cropped, mostly frontal faces: profiles, small or occluded faces are less reliable."],
    }


def _face_json(face: FaceResult, top_k: int | None) -> dict[str, Any]:
    out = face.to_dict()
    if top_k is not None:
        out["top"] = [{"label": c, "p": p} for c, p in face.top(top_k)]
    return out


def create_app(cfg: ServeConfig, recognizer: Recognizer | None = None, workspace: Workspace | None = None) -> Any:
    """The FastAPI app. Without ``recognizer``, it is built (the model and detector loaded) at start-up."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

    cfg.check()
    registry = CollectorRegistry()  # one per app: several apps (tests) never share counters
    requests_total = Counter("fer_http_requests", "HTTP requests by endpoint and status code", ["endpoint", "status"],
                             registry=registry)
    latency = Histogram("fer_http_request_duration_seconds", "Time to answer a request", ["endpoint"], registry=registry,
                        buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
    faces_hist = Histogram("fer_faces_per_request", "Faces classified per image request", registry=registry,
                           buckets=(0, 1, 2, 4, 8, 16, 32, 64, 128))
    batch_hist = Histogram("fer_batch_faces", "Faces per classifier pass (micro-batch size)", registry=registry,
                           buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
    pass_hist = Histogram("fer_batch_duration_seconds", "Time of one classifier pass", registry=registry,
                          buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1))
    state: dict[str, Any] = {"rec": recognizer}
    prep = ThreadPoolExecutor(2, thread_name_prefix="fer-prep")  # decoding and detection, off the event loop

    def on_batch(n: int, seconds: float) -> None:
        batch_hist.observe(n)
        pass_hist.observe(seconds)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if state["rec"] is None:
            state["rec"] = await asyncio.get_running_loop().run_in_executor(
                None, Recognizer.from_config, cfg.recognizer_config(), workspace)
        rec: Recognizer = state["rec"]
        rec.sha256  # noqa: B018 - hashed once now, not in the first request
        state["card"] = model_card(rec, cfg)
        batcher = MicroBatcher(rec.classify, cfg.max_batch, cfg.max_wait_ms, on_batch)
        batcher.start()
        state["batcher"] = batcher
        log.info("model %s (sha256 %s), detector %s", rec.model.path, rec.sha256[:12], rec.detector_name)
        try:
            yield
        finally:
            await batcher.stop()
            prep.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(title="fercli", version=__import__("fercli").__version__, lifespan=lifespan,
                  description="Facial expression recognition: the faces in an image, their boxes, landmarks and "
                              "expression probabilities. See the README's `fer serve` section.")
    if cfg.cors:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cfg.cors), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "X-API-Key", "Content-Type"])
    key = cfg.api_key.encode() if cfg.api_key else None

    def problem_response(p: HTTPProblem) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if p.status == 401 else None
        return JSONResponse(p.body(), status_code=p.status, headers=headers)

    def check_key(request: Request) -> None:
        if key is None:
            return
        given = request.headers.get("x-api-key")
        auth = request.headers.get("authorization", "")
        if given is None and auth[:7].lower() == "bearer ":
            given = auth[7:].strip()
        # Constant time: how much of a key matched must not show in the response time.
        if given is None or not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), key):
            raise HTTPProblem(401, "unauthorized", "a valid API key is required (X-API-Key or Authorization: Bearer)")

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        """Authentication, the time limit, metrics, and a JSON 500 for anything unexpected."""
        t0 = time.perf_counter()
        route = request.url.path if request.url.path in ENDPOINTS else "other"
        try:
            if route.startswith("/v1/") or route == "/metrics":
                check_key(request)
            if route.startswith("/v1/") and state.get("batcher") is None:
                raise HTTPProblem(503, "loading", "the model is still loading")
            response = await asyncio.wait_for(call_next(request), cfg.timeout_s)
        except HTTPProblem as p:
            response = problem_response(p)
        except asyncio.TimeoutError:
            response = problem_response(HTTPProblem(503, "timeout", f"no answer within {cfg.timeout_s:g} s; retry later"))
        except Exception:  # one bad request never takes the server down
            log.exception("request failed: %s %s", request.method, request.url.path)
            response = problem_response(HTTPProblem(500, "internal_error", "internal error; the server log has details"))
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        requests_total.labels(route, str(response.status_code)).inc()
        latency.labels(route).observe(time.perf_counter() - t0)
        return response

    @app.exception_handler(HTTPProblem)
    async def _problem(request: Request, exc: HTTPProblem) -> JSONResponse:
        return problem_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return problem_response(HTTPProblem(422, "invalid_option", f"{where}: {first.get('msg', 'invalid value')}"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem_response(HTTPProblem(exc.status_code, "http_error", str(exc.detail)))

    async def images_of(request: Request, max_images: int) -> list[bytes]:
        body = await asyncio.wait_for(read_body(request, int(cfg.max_upload_mb * 1024 * 1024)), cfg.timeout_s)
        ctype = request.headers.get("content-type", "")
        if ctype.lower().startswith("multipart/form-data"):
            files = multipart_files(body, ctype, max_images)
        else:  # raw image bytes, whatever the declared type: the header decides what it is
            files = [body] if body else []
        if not files:
            raise HTTPProblem(422, "no_image", "the request holds no image: send a multipart file or the raw image bytes")
        return files

    def prepare(data: list[bytes], opts: PredictOptions) -> list[tuple[LoadedImage, Detection] | HTTPProblem]:
        """Decode and detect (on a worker thread); an image that fails is its HTTPProblem."""
        rec: Recognizer = state["rec"]
        pics: list[LoadedImage | HTTPProblem] = []
        for blob in data:
            try:
                pics.append(rec.load(blob, max_pixels=int(cfg.max_megapixels * 1e6), quiet=False))
            except ImageProblem as exc:
                pics.append(image_problem(exc))
        good = [p for p in pics if isinstance(p, LoadedImage)]
        try:
            found = iter(rec.detect(good, detect=opts.detect, detector=opts.detector, max_faces=cfg.max_faces,
                                    min_score=cfg.min_score if opts.min_score is None else opts.min_score))
        except FerError as exc:  # e.g. a detector that is not available offline
            raise HTTPProblem(422, "invalid_option", str(exc)) from None
        return [p if isinstance(p, HTTPProblem) else (p, next(found)) for p in pics]

    async def answer(data: list[bytes], opts: PredictOptions) -> list[dict[str, Any] | HTTPProblem]:
        """Each image's JSON result, or its HTTPProblem; resolves ``opts``' defaults in place."""
        rec: Recognizer = state["rec"]
        opts.detect = rec.detector_name is not None if opts.detect is None else opts.detect
        opts.tta = opts.tta or cfg.tta or rec.tta
        prepared = await asyncio.get_running_loop().run_in_executor(prep, prepare, data, opts)
        crops = [f.crop for item in prepared if not isinstance(item, HTTPProblem) for f in item[1].faces]
        probs = await state["batcher"].classify(np.stack(crops) if crops else np.empty((0,)), opts.tta)
        out: list[dict[str, Any] | HTTPProblem] = []
        k = 0
        for item in prepared:
            if isinstance(item, HTTPProblem):
                out.append(item)
                continue
            pic, det = item
            faces = rec.results(det.faces, probs[k:k + len(det.faces)])
            k += len(det.faces)
            faces_hist.observe(len(faces))
            out.append({
                "width": pic.original_size[0], "height": pic.original_size[1],
                "faces": [_face_json(f, opts.top_k) for f in faces],
                "faces_found": det.found if opts.detect else None, "faces_capped": det.capped,
                "max_faces": cfg.max_faces, "reason": det.reason if not faces else None,
            })
        return out

    def envelope(rec: Recognizer, opts: PredictOptions) -> dict[str, Any]:
        return {"model": {"sha256": rec.sha256, "arch": rec.classifier.arch, "classes": list(rec.classes)},
                "detector": (opts.detector if opts.detector not in (None, "auto") else rec.detector_name)
                if opts.detect else None, "tta": opts.tta}

    upload_doc = {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {"file": {"type": "string", "format": "binary"}}}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        "image/png": {"schema": {"type": "string", "format": "binary"}}}}}
    batch_doc = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}}

    @app.post("/v1/predict", openapi_extra=upload_doc, summary="The faces in one image")
    async def predict_one(request: Request, opts: PredictOptions = Depends(predict_options)) -> JSONResponse:
        """One image (a multipart file, or the raw bytes as the body): every face's box, landmarks,
        detection score, label and probability per class, with the model's sha256."""
        rec: Recognizer = state["rec"]
        data = await images_of(request, 1)
        if len(data) > 1:
            raise HTTPProblem(422, "too_many_images", "one image per request here; use /v1/predict/batch for several")
        (result,) = await answer(data, opts)
        if isinstance(result, HTTPProblem):
            raise result
        return JSONResponse({**envelope(rec, opts), **result})

    @app.post("/v1/predict/batch", openapi_extra=batch_doc, summary="The faces in several images")
    async def predict_batch(request: Request, opts: PredictOptions = Depends(predict_options)) -> JSONResponse:
        """Several images as multipart files (up to the server's max_images). Each image answers on its
        own: ``results[i]`` has ``status`` "ok" and the faces, or "error" and the error it would have
        had alone (a bad image does not fail the others)."""
        rec: Recognizer = state["rec"]
        data = await images_of(request, cfg.max_images)
        results = await answer(data, opts)
        items = []
        for i, r in enumerate(results):
            if isinstance(r, HTTPProblem):
                items.append({"index": i, "status": "error", "http_status": r.status, **r.body()})
            else:
                items.append({"index": i, "status": "ok", **r})
        return JSONResponse({**envelope(rec, opts), "results": items})

    @app.get("/v1/model", summary="The model behind the API")
    async def model_info() -> JSONResponse:
        """Architecture, classes, input size, temperature, sha256, accuracy recorded in the file and limits."""
        return JSONResponse(state["card"])

    @app.get("/healthz", summary="200 once the model is loaded")
    async def healthz() -> JSONResponse:
        if state.get("batcher") is None:
            return JSONResponse({"status": "loading"}, status_code=503)
        return JSONResponse({"status": "ok", "sha256": state["rec"].sha256})

    @app.get("/metrics", summary="Prometheus metrics", include_in_schema=True)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    page = resources.files("fercli").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> HTMLResponse:
        # Self-contained: inline script and style, no request leaves this server (and the webcam's
        # frames go only to this origin).
        csp = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
               "style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'; connect-src 'self'")
        return HTMLResponse(page, headers={"Content-Security-Policy": csp, "Cache-Control": "no-cache"})

    return app


ENDPOINTS = frozenset({"/", "/v1/predict", "/v1/predict/batch", "/v1/model", "/healthz", "/metrics", "/docs",
                       "/openapi.json"})


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
