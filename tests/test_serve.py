"""`fer serve` through FastAPI's test client: every endpoint, every error path, parity with `fer predict`."""

from __future__ import annotations

import asyncio
import json
import struct
import time
import zlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from fercli import Recognizer
from fercli.errors import FerError
from fercli.inference import bundled_model
from fercli.serve import MicroBatcher, ServeConfig, create_app, is_loopback

pytestmark = [pytest.mark.usefixtures("one_thread"),  # many tiny forward passes on a shared machine
              pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")]


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Recognizer:
    """No detector: each image is one face (the hostile-upload tests never get as far as detection)."""
    return Recognizer(detector="none", device="cpu", workspace=tmp_path_factory.mktemp("serve_ws"))


@pytest.fixture(scope="module")
def rec(mobilenet_weights: Path, tmp_path_factory) -> Recognizer:
    return Recognizer(detector="retinaface-mobilenet", detector_weights=mobilenet_weights, device="cpu",
                      workspace=tmp_path_factory.mktemp("serve_ws"))


@contextmanager
def client(rec: Recognizer, **options):
    from fastapi.testclient import TestClient

    with TestClient(create_app(ServeConfig(**options), rec)) as c:
        yield c


def png(width: int, height: int, idat: bytes | None = None) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` grey pixels (the data need not match)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    data = idat if idat is not None else zlib.compress(b"\0" * 1024)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def face_png(size: int = 64) -> bytes:
    import cv2

    img = np.random.default_rng(0).integers(0, 255, (size, size), dtype=np.uint8)
    return cv2.imencode(".png", img)[1].tobytes()


@pytest.mark.shared
def test_predict_upload_and_raw_bytes(rec: Recognizer, shared_dir: Path):
    photo = (shared_dir / "faces" / "astronaut.png").read_bytes()
    with client(rec) as c:
        up = c.post("/v1/predict?top_k=2", files={"file": ("../../etc/passwd", photo, "image/png")})  # names are ignored
        raw = c.post("/v1/predict?top_k=2", content=photo, headers={"Content-Type": "application/octet-stream"})
    assert up.status_code == raw.status_code == 200, up.text
    body = up.json()
    assert body == raw.json()
    assert body["model"]["sha256"] == rec.sha256 and body["detector"] == "retinaface-mobilenet"
    (face,) = body["faces"]
    assert face["label"] == "happiness" and len(face["landmarks"]) == 5 and face["score"] > 0.99
    assert [t["label"] for t in face["top"]][0] == "happiness" and len(face["top"]) == 2
    assert abs(sum(face["probs"].values()) - 1) < 1e-4 and body["faces_capped"] is False


@pytest.mark.shared
def test_same_answer_as_fer_predict_json(rec: Recognizer, shared_dir: Path, runner, workspace: Path):
    from fercli.cli import app

    photo = shared_dir / "faces" / "group_children.jpg"
    res = runner.invoke(app, ["predict", str(photo), "--model", str(bundled_model()), "--detector",
                              "retinaface-mobilenet", "--detector-weights", str(rec.config.detector_weights), "--json"])
    assert res.exit_code == 0, res.output
    cli_faces = json.loads(res.stdout)[0]["faces"]
    with client(rec) as c:
        served = c.post("/v1/predict", files={"file": ("x.jpg", photo.read_bytes(), "image/jpeg")}).json()["faces"]
    assert len(served) == len(cli_faces) >= 8
    for s, f in zip(served, cli_faces):
        assert s["box"] == f["box"] and s["score"] == f["score"] and s["label"] == f["label"]
        assert all(abs(s["probs"][k] - f["probs"][k]) <= 1e-5 for k in f["probs"])


@pytest.mark.shared
def test_batch_endpoint_and_face_cap(rec: Recognizer, shared_dir: Path):
    faces = shared_dir / "faces"
    files = [("files", (n, (faces / n).read_bytes(), "image/jpeg")) for n in ("group_children.jpg", "no_face_road.jpg")]
    with client(rec, max_faces=3, max_images=3) as c:
        r = c.post("/v1/predict/batch", files=[*files, ("files", ("junk", b"GIF89a-no", "image/gif"))])
        assert r.status_code == 200, r.text
        group, road, junk = r.json()["results"]
        assert group["status"] == "ok" and len(group["faces"]) == 3 and group["faces_capped"] and group["faces_found"] >= 8
        assert road["status"] == "ok" and road["faces"] == [] and road["reason"].startswith("no face")
        assert junk["status"] == "error" and junk["http_status"] in (415, 422)
        too_many = c.post("/v1/predict/batch", files=files * 2)
        assert too_many.status_code == 413 and too_many.json()["error"]["code"] == "too_many_images"


def test_model_health_metrics_page(plain: Recognizer):
    with client(plain) as c:
        assert c.get("/healthz").json() == {"status": "ok", "sha256": plain.sha256}
        card = c.get("/v1/model").json()
        assert card["classes"] == list(plain.classes) and card["sha256"] == plain.sha256
        assert card["input_size"] == plain.classifier.preprocess.input_size and card["temperature"] == plain.classifier.temperature
        assert card["limits"]["max_upload_mb"] == 10 and card["detector"] is None
        ok = c.post("/v1/predict", content=face_png())
        assert ok.status_code == 200 and ok.json()["faces"][0]["box"] is None and ok.json()["detector"] is None
        c.post("/v1/predict", content=b"garbage")
        text = c.get("/metrics").text
        page = c.get("/")
    assert 'fer_http_requests_total{endpoint="/v1/predict",status="200"} 1.0' in text
    assert 'fer_http_requests_total{endpoint="/v1/predict",status="415"} 1.0' in text
    assert "fer_http_request_duration_seconds_bucket" in text and "fer_faces_per_request_count 1.0" in text
    assert "fer_batch_faces_count 1.0" in text
    assert page.status_code == 200 and "getUserMedia" in page.text and "http://" not in page.text.replace(
        "http://www.w3.org", "")  # offline: nothing loaded from elsewhere
    assert "default-src 'self'" in page.headers["content-security-policy"]


def test_hostile_uploads_each_get_a_clear_error(plain: Recognizer):
    good = face_png()
    cases = {
        "oversize": (b"\xff" * 20_000, 413, "upload_too_large"),
        "bomb": (png(30000, 30000), 413, "too_many_pixels"),  # a tiny file declaring 900 MP
        "big header": (png(9000, 9000), 413, "too_many_pixels"),  # 81 MP: over --max-megapixels 40
        "not an image": (b"%PDF-1.4 hello", 415, "not_an_image"),
        "truncated": (good[: len(good) // 2], 422, "unreadable_image"),
        "empty": (b"", 422, "no_image"),
    }
    with client(plain, max_upload_mb=0.01) as c:
        for name, (body, status, code) in cases.items():
            r = c.post("/v1/predict", content=body, headers={"Content-Type": "image/png"})
            assert (r.status_code, r.json()["error"]["code"]) == (status, code), name
        streamed = c.post("/v1/predict", content=iter([b"\0" * 8000] * 3))  # chunked: no Content-Length to check
        assert streamed.status_code == 413
        bad_form = c.post("/v1/predict", content=b"--x\r\nnot a part", headers={"Content-Type": "multipart/form-data; boundary=x"})
        assert bad_form.status_code in (400, 422)
        assert c.post("/v1/predict?min_score=3").json()["error"]["code"] == "invalid_option"
        assert c.post("/v1/predict?detector=retinaface-resnet50&detect=true", content=good).status_code == 422
        assert c.post("/v1/predict", content=good).status_code == 200  # the server is still fine


def test_api_key_required_off_loopback_and_checked(plain: Recognizer):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and not is_loopback("0.0.0.0")
    with pytest.raises(FerError, match="--api-key"):
        ServeConfig(host="0.0.0.0").check()
    ServeConfig(host="0.0.0.0", api_key="s3cret-key").check()
    with client(plain, api_key="s3cret-key") as c:
        assert c.post("/v1/predict", content=face_png()).status_code == 401
        wrong = c.post("/v1/predict", content=face_png(), headers={"X-API-Key": "s3cret-kez"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "unauthorized"
        assert c.get("/metrics").status_code == 401
        assert c.post("/v1/predict", content=face_png(), headers={"X-API-Key": "s3cret-key"}).status_code == 200
        assert c.get("/v1/model", headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
        assert c.get("/healthz").status_code == 200 and c.get("/").status_code == 200


def test_cors_is_off_unless_asked(plain: Recognizer):
    ask = {"Origin": "https://app.example.org", "Access-Control-Request-Method": "POST"}
    with client(plain) as c:
        assert "access-control-allow-origin" not in c.options("/v1/predict", headers=ask).headers
        assert "access-control-allow-origin" not in c.get("/v1/model", headers={"Origin": ask["Origin"]}).headers
    with client(plain, cors=("https://app.example.org",)) as c:
        assert c.options("/v1/predict", headers=ask).headers["access-control-allow-origin"] == "https://app.example.org"


def test_timeout_and_a_failing_request_leave_the_server_up(plain: Recognizer, monkeypatch: pytest.MonkeyPatch):
    real = plain.classify
    calls = []

    def flaky(crops, tta=None):
        calls.append(len(crops))
        if len(calls) == 1:
            time.sleep(2.0)  # past the time limit
        if len(calls) == 2:
            raise RuntimeError("boom")
        return real(crops, tta)

    monkeypatch.setattr(plain, "classify", flaky)
    # a limit of 1 s, not less: on a loaded machine (the suite runs on every core) reading the body alone
    # once took longer than a 0.3 s limit, which then expired before the slow call it is meant to catch
    with client(plain, timeout_s=1.0) as c:
        slow = c.post("/v1/predict", content=face_png())
        assert (slow.status_code, slow.json()["error"]["code"]) == (503, "timeout")
        time.sleep(1.3)  # the slow call ends, so the next request is the second call
        broken = c.post("/v1/predict", content=face_png())
        assert (broken.status_code, broken.json()["error"]["code"]) == (500, "internal_error")
        assert c.post("/v1/predict", content=face_png()).status_code == 200


@pytest.mark.parametrize("max_batch", [1, 4])
def test_micro_batcher_groups_concurrent_requests(max_batch: int):
    passes: list[int] = []

    def classify(crops: np.ndarray, tta: str) -> np.ndarray:
        passes.append(len(crops))
        time.sleep(0.01)
        return crops[:, :1, 0, 0].astype(float)  # each crop's own marker: results must go back to their owner

    async def main() -> list[np.ndarray]:
        b = MicroBatcher(classify, max_batch=max_batch, max_wait_ms=20)
        b.start()
        try:
            jobs = [np.full((1 + i % 2, 2, 2, 3), i, np.uint8) for i in range(10)]
            return await asyncio.gather(*(b.classify(j, "none") for j in jobs))
        finally:
            await b.stop()

    out = asyncio.run(main())
    assert [r[:, 0].tolist() for r in out] == [[i] * (1 + i % 2) for i in range(10)]
    assert sum(passes) == 15 and (max(passes) <= max_batch or max_batch == 1)
    if max_batch == 1:
        assert len(passes) == 10  # a 2-face job larger than the batch runs alone
    else:
        assert len(passes) <= 6


def test_fer_serve_command_refuses_bad_options_in_one_line(runner, workspace: Path):
    from fercli.cli import app

    for args, text in ((["--host", "0.0.0.0"], "--api-key"), (["--max-batch", "0"], "--max-batch"),
                       (["--cors", "example.org"], "--cors"), (["--detector", "yolo"], "--detector")):
        res = runner.invoke(app, ["serve", *args], env={"FER_API_KEY": ""})
        assert res.exit_code == 1 and text in res.output and "Traceback" not in res.output, (args, res.output)
    res = runner.invoke(app, ["serve", "--help"])
    assert res.exit_code == 0 and "--max-upload-mb" in res.output and "FER_API_KEY" in res.output


def test_a_port_in_use_is_one_line_before_the_model_loads(runner, workspace: Path, monkeypatch):
    import socket

    from fercli.cli import app

    monkeypatch.setenv("FER_BUNDLED_MODEL", "none")  # no model to load: the port is checked first
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        res = runner.invoke(app, ["serve", "--port", str(port)])
    assert res.exit_code == 1 and f"--port {port}: cannot listen on 127.0.0.1:{port}" in res.output, res.output
    assert "pass another --port" in res.output and "serving on" not in res.output


def test_port_0_prints_the_port_actually_bound_and_serves_there(runner, workspace: Path, monkeypatch):
    """`fer serve --port 0` names the port the system chose, and the server answers on it."""
    import threading

    import httpx
    import uvicorn

    from fercli.cli import app

    real_run = uvicorn.Server.run
    seen: dict[str, object] = {}

    def run_then_stop(self: uvicorn.Server, sockets=None) -> None:
        # The real server, on a thread, probed once over loopback, then asked to stop.
        thread = threading.Thread(target=real_run, args=(self,), kwargs={"sockets": sockets}, daemon=True)
        thread.start()
        port = sockets[0].getsockname()[1]
        seen["port"] = port
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and "status" not in seen:
            try:
                seen["status"] = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code
            except httpx.TransportError:
                time.sleep(0.05)
        self.should_exit = True
        thread.join(15)
        seen["stopped"] = not thread.is_alive()

    monkeypatch.setattr(uvicorn.Server, "run", run_then_stop)
    res = runner.invoke(app, ["serve", "--port", "0", "--detector", "none", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    port = seen["port"]
    assert isinstance(port, int) and port > 0 and seen["status"] == 200 and seen["stopped"]
    assert f"serving on http://127.0.0.1:{port}/ (page)" in res.output and ":0/" not in res.output, res.output


def test_a_header_over_pils_own_bomb_limit_gets_fercli_s_message(plain: Recognizer):
    """Over ~179 MP PIL refuses a header in its own words; the 413 says fercli's limit and its option."""
    from fercli.align.imageio import _header

    assert _header(png(20000, 10000))[1] == (20000, 10000)  # read past PIL's refusal: fercli's limit decides
    with client(plain) as c:
        for w, h in ((20000, 10000), (30000, 30000), (9000, 9000)):  # 200 and 900 MP (over PIL's), 81 MP
            r = c.post("/v1/predict", content=png(w, h), headers={"Content-Type": "image/png"})
            err = r.json()["error"]
            assert (r.status_code, err["code"]) == (413, "too_many_pixels"), (w, h)
            assert err["message"] == (f"{w}x{h} pixels is more than the 40 MP limit "
                                      "(raise it with the server's --max-megapixels)"), err["message"]


def test_several_files_to_v1_predict_point_to_the_batch_endpoint(plain: Recognizer):
    """Two files to /v1/predict: the error says it takes one and where several go; a form field is no image."""
    two = [("file", ("a.png", face_png(), "image/png")), ("file", ("b.png", face_png(), "image/png"))]
    with client(plain) as c:
        r = c.post("/v1/predict", files=two)
        assert (r.status_code, r.json()["error"]["code"]) == (422, "too_many_images"), r.text
        assert r.json()["error"]["message"] == ("/v1/predict takes one image; send several to /v1/predict/batch "
                                                "(up to 16 per request)")
        one = c.post("/v1/predict", files=two[:1], data={"note": "a plain form field is not an image"})
        assert one.status_code == 200, one.text
        batch = c.post("/v1/predict/batch", files=two)
        assert batch.status_code == 200 and [x["status"] for x in batch.json()["results"]] == ["ok", "ok"]


def test_model_card_labels_the_recorded_accuracy_as_the_holdout_s(plain: Recognizer):
    """/v1/model must not pass the training holdout's accuracy off as a report figure (the README quotes FERPlus valid)."""
    from fercli.serve import holdout_accuracy

    with client(plain) as c:
        card = c.get("/v1/model").json()
        page = c.get("/").text
    best = plain.model.meta["metrics"]["best"]
    held = card["holdout_accuracy"]
    assert "accuracy" not in card and held["value"] == round(best["val_acc"], 4) and held["epoch"] == best["epoch"]
    assert held["mean_class_accuracy"] == round(best["val_mean_class_acc"], 4)
    assert "holdout" in held["what"] and "not a report split such as FERPlus valid" in held["what"]
    # the figure is flagged exactly when the shipped weights differ from the recorded ones (tau != 0 or alpha != 1)
    meta = plain.model.meta
    altered = (meta.get("logit_adjustment") or {}).get("tau", 0) != 0 or \
        (meta.get("weight_interpolation") or {}).get("alpha", 1) != 1
    assert ("changed_after" in held) == altered
    assert "holdout accuracy" in page and "m.accuracy" not in page
    meta = {"metrics": {"best": {"val_acc": 0.81234, "epoch": 7}}, "logit_adjustment": {"tau": 0.75},
            "weight_interpolation": {"alpha": 0.5}}
    assert holdout_accuracy(meta)["changed_after"] == ("the weights were changed after this was recorded: "
                                                       "logit adjustment (tau 0.75), weight interpolation (alpha 0.5)")
    assert holdout_accuracy({"metrics": {}}) is None
