"""The FastAPI app: endpoints, the guard middleware (key, time limit, metrics, JSON errors), the page."""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import asynccontextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from fercli.align.imageio import ImageProblem, LoadedImage
from fercli.api import Detection, FaceResult, Recognizer
from fercli.errors import FerError
from fercli.serve.batcher import MicroBatcher
from fercli.serve.bodies import multipart_files, read_body
from fercli.serve.config import ServeConfig
from fercli.serve.problems import HTTPProblem, image_problem
from fercli.serve.security import check_api_key
from fercli.workspace import Workspace

log = logging.getLogger(__name__)


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


HOLDOUT_WHAT = ("accuracy on the training run's holdout (the split it chose its best epoch on: its manifest's "
                "valid split, or the share of train held out by --val-fraction), one pass without TTA, recorded "
                "in the file at training; not a report split such as FERPlus valid, which `fer eval` measures "
                "(the README quotes the bundled model's)")


def holdout_accuracy(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The accuracy a checkpoint records for its training holdout, labelled as such (None when absent).

    Checkpoints record no report-split figures, only the holdout's (``metrics.best``), so this is
    all a file can say about itself; ``changed_after`` says when the weights were altered after it was
    recorded (post-hoc logit adjustment, weight interpolation), which makes the figure approximate."""
    metrics = meta.get("metrics")
    best = metrics.get("best") if isinstance(metrics, dict) else None
    if not isinstance(best, dict) or not isinstance(best.get("val_acc"), (int, float)):
        return None
    out: dict[str, Any] = {"value": round(float(best["val_acc"]), 4)}
    if isinstance(best.get("val_mean_class_acc"), (int, float)):
        out["mean_class_accuracy"] = round(float(best["val_mean_class_acc"]), 4)
    if isinstance(best.get("epoch"), int):
        out["epoch"] = best["epoch"]
    out["what"] = HOLDOUT_WHAT
    changed = []
    tau = (meta.get("logit_adjustment") or {}).get("tau")  # experiments/bundle_recipe.py writes both
    alpha = (meta.get("weight_interpolation") or {}).get("alpha")
    if isinstance(tau, (int, float)) and tau != 0:
        changed.append(f"logit adjustment (tau {tau:g})")
    if isinstance(alpha, (int, float)) and alpha != 1:
        changed.append(f"weight interpolation (alpha {alpha:g})")
    if changed:
        out["changed_after"] = "the weights were changed after this was recorded: " + ", ".join(changed)
    return out


def model_card(rec: Recognizer, cfg: ServeConfig) -> dict[str, Any]:
    """What `GET /v1/model` and the page show: the model, its calibration, the holdout accuracy recorded
    in the file (when it records one; see :func:`holdout_accuracy`) and the server's limits."""
    clf = rec.classifier
    return {
        "arch": clf.arch, "kind": clf.kind, "classes": list(clf.classes), "input_size": clf.preprocess.input_size,
        "temperature": clf.temperature, "tta": cfg.tta or rec.tta, "sha256": rec.sha256, "file": rec.model.path.name,
        "bundled": bool(getattr(rec.model, "bundled", False)), "holdout_accuracy": holdout_accuracy(rec.model.meta or {}),
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

    @app.middleware("http")
    async def guard(request: Request, call_next: Any) -> Response:
        """Authentication, the time limit, metrics, and a JSON 500 for anything unexpected."""
        t0 = time.perf_counter()
        route = request.url.path if request.url.path in ENDPOINTS else "other"
        try:
            if route.startswith("/v1/") or route == "/metrics":
                check_api_key(request.headers, key)
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

    async def images_of(request: Request, max_images: int, too_many: HTTPProblem | None = None) -> list[bytes]:
        body = await asyncio.wait_for(read_body(request, int(cfg.max_upload_mb * 1024 * 1024)), cfg.timeout_s)
        ctype = request.headers.get("content-type", "")
        if ctype.lower().startswith("multipart/form-data"):
            files = multipart_files(body, ctype, max_images, too_many)
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
        data = await images_of(request, 1, HTTPProblem(
            422, "too_many_images", f"/v1/predict takes one image; send several to /v1/predict/batch "
                                    f"(up to {cfg.max_images} per request)"))
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
        """Architecture, classes, input size, temperature, sha256, the holdout accuracy recorded in the file
        (``holdout_accuracy``: the training run's own holdout, not a report split) and the limits."""
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
