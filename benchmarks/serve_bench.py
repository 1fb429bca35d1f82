"""Load and hostile-upload figures for `fer serve` (issue 15), printed as one JSON object.

Starts `fer serve` on 127.0.0.1 as a subprocess (twice: ``--max-batch 1``, then ``--max-batch N``),
and drives it from client threads whose loops stop by themselves at a deadline or a request count:

* crops: ``--clients`` concurrent clients post 64x64 face crops with ``detect=false`` for
  ``--duration`` s against each server: requests/s, p50/p99 latency, errors, and the ratio of the two;
* rss: the batching server's resident memory before and after ``--rss-requests`` more requests;
* photos: full photos with detection (group_children.jpg) for ``--photo-duration`` s: requests/s, faces/s, p99;
* hostile: good requests interleaved with oversize uploads, decompression bombs, garbage and wrong keys
  for ``--hostile-duration`` s: every good answer must equal the reference, and the server must be alive after.

Clients and server share the machine: on few cores, the figures include the clients' own CPU use.

    python benchmarks/serve_bench.py                        # ../shared (or $FER_SHARED) for photos and weights
    python benchmarks/serve_bench.py --duration 10 --clients 8
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
KEY = "bench-key-0123456789"


def shared_root() -> Path:
    return Path(os.environ.get("FER_SHARED") or ROOT.parent / "shared")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def crops(n: int = 8) -> list[bytes]:
    """64x64 PNG face crops: FERPlus valid images (48x48, enlarged), else the astronaut's face."""
    import cv2

    src = shared_root() / "datasets" / "ferplus" / "FER2013Valid"
    files = sorted(src.glob("*.png"))[:n] if src.is_dir() else []
    imgs = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in files]
    if not imgs:
        img = cv2.imread(str(shared_root() / "faces" / "astronaut.png"))[56:178, 178:273]
        imgs = [img]
    return [cv2.imencode(".png", cv2.resize(i, (64, 64)))[1].tobytes() for i in imgs]


def bomb() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 4096)) + chunk(b"IEND", b""))


class Server:
    """`fer serve` in a subprocess on a free loopback port; stopped on exit."""

    def __init__(self, args: argparse.Namespace, max_batch: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws = tempfile.mkdtemp(prefix="serve_bench_")
        cmd = [sys.executable, "-m", "fercli", "-q", "-w", self.ws, "serve", "--port", str(self.port),
               "--max-batch", str(max_batch), "--max-wait-ms", str(args.max_wait_ms), "--api-key", KEY,
               "--max-upload-mb", "2", "--max-concurrency", "256"]
        if args.model:
            cmd += ["--model", args.model]
        if args.detector_weights:
            cmd += ["--detector", "retinaface-mobilenet", "--detector-weights", args.detector_weights]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"fer serve exited: {self.proc.stderr.read()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise SystemExit("fer serve did not answer /healthz within 120 s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def drive(url: str, clients: int, make_request, seconds: float | None = None, total: int | None = None):
    """``clients`` threads call ``make_request(client, i)`` -> (ok, faces) until ``seconds`` pass or
    ``total`` requests are done; returns (latencies of good answers, errors, faces, wall seconds)."""
    lat: list[float] = []
    errors = [0]
    faces = [0]
    lock = threading.Lock()
    counter = iter(range(10**9))
    deadline = time.monotonic() + (seconds if seconds is not None else 3600)

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=30, headers={"X-API-Key": KEY}) as c:
            while time.monotonic() < deadline:
                with lock:
                    i = next(counter)
                if total is not None and i >= total:
                    return
                t0 = time.perf_counter()
                try:
                    ok, n = make_request(c, i)
                except httpx.HTTPError:
                    ok, n = False, 0
                dt = time.perf_counter() - t0
                with lock:
                    if ok:
                        lat.append(dt)
                        faces[0] += n
                    else:
                        errors[0] += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, errors[0], faces[0], time.perf_counter() - t0


def summary(lat: list[float], errors: int, faces: int, wall: float) -> dict[str, float]:
    ms = np.array(lat) * 1000 if lat else np.array([float("nan")])
    return {"requests": len(lat), "errors": errors, "seconds": round(wall, 2),
            "requests_per_s": round(len(lat) / wall, 1), "faces_per_s": round(faces / wall, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=5)
    ap.add_argument("--rss-requests", type=int, default=2000)
    ap.add_argument("--photo-duration", type=float, default=15)
    ap.add_argument("--photo-clients", type=int, default=4)
    ap.add_argument("--hostile-duration", type=float, default=10)
    ap.add_argument("--model", default=None, help="default: the bundled model")
    ap.add_argument("--detector-weights", default=None,
                    help="RetinaFace MobileNet weights (default: shared/weights/retinaface/mobilenet0.25_Final.pth)")
    args = ap.parse_args()
    if args.detector_weights is None:
        w = shared_root() / "weights" / "retinaface" / "mobilenet0.25_Final.pth"
        args.detector_weights = str(w) if w.is_file() else None
    faces = crops()
    photo = (shared_root() / "faces" / "group_children.jpg").read_bytes()

    def crop_request(c: httpx.Client, i: int):
        r = c.post("/v1/predict?detect=false", content=faces[i % len(faces)], headers={"Content-Type": "image/png"})
        return r.status_code == 200, len(r.json()["faces"]) if r.status_code == 200 else 0

    out: dict[str, object] = {"clients": args.clients, "duration_s": args.duration, "cpus": os.cpu_count(),
                              "detector": "retinaface-mobilenet" if args.detector_weights else "auto"}
    with Server(args, 1) as s1:
        drive(s1.url, args.clients, crop_request, seconds=2)  # warm-up
        out["crops_max_batch_1"] = summary(*drive(s1.url, args.clients, crop_request, seconds=args.duration))
    with Server(args, args.max_batch) as s:
        drive(s.url, args.clients, crop_request, seconds=2)
        batched = summary(*drive(s.url, args.clients, crop_request, seconds=args.duration))
        out[f"crops_max_batch_{args.max_batch}"] = batched
        out["batching_speedup"] = round(batched["requests_per_s"] / out["crops_max_batch_1"]["requests_per_s"], 2)

        before = rss_mb(s.proc.pid)
        res = summary(*drive(s.url, args.clients, crop_request, total=args.rss_requests))
        out["rss"] = {"requests": res["requests"], "errors": res["errors"], "before_mb": round(before, 1),
                      "after_mb": round(rss_mb(s.proc.pid), 1), "growth_mb": round(rss_mb(s.proc.pid) - before, 1)}

        def photo_request(c: httpx.Client, i: int):
            r = c.post("/v1/predict", content=photo, headers={"Content-Type": "image/jpeg"})
            return r.status_code == 200, len(r.json()["faces"]) if r.status_code == 200 else 0

        drive(s.url, 1, photo_request, total=2)
        out["photos_with_detection"] = summary(*drive(s.url, args.photo_clients, photo_request, seconds=args.photo_duration))
        out["photos_with_detection"]["clients"] = args.photo_clients

        # Hostile mix: each client alternates good crops with one of the attacks.
        with httpx.Client(base_url=s.url, headers={"X-API-Key": KEY}) as c:
            reference = [c.post("/v1/predict?detect=false", content=f).json()["faces"][0]["probs"] for f in faces]
        attacks = {
            "oversize": lambda c: c.post("/v1/predict", content=b"\xff" * (3 * 1024 * 1024)),
            "bomb": lambda c: c.post("/v1/predict", content=bomb()),
            "garbage": lambda c: c.post("/v1/predict", content=os.urandom(5000)),
            "truncated": lambda c: c.post("/v1/predict", content=faces[0][: len(faces[0]) // 2]),
            "wrong_key": lambda c: c.post("/v1/predict", content=faces[0], headers={"X-API-Key": "wrong-key-000000"}),
        }
        expected = {"oversize": 413, "bomb": 413, "garbage": 415, "truncated": 422, "wrong_key": 401}
        tally = {k: {"sent": 0, "expected_status": 0} for k in attacks}
        mismatched = [0]
        tlock = threading.Lock()

        def hostile_request(c: httpx.Client, i: int):
            if i % 2:
                name = list(attacks)[(i // 2) % len(attacks)]
                try:
                    status = attacks[name](c).status_code
                except httpx.HTTPError:  # e.g. the server closing an oversize upload early
                    status = -1
                with tlock:
                    tally[name]["sent"] += 1
                    tally[name]["expected_status"] += status == expected[name]
                return True, 0
            k = (i // 2) % len(faces)
            r = c.post("/v1/predict?detect=false", content=faces[k])
            good = r.status_code == 200 and r.json()["faces"][0]["probs"] == reference[k]
            if not good:
                with tlock:
                    mismatched[0] += 1
            return good, 1

        lat, errors, n, wall = drive(s.url, args.clients, hostile_request, seconds=args.hostile_duration)
        alive = httpx.get(s.url + "/healthz", timeout=5).status_code == 200
        out["hostile"] = {"good_requests": n, "good_wrong_or_failed": mismatched[0], "attacks": tally,
                          "alive_after": alive}
        metrics = httpx.get(s.url + "/metrics", headers={"X-API-Key": KEY}).text
        out["hostile"]["server_5xx"] = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                                           if line.startswith("fer_http_requests_total") and 'status="5' in line)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
