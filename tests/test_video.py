"""fercli.video without a model: tracking, smoothing on timestamps, outputs, live reading, robustness.

The clips are coloured squares on a plain background and the analyzer finds them by colour (each
colour is one "expression"), so every test is fast and exact; tests/test_video_cli.py runs the real
detector and model on faces.
"""

from __future__ import annotations

import json
import struct
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from fercli.video import FaceObs, TrackSmoother, VideoConfig, label_flips, run_video
from fercli.video.source import FrameSource, VideoProblem

CLASSES = ("red", "green", "blue")
COLOURS = {"red": (40, 40, 220), "green": (40, 200, 40), "blue": (220, 60, 40)}  # BGR
SIZE = (160, 120)


def square_clip(path: Path, n: int = 24, fps: float = 8.0, fourcc: str = "MJPG", hidden: tuple[int, int] | None = None) -> Path:
    """Red moves right, green moves left (they cross), blue stays put and is hidden for ``hidden`` frames."""
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, SIZE)
    assert w.isOpened()
    for i in range(n):
        f = np.full((SIZE[1], SIZE[0], 3), 128, np.uint8)
        a = i / max(1, n - 1)
        x_red, x_green = int(5 + a * 115), int(120 - a * 115)
        f[10:40, x_red:x_red + 30] = COLOURS["red"]
        f[30:60, x_green:x_green + 30] = COLOURS["green"]
        if hidden is None or not hidden[0] <= i < hidden[1]:
            f[80:110, 65:95] = COLOURS["blue"]
        w.write(f)
    w.release()
    return path


def colour_analyzer(frames: list[np.ndarray]) -> list[list[FaceObs]]:
    """Finds the squares by colour; the "probabilities" favour the square's colour."""
    out = []
    for f in frames:
        faces = []
        for k, c in enumerate(CLASSES):
            mask = (np.abs(f.astype(int) - COLOURS[c]).max(axis=2) < 50).astype(np.uint8)
            if mask.sum() < 100:
                continue
            # the largest blob: two squares of one colour never occur
            x, y, w, h = cv2.boundingRect(mask)
            probs = np.full(len(CLASSES), 0.1)
            probs[k] = 0.8
            faces.append(FaceObs([x, y, x + w, y + h], 0.99, probs))
        out.append(faces)
    return out


def _cfg(tmp_path: Path, clip: Path, **kw) -> VideoConfig:
    return VideoConfig(source=str(clip), annotate=tmp_path / "ann.mp4", out=tmp_path / "out", **kw)


def _video_props(path: Path) -> tuple[int, float, tuple[int, int]]:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    props = (n, cap.get(cv2.CAP_PROP_FPS), (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))))
    cap.release()
    return props


def _timestamps(path: Path) -> list[float]:
    cap = cv2.VideoCapture(str(path))
    out = []
    while cap.read()[0]:
        out.append(cap.get(cv2.CAP_PROP_POS_MSEC) / 1000)
    cap.release()
    return out


def test_tracks_rows_and_outputs(tmp_path: Path):
    clip = square_clip(tmp_path / "clip.avi")
    res = run_video(_cfg(tmp_path, clip), colour_analyzer, CLASSES)
    assert res.status == "ok" and res.frames == 24 and res.detected_frames == 24
    rows = pd.read_csv(tmp_path / "out" / "frames.csv")
    # one id per square, held through the crossing, from the square's first frame on
    ids = rows.groupby("label")["track"].unique()
    assert {c: len(v) for c, v in ids.items()} == {"red": 1, "green": 1, "blue": 1}
    assert (rows.groupby("track")["frame"].min() == 0).all() and len(rows) == 3 * 24
    # the annotated video is the input's frame count, rate and size; times are the input's timestamps
    assert _video_props(tmp_path / "ann.mp4") == (24, 8.0, SIZE)
    stamps = _timestamps(clip)
    assert np.allclose(rows["time"], [stamps[f] for f in rows["frame"]], atol=1e-6)
    lines = [json.loads(x) for x in (tmp_path / "out" / "frames.jsonl").read_text().splitlines()]
    assert len(lines) == len(rows) and lines[0]["probs"].keys() == set(CLASSES) and lines[0]["detected"] is True
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["frames_processed"] == 24
    durations = {t["dominant"]: t["duration"] for t in summary["tracks"]}
    assert durations == pytest.approx({c: 24 / 8 for c in CLASSES})  # frames 0..23, one frame each (1/8 s)
    assert all(t["share"][t["dominant"]] == 1.0 for t in summary["tracks"])
    assert cv2.imread(str(tmp_path / "out" / "timeline.png")) is not None


def test_a_face_has_its_track_id_from_its_first_detection():
    """Synthetic boxes: two faces from frame 0, a third from frame 3; each first detection has its id,
    the ids stay put while the boxes move, and a face that leaves and comes back later gets a new id."""
    from fercli.video import FaceTracker

    tracker = FaceTracker(fps=10.0)
    seen: dict[int, list[tuple[int, int]]] = {}  # frame -> (track, detection index)
    for f in range(10):
        boxes = [[10 + 2 * f, 10, 50 + 2 * f, 50], [200 - 2 * f, 20, 240 - 2 * f, 60]]
        if f >= 3:
            boxes.append([100, 150, 140, 190])
        out = tracker.update(np.array(boxes, float), [0.9] * len(boxes), f / 10)
        seen[f] = [(t.track, t.detection) for t in out]
        assert all(np.allclose(t.box, boxes[t.detection]) for t in out)
    assert seen[0] == [(1, 0), (2, 1)]  # the very first frame: every face has a row and an id
    assert seen[3] == [(1, 0), (2, 1), (3, 2)]  # a face that appears later: its id at its first detection
    assert all(s == seen[3] for s in (seen[f] for f in range(3, 10)))
    assert [t.track for t in tracker.carry(0.95)] == [1, 2, 3]  # carried boxes use the same ids
    tracker.update(np.zeros((0, 4)), [], 2.5)  # all gone for 1.5 s: the tracks end
    back = tracker.update(np.array([[10, 10, 50, 50]], float), [0.9], 2.6)
    assert [(t.track, t.detection) for t in back] == [(4, 0)]


def test_smoothing_is_on_time_not_frames():
    p0, p1 = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    one = TrackSmoother(1.0)
    one.update(1, 0.0, p0)
    assert one.update(1, 1.0, p1) == pytest.approx([0.5, 0.5])  # one half-life later: half each
    two = TrackSmoother(1.0)  # twice the frame rate, the same time: the same average
    two.update(1, 0.0, p0)
    two.update(1, 0.5, p1)
    assert two.update(1, 1.0, p1) == pytest.approx([0.5, 0.5])
    assert TrackSmoother(0).update(1, 0.0, p1) == pytest.approx(p1)
    assert label_flips(["a", "a", "b", "a"]) == 2


def test_smoothing_reduces_flips_on_noisy_probabilities(tmp_path: Path):
    clip = square_clip(tmp_path / "clip.avi", n=40, fps=10)
    rng = np.random.default_rng(0)

    def noisy(frames):
        found = colour_analyzer(frames)
        for faces in found:
            for f in faces:
                f.probs = f.probs + rng.uniform(0, 0.9, len(CLASSES))  # sometimes another class wins
                f.probs /= f.probs.sum()
        return found

    res = run_video(VideoConfig(source=str(clip), out=tmp_path / "out", smooth=0.5), noisy, CLASSES)
    rows = pd.read_csv(tmp_path / "out" / "frames.csv")
    raw = sum(label_flips(list(g["raw_label"])) for _, g in rows.groupby("track"))
    smoothed = sum(label_flips(list(g["label"])) for _, g in rows.groupby("track"))
    assert res.status == "ok" and raw >= 10 and smoothed <= raw / 3, (raw, smoothed)


def test_detect_every_carries_boxes(tmp_path: Path):
    clip = square_clip(tmp_path / "clip.avi")
    calls = []

    def counting(frames):
        calls.append(len(frames))
        return colour_analyzer(frames)

    res = run_video(_cfg(tmp_path, clip, detect_every=3), counting, CLASSES)
    assert res.status == "ok" and res.detected_frames == 8 and sum(calls) == 8
    rows = pd.read_csv(tmp_path / "out" / "frames.csv")
    carried = rows[rows["detected"] == 0]
    assert len(carried) > 0 and carried["raw_label"].isna().all() and carried["score"].isna().all()
    # the track has rows from the first detection (frame 0) on; until a second detection gives the
    # filter a velocity, carried boxes stay where the face was seen
    red = rows[rows["label"] == "red"].sort_values("frame")
    assert red["track"].nunique() == 1 and list(red["frame"]) == list(range(24))
    assert (red["x1"].iloc[:3] == red["x1"].iloc[0]).all()
    # after that, carried boxes follow the motion: red's box keeps moving right between detections
    moving = red[red["frame"] >= 3]
    assert (np.diff(moving["x1"]) > 0).all()
    truth = {f: 5 + f / 23 * 115 for f in moving["frame"]}
    assert max(abs(x - truth[f]) for f, x in zip(moving["frame"], moving["x1"])) < 4
    assert _video_props(tmp_path / "ann.mp4")[0] == 24


def test_live_reading_drops_frames_instead_of_queueing(tmp_path: Path):
    clip = square_clip(tmp_path / "clip.avi", n=30, fps=30)

    def slow(frames):
        time.sleep(0.1)  # three frame periods per frame
        return colour_analyzer(frames)

    res = run_video(_cfg(tmp_path, clip, live=True), slow, CLASSES)
    info = res.info
    assert res.status == "ok" and info.live and info.dropped > 0
    assert res.frames + info.dropped == 30 and res.frames < 20
    assert _video_props(tmp_path / "ann.mp4")[0] == 30  # dropped frames are filled: the input's length
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["frames_dropped"] == info.dropped


def test_stop_event_ends_with_complete_outputs(tmp_path: Path):
    clip = square_clip(tmp_path / "clip.avi", n=40)
    stop = threading.Event()

    def stopping(frames):
        stop.set()  # e.g. q in the window: the frame in hand is finished, then everything is closed
        return colour_analyzer(frames)

    res = run_video(_cfg(tmp_path, clip, batch_size=4), stopping, CLASSES, stop=stop)
    assert res.status == "stopped" and res.frames == 4
    assert _video_props(tmp_path / "ann.mp4")[0] == 4
    assert pd.read_csv(tmp_path / "out" / "frames.csv")["frame"].max() == 3


def test_failure_mid_video_keeps_what_was_written(tmp_path: Path):
    clip = square_clip(tmp_path / "clip.avi")
    calls = []

    def failing(frames):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("the analyzer broke")
        return colour_analyzer(frames)

    res = run_video(_cfg(tmp_path, clip, batch_size=4), failing, CLASSES)
    assert res.status == "failed" and "the analyzer broke" in res.reason and res.frames == 8
    rows = pd.read_csv(tmp_path / "out" / "frames.csv")
    assert rows["frame"].max() == 7
    assert _video_props(tmp_path / "ann.mp4")[0] == 8
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["status"] == "failed"
    assert not list(tmp_path.glob("**/.*tmp-*"))  # no temporary file left behind


# ---- robustness: every bad input has a status and a reason -------------------------------------------
def test_corrupt_frame_mid_video_is_skipped(tmp_path: Path):
    clip = square_clip(tmp_path / "clip.avi", n=20)
    data = bytearray(clip.read_bytes())
    soi = [i for i in range(len(data) - 1) if data[i] == 0xFF and data[i + 1] == 0xD8]
    data[soi[10] + 2:soi[10] + 600] = bytes(598)  # frame 10's JPEG data: gone
    clip.write_bytes(bytes(data))
    res = run_video(_cfg(tmp_path, clip), colour_analyzer, CLASSES)
    assert res.status == "partial" and res.info.bad == 1 and "1 undecodable frame" in res.reason
    assert res.frames == 19
    rows = pd.read_csv(tmp_path / "out" / "frames.csv")
    assert 10 not in set(rows["frame"]) and rows["frame"].max() == 19  # indices stay positions in the file
    assert _video_props(tmp_path / "ann.mp4")[0] == 20  # the bad frame is filled with the previous picture


@pytest.mark.parametrize("content, reason", [(b"", "empty (0 bytes)"), (b"hello, not a video\n" * 50, "not a video")])
def test_unreadable_files(tmp_path: Path, content: bytes, reason: str):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(content)
    res = run_video(_cfg(tmp_path, bad), colour_analyzer, CLASSES)
    assert res.status == "unreadable" and reason in res.reason and res.info is None
    assert not (tmp_path / "out").exists() and not (tmp_path / "ann.mp4").exists()  # nothing written


def test_missing_file(tmp_path: Path):
    res = run_video(VideoConfig(source=str(tmp_path / "nope.mp4")), colour_analyzer, CLASSES)
    assert res.status == "missing"


def test_audio_only_file(tmp_path: Path):
    av = pytest.importorskip("av", reason="PyAV (installed with supervision) writes the audio-only file")
    path = tmp_path / "audio.mp4"
    with av.open(str(path), "w") as c:
        s = c.add_stream("aac", rate=8000)
        s.layout = "mono"
        samples = (np.sin(np.arange(8000) / 5) * 0.3).astype(np.float32).reshape(1, -1)
        for k in range(0, 8000, 1024):
            frame = av.AudioFrame.from_ndarray(samples[:, k:k + 1024], format="fltp", layout="mono")
            frame.rate = 8000
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode(None):
            c.mux(p)
    res = run_video(VideoConfig(source=str(path)), colour_analyzer, CLASSES)
    assert res.status == "unreadable" and "no video stream" in res.reason and "audio" in res.reason


def _rotate_mp4(path: Path, degrees: int) -> None:
    """Set the video track's display matrix (tkhd) as a phone does for a portrait recording."""
    data = bytearray(path.read_bytes())
    at = data.find(b"tkhd")
    assert at > 0
    version = data[at + 4]
    matrix = at + 4 + 4 + (32 if version == 1 else 20) + 16  # after times, ids, duration, layer...volume
    one = 0x10000
    rot = {90: (0, one, 0, -one, 0, 0, 0, 0, 0x40000000), 270: (0, -one, 0, one, 0, 0, 0, 0, 0x40000000)}[degrees]
    data[matrix:matrix + 36] = struct.pack(">9i", *rot)
    path.write_bytes(bytes(data))


def test_rotation_metadata_is_applied(tmp_path: Path):
    clip = square_clip(tmp_path / "clip.mp4", n=12, fourcc="mp4v")
    _rotate_mp4(clip, 90)
    with FrameSource(str(clip)) as src:
        if src.info.rotation == 0:
            pytest.skip("this OpenCV build does not read the rotation metadata")
        first = next(iter(src))
    assert src.info.rotation == 90 and first.image.shape[:2] == (SIZE[0], SIZE[1])  # upright: portrait
    res = run_video(_cfg(tmp_path, clip), colour_analyzer, CLASSES)
    assert res.status == "ok" and "rotation metadata" in " ".join(res.info.notes)
    assert _video_props(tmp_path / "ann.mp4") == (12, 8.0, (SIZE[1], SIZE[0]))  # the upright size
    assert pd.read_csv(tmp_path / "out" / "frames.csv")["track"].nunique() == 3


def test_source_reports_problems_without_opening(tmp_path: Path):
    with pytest.raises(VideoProblem) as exc:
        FrameSource(str(tmp_path))  # a folder
    assert exc.value.status == "unreadable"


@pytest.mark.parametrize("kw, message", [
    (dict(smooth=-1.0), "--smooth must be"),
    (dict(detect_every=0), "--detect-every must be an integer >= 1"),
    (dict(duration=0.0), "--duration must be > 0"),
    (dict(webcam=0), "--webcam takes a camera index"),
    (dict(annotate=Path("x.avi")), "written as MP4"),
])
def test_config_checks(tmp_path: Path, kw: dict, message: str):
    from fercli.errors import FerError

    with pytest.raises(FerError, match=message):
        VideoConfig(source=str(tmp_path / "c.mp4"), **kw).check()


def _lab(rgb: tuple[float, float, float]) -> np.ndarray:
    """CIE L*a*b* (D65) of an sRGB colour with components in [0, 1]."""
    c = np.asarray(rgb, float)
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ c
    f = xyz / [0.95047, 1.0, 1.08883]
    f = np.where(f > 216 / 24389, np.cbrt(f), (24389 / 27 * f + 16) / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_class_colours_are_tab10_and_pairwise_distinct(tmp_path: Path):
    import itertools

    import matplotlib.colors as mcolors

    from fercli.classes import CLASSES_8
    from fercli.predict import CLASS_COLOURS, TAB10_CLASS_NAMES, class_colours
    from fercli.video.outputs import Summary, TrackRow, plot_timeline

    bgr = class_colours(CLASSES_8)
    rgb = {c: tuple(v / 255 for v in reversed(bgr[c])) for c in CLASSES_8}
    for c in CLASSES_8:  # a fixed class -> tab10 entry table, drawn the same by OpenCV and matplotlib
        assert np.allclose(rgb[c], mcolors.to_rgb(TAB10_CLASS_NAMES[c]), atol=0.5 / 255), c
    assert len(set(CLASS_COLOURS.values())) == 8 and len(set(TAB10_CLASS_NAMES.values())) == 8
    # pairwise distinct: at least 35 apart in L*a*b* (the closest tab10 pairs, blue/purple and
    # pink/brown/gray, are under 30 and not used), and each at least 30 from the plot's white
    lab = {c: _lab(rgb[c]) for c in CLASSES_8}
    close = [(a, b, round(float(np.linalg.norm(lab[a] - lab[b])), 1)) for a, b in itertools.combinations(CLASSES_8, 2)
             if np.linalg.norm(lab[a] - lab[b]) < 35]
    assert not close, close
    faint = [c for c in CLASSES_8 if np.linalg.norm(lab[c] - _lab((1.0, 1.0, 1.0))) < 30]
    assert not faint, faint
    # the timeline draws each class in its colour: one track, every class at its own level
    summary = Summary(CLASSES_8, 0.1)
    levels = np.linspace(0.1, 0.95, 8)
    for f in range(20):
        summary.add_frame(f / 10, [TrackRow(f, f / 10, 1, (0, 0, 10, 10), 0.9, CLASSES_8[7], levels, levels)])
    plot_timeline(summary, tmp_path / "timeline.png", "test")
    img = cv2.imread(str(tmp_path / "timeline.png"))
    for c in CLASSES_8:
        hits = (np.abs(img.astype(int) - bgr[c]).max(axis=2) <= 3).sum()
        assert hits > 100, (c, hits)  # a line across the panel


def test_truncated_mp4_gives_fercli_one_line_and_nothing_from_ffmpeg(tmp_path: Path):
    """FFmpeg (inside OpenCV) would print "moov atom not found" for an mp4 cut short; only fercli's own
    error line may reach stderr. A fresh process: FFmpeg reads its log level once, at its first use."""
    import os
    import subprocess
    import sys

    whole = tmp_path / "whole.mp4"
    w = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"mp4v"), 8.0, SIZE)
    for i in range(16):
        w.write(np.full((SIZE[1], SIZE[0], 3), 10 * i, np.uint8))
    w.release()
    data = whole.read_bytes()
    assert b"moov" in data[len(data) // 2:]  # the index is at the end: cut in half, the file has none
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_FFMPEG_LOGLEVEL"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    res = subprocess.run([sys.executable, "-m", "fercli", "predict", "cut.mp4"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.splitlines() == [res.stderr.strip()], res.stderr  # one line
    assert res.stderr.startswith("error: cut.mp4: unreadable: not a video") and "truncated" in res.stderr
