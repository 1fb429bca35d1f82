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

Modules: :mod:`~fercli.serve.config` (options), :mod:`~fercli.serve.app` (the app and its endpoints),
:mod:`~fercli.serve.batcher` (micro-batching), :mod:`~fercli.serve.bodies` (reading uploads),
:mod:`~fercli.serve.problems` (errors), :mod:`~fercli.serve.security` (API key, loopback) and
:mod:`~fercli.serve.server` (:func:`run_serve`). Everything public is re-exported here.
"""

from typing import TYPE_CHECKING

from fercli.lazy import lazy_exports
from fercli.serve.config import ServeConfig
from fercli.serve.security import API_KEY_ENV, LOOPBACK_NAMES, check_api_key, is_loopback

if TYPE_CHECKING:
    from fercli.serve.app import ENDPOINTS, PredictOptions, create_app, holdout_accuracy, model_card, predict_options
    from fercli.serve.batcher import MicroBatcher
    from fercli.serve.bodies import multipart_files, read_body
    from fercli.serve.problems import HTTPProblem, image_problem
    from fercli.serve.server import bind_port, run_serve

# The app and the server import torch, OpenCV and FastAPI: loaded on first use (PEP 562), so that
# `fer serve` builds and validates ServeConfig (light, like the security helpers) before it pays for them.
_MODULES = {
    "app": ("ENDPOINTS", "PredictOptions", "create_app", "holdout_accuracy", "model_card", "predict_options"),
    "batcher": ("MicroBatcher",),
    "bodies": ("multipart_files", "read_body"),
    "problems": ("HTTPProblem", "image_problem"),
    "server": ("bind_port", "run_serve"),
}


__getattr__ = lazy_exports(__name__, _MODULES)

__all__ = [
    "API_KEY_ENV", "ENDPOINTS", "HTTPProblem", "LOOPBACK_NAMES", "MicroBatcher", "PredictOptions", "ServeConfig",
    "bind_port", "check_api_key", "create_app", "holdout_accuracy", "image_problem", "is_loopback", "model_card",
    "multipart_files", "predict_options", "read_body", "run_serve",
]
