"""`fer predict` on a video made of real faces (../shared/faces): tracking, smoothing, outputs, live
input and Ctrl-C, with RetinaFace MobileNet and the bundled model; and the video options' errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from fercli.cli import app
from fercli.inference import bundled_model
from fercli.video import label_flips

FPS = 12.0
N = 36
SIZE = (256, 192)
DETECT_SIZE = "320"  # the clips are small: no need to upscale them to the default 640 for the detector

# One torch thread: the machine's cores are shared, and OpenMP barriers stall many-threaded small passes.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def faces_clip(tmp_path_factory, shared_dir: Path, mobilenet_weights: Path) -> tuple[Path, list[list]]:
    """Two faces crossing the frame (one passes in front of the other) and a third that leaves for a
    second and comes back; 36 frames at 12 fps, 256x192. Returns the clip and each frame's truth."""
    from fercli.align import load_detector
    from fercli.video.synthetic import Actor, face_patches, write_clip

    faces = shared_dir / "faces"
    det = load_detector("retinaface-mobilenet", mobilenet_weights, "cpu", 640)
    happy, surprised, angry = face_patches([faces / "0-f15-hao-ph.jpg", faces / "0-f1-su-ph.jpg",
                                            faces / "15-f13-anc-ph.jpg"], 72, det)
    actors = [Actor(happy, (0, 10), (184, 30)), Actor(surprised, (184, 60), (0, 40)),
              Actor(angry, (92, 118), (92, 118), hidden=(12, 24))]
    path = tmp_path_factory.mktemp("video") / "faces.mp4"
    return path, write_clip(path, actors, N, SIZE, FPS)


def _args(weights: Path) -> list[str]:
    return ["--model", str(bundled_model()), "--detector", "retinaface-mobilenet", "--detector-weights", str(weights),
            "--detect-size", DETECT_SIZE, "--threads", "1"]


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _actor_of(row, truth) -> int | None:
    """The actor whose patch holds the row's face box."""
    best = max(truth, key=lambda t: _iou(row[["x1", "y1", "x2", "y2"]].to_numpy(float), t[1:]), default=None)
    return None if best is None or _iou(row[["x1", "y1", "x2", "y2"]].to_numpy(float), best[1:]) < 0.1 else best[0]


@pytest.mark.shared
def test_tracked_video_from_real_faces(runner, workspace: Path, faces_clip, mobilenet_weights: Path):
    clip, truths = faces_clip
    res = runner.invoke(app, ["predict", str(clip), *_args(mobilenet_weights), "--annotate", "ann.mp4", "--out", "out",
                              "--smooth", "0.5"])
    assert res.exit_code == 0, res.output
    assert "track(s) in 36 frame(s)" in res.stdout and "wrote out/timeline.png" in res.stderr
    rows = pd.read_csv(workspace / "out" / "frames.csv")
    rows["actor"] = [_actor_of(r, truths[int(r.frame)]) for _, r in rows.iterrows()]
    assert rows["actor"].notna().all()
    # stable ids while visible: one track per actor per visible stretch, never shared between actors
    stretches = {0: [(0, N)], 1: [(0, N)], 2: [(0, 12), (24, N)]}
    for actor, spans in stretches.items():
        for a, b in spans:
            ids = rows[(rows["actor"] == actor) & rows["frame"].between(a, b - 1)]["track"]
            assert ids.nunique() == 1, (actor, a, b, ids.unique())
            assert len(ids) >= (b - a) - 2  # seen on every frame, its first included (a missed detection or two allowed)
    assert rows.groupby("track")["actor"].nunique().max() == 1
    # the annotated video has the input's frame count, rate and size
    cap = cv2.VideoCapture(str(workspace / "ann.mp4"))
    assert (int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), cap.get(cv2.CAP_PROP_FPS)) == (N, FPS)
    assert (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))) == SIZE
    cap.release()
    # CSV times are the frames' timestamps
    cap, stamps = cv2.VideoCapture(str(clip)), []
    while cap.read()[0]:
        stamps.append(cap.get(cv2.CAP_PROP_POS_MSEC) / 1000)
    assert len(stamps) == N
    assert np.allclose(rows["time"], [stamps[f] for f in rows["frame"]], atol=1e-6)
    summary = json.loads((workspace / "out" / "summary.json").read_text())
    assert summary["status"] == "ok" and len(summary["tracks"]) == rows["track"].nunique()
    happy = rows[rows["actor"] == 0]["track"].iloc[0]
    track = next(t for t in summary["tracks"] if t["track"] == happy)
    assert track["dominant"] == "happiness" and track["share"]["happiness"] > 0.9
    assert (N - 2) / FPS <= track["duration"] <= N / FPS + 1e-3  # seen from its first frame (one miss allowed; rounded to ms)


@pytest.mark.shared
def test_smoothing_reduces_flips_on_injected_noise(workspace: Path, faces_clip, mobilenet_weights: Path):
    from fercli.api import Recognizer
    from fercli.video import VideoConfig, recognizer_analyzer, run_video

    clip, _ = faces_clip
    rec = Recognizer(bundled_model(), "retinaface-mobilenet", detector_weights=mobilenet_weights, device="cpu",
                     detect_size=int(DETECT_SIZE), threads=1)
    analyze, rng = recognizer_analyzer(rec), np.random.default_rng(1)

    def noisy(frames):  # the real model's probabilities, plus noise that often changes the top class
        found = analyze(frames)
        for faces in found:
            for f in faces:
                p = f.probs + rng.uniform(0, 1.2, len(f.probs)) * f.probs.max()
                f.probs = p / p.sum()
        return found

    res = run_video(VideoConfig(source=str(clip), out=workspace / "out", smooth=0.5), noisy, rec.classes)
    rows = pd.read_csv(workspace / "out" / "frames.csv")
    raw = sum(label_flips(list(g["raw_label"])) for _, g in rows.groupby("track"))
    smoothed = sum(label_flips(list(g["label"])) for _, g in rows.groupby("track"))
    assert res.status == "ok" and raw >= 10 and smoothed < raw / 2, (raw, smoothed)


@pytest.mark.shared
def test_live_input_and_ctrl_c(tmp_path: Path, shared_dir: Path, mobilenet_weights: Path):
    """The live path (reader thread, drop-not-queue) on a file, stopped by SIGINT part-way: exit code
    130, and every output complete and readable. The faces hold still, so that tracks form however
    slowly a busy machine processes the frames it keeps."""
    from fercli.align import load_detector
    from fercli.video.synthetic import Actor, face_patches, write_clip

    det = load_detector("retinaface-mobilenet", mobilenet_weights, "cpu", 640)
    patches = face_patches([shared_dir / "faces" / "0-f15-hao-ph.jpg", shared_dir / "faces" / "0-f1-su-ph.jpg"], 72, det)
    longer = tmp_path / "long.mp4"  # 10 s of real time when read live
    write_clip(longer, [Actor(patches[0], (20, 40), (20, 40)), Actor(patches[1], (150, 60), (150, 60))], 100, SIZE, 10.0)
    proc = subprocess.Popen([sys.executable, "-m", "fercli", "predict", str(longer), "--live", *_args(mobilenet_weights),
                             "--jsonl", "--out", "out", "--annotate", "ann.mp4"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "FER_WORKSPACE": str(tmp_path)})
    first = []
    reader = threading.Thread(target=lambda: first.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout=90)  # start-up, then the first row
    if not (first and first[0].strip()):
        proc.kill()
        pytest.fail(f"no row in 90 s: {proc.communicate()[1]}")
    proc.send_signal(signal.SIGINT)
    watchdog = threading.Timer(60, proc.kill)  # the reads below must not hang the suite if it does not stop
    watchdog.start()
    rest = proc.stdout.read()  # the same buffered reader as the first line (communicate() would skip its buffer)
    err = proc.stderr.read()
    proc.wait(timeout=60)
    watchdog.cancel()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    streamed = [json.loads(x) for x in (first[0] + rest).splitlines()]
    rows = pd.read_csv(tmp_path / "out" / "frames.csv")
    assert len(rows) == len(streamed) > 0
    assert [json.loads(x)["frame"] for x in (tmp_path / "out" / "frames.jsonl").read_text().splitlines()] == list(rows["frame"])
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["live"] is True
    assert summary["frames_processed"] < 100 and "frames_dropped" in summary
    cap = cv2.VideoCapture(str(tmp_path / "ann.mp4"))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == rows["frame"].max() + 1  # complete up to the last frame processed
    assert cv2.imread(str(tmp_path / "out" / "timeline.png")) is not None
    assert not list(tmp_path.glob("**/.*tmp-*"))


@pytest.mark.parametrize("argv, message", [
    (["clip.mp4", "--smooth", "-1"], "error: --smooth must be in [0, 3600], got -1.0"),
    (["clip.mp4", "--detect-every", "0"], "error: --detect-every must be an integer >= 1, got 0"),
    (["clip.mp4", "--duration", "0"], "error: --duration must be in (0, inf], got 0.0"),
    (["--webcam", "clip.mp4"], "error: --webcam takes a camera index (0, 1, ...), not a file or URL: got 'clip.mp4'"),
    (["face.png", "--smooth", "1"], "error: --smooth applies to one video file, stream or camera (face.png is not a video file, stream URL or camera)"),
    (["clip.mp4", "--every", "5", "--jsonl"], "error: --jsonl applies to one video file, stream or camera (with --every"),
    (["clip.mp4", "--csv", "--jsonl"], "error: --csv and --jsonl both write to stdout"),
    (["clip.mp4", "--annotate", "x.avi"], "error: --annotate x.avi: the annotated video is written as MP4"),
    (["clip.mp4", "--no-detect"], "error: --no-detect is for pictures that are already aligned faces"),
    (["missing.mp4"], "error: missing.mp4: missing: no such file"),
])
def test_video_option_errors_are_one_line(runner, workspace: Path, argv: list[str], message: str):
    (workspace / "clip.mp4").write_bytes(b"not read: the options are refused first")
    cv2.imwrite(str(workspace / "face.png"), np.zeros((48, 48, 3), np.uint8))
    res = runner.invoke(app, ["predict", *argv, "--model", str(bundled_model()), "--detector", "haar"])
    assert res.exit_code == 1, res.output
    assert res.stderr.startswith(message) and res.stderr.count("\n") == 1, res.stderr


def test_show_needs_a_display(runner, workspace: Path, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    res = runner.invoke(app, ["predict", "clip.mp4", "--show", "--detector", "haar"])
    if sys.platform.startswith("linux"):
        assert res.exit_code == 1 and "error: --show needs a display" in res.stderr and res.stderr.count("\n") == 1


def test_unreadable_video_is_a_status(runner, workspace: Path):
    (workspace / "clip.mp4").write_bytes(b"")
    res = runner.invoke(app, ["predict", "clip.mp4", "--model", str(bundled_model()), "--detector", "haar",
                              "--out", "out", "--json"])
    assert res.exit_code == 1 and "error: clip.mp4: unreadable: the file is empty (0 bytes)" in res.stderr
    assert json.loads(res.stdout)["status"] == "unreadable" and not (workspace / "out").exists()


@pytest.mark.skipif(Path("/dev/video0").exists(), reason="a camera is attached")
def test_missing_camera_is_one_line(runner, workspace: Path):
    res = runner.invoke(app, ["predict", "--webcam", "--model", str(bundled_model()), "--detector", "haar"])
    assert res.exit_code == 1 and res.stderr == "error: webcam 0: unreadable: cannot open camera 0 (not connected, in use, or unreachable)\n"
