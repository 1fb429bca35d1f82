"""`fer predict` on a video, a camera or a stream: tracked faces, smoothed expressions, and outputs.

The loop (:func:`run_video`) reads frames (:mod:`fercli.video.source`), analyses every
``detect_every``-th one with an injected :data:`Analyzer` (detect faces + classify their crops; the
CLI's is a :class:`fercli.api.Recognizer`), follows faces with ByteTrack
(:mod:`fercli.video.tracking`), smooths each track's probabilities on timestamps
(:mod:`fercli.video.smoothing`) and writes rows, the annotated video, the summary and the timeline
(:mod:`fercli.video.outputs`) frame by frame.

Files are read in batches of frames (one detector pass each); live sources one frame at a time, the
newest, dropping the frames that arrived meanwhile. Ctrl-C (SIGINT) or SIGTERM stops the loop after
the frame in hand, and every output is then finalised: a second Ctrl-C interrupts at once (the
streaming outputs are still closed in ``finally``). A failure part-way (a decoder crash, a full disk)
ends the run with status ``failed`` and keeps what was written.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from fercli.errors import FerError
from fercli.fileio import atomic_write_json, check_writable_dir, check_writable_file, partial_path
from fercli.progress import Track, no_track
from fercli.video.outputs import AnnotatedVideo, RowWriter, Summary, TrackRow, annotate_frame, plot_timeline
from fercli.video.smoothing import TrackSmoother
from fercli.importers.base import VIDEO_EXTS
from fercli.video.source import ANNOTATE_VIDEO_SUFFIXES, FrameSource, SourceInfo, VideoProblem, is_stream_url
from fercli.video.tracking import FaceTracker

log = logging.getLogger(__name__)

OFFLINE_BATCH = 8  # frames of a file per detector pass
OUT_FILES = {"csv": "frames.csv", "jsonl": "frames.jsonl", "summary": "summary.json", "timeline": "timeline.png"}


@dataclass
class FaceObs:
    """One face the analyzer found on a frame: box (x1, y1, x2, y2, frame pixels), score, probabilities."""

    box: Sequence[float]
    score: float | None
    probs: np.ndarray


# Detect faces and classify them on a batch of BGR frames: one list of faces per frame.
Analyzer = Callable[[list[np.ndarray]], list[list[FaceObs]]]


@dataclass
class VideoConfig:
    """The video options of `fer predict` (the detection and model options are PredictConfig's)."""

    source: str | None = None  # a video file or a stream URL; None with webcam
    webcam: int | None = None  # camera index
    live: bool = False  # read a file as a live source: at its own frame rate, dropping frames when behind
    detect_every: int = 1  # detect (and classify) every K-th processed frame; the tracker carries boxes between
    smooth: float = 0.5  # half-life in seconds of the per-track probability average; 0: none
    annotate: Path | None = None  # the annotated video (.mp4), or a folder for <stem>_annotated.mp4
    out: Path | None = None  # folder for frames.csv, frames.jsonl, summary.json, timeline.png
    show: bool = False  # a window with the annotated frames (q or Esc stops)
    duration: float | None = None  # stop after this many seconds of input
    batch_size: int = OFFLINE_BATCH

    @property
    def kind(self) -> str:
        if self.webcam is not None:
            return "webcam"
        return "stream" if self.source and is_stream_url(self.source) else "file"

    @property
    def is_live(self) -> bool:
        return self.live or self.kind != "file"

    def annotate_path(self) -> Path | None:
        """The annotated video's file: ``annotate`` itself if it names a video, else a file inside it."""
        if self.annotate is None:
            return None
        a = Path(self.annotate)
        if a.suffix.lower() in ANNOTATE_VIDEO_SUFFIXES:
            return a
        stem = f"webcam{self.webcam}" if self.webcam is not None else (
            Path(self.source).stem if self.kind == "file" else "stream")
        return a / f"{stem}_annotated.mp4"

    def check(self) -> None:
        """Refuse bad values before anything is opened or loaded (one-line FerError naming the option)."""
        if self.webcam is not None:
            if isinstance(self.webcam, bool) or not isinstance(self.webcam, int) or self.webcam < 0:
                raise FerError(f"--webcam takes a camera index (0, 1, ...), got {self.webcam!r}")
            if self.source:
                raise FerError(f"--webcam takes a camera index (0, 1, ...), not a file or URL: got {self.source!r}")
        elif not self.source:
            raise FerError("nothing to predict: name a video file or stream URL, or pass --webcam")
        if not (isinstance(self.detect_every, int) and not isinstance(self.detect_every, bool) and self.detect_every >= 1):
            raise FerError(f"--detect-every must be an integer >= 1, got {self.detect_every!r}")
        if not (isinstance(self.smooth, (int, float)) and math.isfinite(self.smooth) and 0 <= self.smooth <= 3600):
            raise FerError(f"--smooth must be a half-life in seconds in [0, 3600] (0: no smoothing), got {self.smooth!r}")
        if self.duration is not None and not (math.isfinite(self.duration) and self.duration > 0):
            raise FerError(f"--duration must be > 0 seconds, got {self.duration!r}")
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise FerError(f"--batch-size must be >= 1, got {self.batch_size!r}")

        suffix = Path(self.annotate).suffix.lower() if self.annotate is not None else ""
        if suffix in VIDEO_EXTS and suffix not in ANNOTATE_VIDEO_SUFFIXES:
            raise FerError(f"--annotate {self.annotate}: the annotated video is written as MP4; name a .mp4 file (or a folder)")
        if self.show and sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise FerError("--show needs a display (DISPLAY is not set); run headless (--headless) and use --annotate")
        # Outputs: writable before any work (a bad folder must not cost a long video).
        path = self.annotate_path()
        if path is not None:
            check_writable_file(path, "--annotate")
        if self.out is not None:
            check_writable_dir(self.out, "--out")


@dataclass
class VideoResult:
    """What happened: the input, how the run ended, the tracks and the files written."""

    info: SourceInfo | None
    # ok; partial (undecodable frames skipped, or the input ended before its stated length); stopped (q in
    # the window, or the caller's stop event); interrupted (SIGINT/SIGTERM); failed (an error part-way);
    # unreadable or missing (nothing could be read: nothing is written)
    status: str
    reason: str | None = None
    frames: int = 0  # frames processed (rows may exist for each)
    detected_frames: int = 0  # frames the analyzer ran on
    rows: int = 0
    seconds: float = 0.0  # processing wall time, from the first frame to the last
    tracks: list[dict[str, Any]] = field(default_factory=list)
    outputs: dict[str, Path] = field(default_factory=dict)

    @property
    def video_seconds(self) -> float:
        return self.frames / self.info.fps if self.info and self.info.fps else 0.0

    @property
    def speed(self) -> float | None:
        """Processing fps / the video's fps (1.0: real time); None for live sources (paced by the input)."""
        if not self.info or self.info.live or self.seconds <= 0:
            return None
        return self.video_seconds / self.seconds

    def to_dict(self) -> dict[str, Any]:
        info = self.info
        return {"input": info.name if info else None, "status": self.status, "reason": self.reason,
                "kind": info.kind if info else None, "live": info.live if info else None,
                "fps": info.fps if info else None, "width": info.width if info else None,
                "height": info.height if info else None, "frame_count": info.frame_count if info else None,
                "rotation": info.rotation if info else 0, "frames_processed": self.frames,
                "frames_detected": self.detected_frames, "frames_dropped": info.dropped if info else 0,
                "frames_undecodable": info.bad if info else 0, "rows": self.rows,
                "processing_seconds": round(self.seconds, 3),
                "speed": None if self.speed is None else round(self.speed, 3),
                "notes": info.notes if info else [], "tracks": self.tracks,
                "outputs": {k: str(v) for k, v in self.outputs.items()}}


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event, caught: list[str]) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop`` (the loop ends after the frame in hand) and are listed in
    ``caught``; a second SIGINT raises KeyboardInterrupt as usual. Only the main thread may install
    handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: Any) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        caught.append(signal.Signals(signum).name)
        log.warning("%s: stopping after the current frame; outputs are being finalised (Ctrl-C again to "
                    "stop at once)", caught[-1])
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


class _Window:
    """``--show``: the annotated frames in an OpenCV window; q or Esc asks the loop to stop."""

    NAME = "fer predict (q: stop)"

    def __init__(self) -> None:
        import cv2

        self.cv2 = cv2
        try:
            cv2.namedWindow(self.NAME, cv2.WINDOW_NORMAL)
        except cv2.error as exc:
            raise FerError(f"--show: cannot open a window ({str(exc).strip().splitlines()[-1]}); use --headless") from None

    def show(self, image: np.ndarray) -> bool:
        """Show ``image``; False when the user asked to stop."""
        self.cv2.imshow(self.NAME, image)
        return self.cv2.waitKey(1) & 0xFF not in (ord("q"), 27)

    def close(self) -> None:
        self.cv2.destroyWindow(self.NAME)


def run_video(cfg: VideoConfig, analyze: Analyzer, classes: Sequence[str], *,
              streams: Sequence[tuple[str, TextIO]] = (), track: Track = no_track,
              stop: threading.Event | None = None, on_open: Callable[[SourceInfo], Any] | None = None,
              source: FrameSource | None = None) -> VideoResult:
    """Process one video, camera or stream with ``analyze``; see the module docstring.

    ``streams`` are extra (format, text stream) row sinks, e.g. ("csv", sys.stdout). An input that
    cannot be read at all is a result with its status (``unreadable``, ``missing``) and nothing is
    written; anything after the first frame ends the run with the outputs finalised, never a traceback
    (a second Ctrl-C raises KeyboardInterrupt after closing them). ``on_open`` is called with the
    input's description once it is open, before processing starts. ``source`` is the input already
    opened by :func:`open_source` (it is closed here)."""
    try:
        cfg.check()
    except FerError:
        if source is not None:
            source.close()
        raise
    classes = tuple(classes)
    stop = stop or threading.Event()
    if source is None:
        try:
            source = open_source(cfg)
        except VideoProblem as exc:
            return VideoResult(None, exc.status, exc.reason)
    info = source.info
    result = VideoResult(info, "ok")
    summary = Summary(classes, 1.0 / info.fps)
    tracker = FaceTracker(info.fps)
    smoother = TrackSmoother(cfg.smooth)
    window: _Window | None = None
    writers: list[RowWriter] = [RowWriter(s, fmt, classes) for fmt, s in streams]
    video: AnnotatedVideo | None = None
    last_drawn: np.ndarray | None = None
    last_index = -1
    processed = 0
    t_start: float | None = None
    first_time: float | None = None

    def process(chunk: list[Any]) -> None:
        nonlocal video, last_drawn, last_index, processed
        detect = [(processed + i) % cfg.detect_every == 0 for i in range(len(chunk))]
        found = iter(analyze([f.image for f, d in zip(chunk, detect) if d]) if any(detect) else [])
        for frame, d in zip(chunk, detect):
            rows: list[TrackRow] = []
            if d:
                faces = next(found)
                result.detected_frames += 1
                boxes = np.array([f.box for f in faces], dtype=np.float64).reshape(-1, 4)
                for t in tracker.update(boxes, [f.score for f in faces], frame.time):
                    face = faces[t.detection]
                    p = smoother.update(t.track, frame.time, face.probs)
                    rows.append(TrackRow(frame.index, frame.time, t.track, t.box, face.score,
                                         classes[int(np.argmax(p))], p, np.asarray(face.probs)))
            else:
                for t in tracker.carry(frame.time):
                    p = smoother.current(t.track)
                    if p is not None:
                        rows.append(TrackRow(frame.index, frame.time, t.track, t.box, None,
                                             classes[int(np.argmax(p))], p, None))
            for w in writers:
                for r in rows:
                    w.write(r)
            result.rows += len(rows)
            summary.add_frame(frame.time, rows)
            if video is not None or window is not None:
                drawn = annotate_frame(frame.image, rows, classes)
                if video is not None:
                    # Frames that were dropped (live) or undecodable are filled with the last picture, so
                    # the video keeps the input's frame count and real-time duration.
                    for _ in range(frame.index - last_index - 1 if last_drawn is not None else 0):
                        video.write(last_drawn)
                    video.write(drawn)
                last_drawn = drawn
                if window is not None and not window.show(drawn):
                    stop.set()
            last_index = frame.index
            processed += 1
            result.frames = processed

    with contextlib.ExitStack() as stack:
        stack.callback(source.close)
        if cfg.show:
            window = _Window()
            stack.callback(window.close)
        if cfg.out is not None:  # row files: each under a temporary name until the run ends
            for fmt in ("csv", "jsonl"):
                dest = Path(cfg.out) / OUT_FILES[fmt]
                fh = open(stack.enter_context(partial_path(dest)), "w", encoding="utf-8", newline="")
                stack.callback(fh.close)  # closed before partial_path moves it into place
                writers.append(RowWriter(fh, fmt, classes))
                result.outputs[fmt] = dest
        ann = cfg.annotate_path()
        if ann is not None:
            video = AnnotatedVideo(stack.enter_context(partial_path(ann)), info.fps, (info.width, info.height))
            stack.callback(video.close)
            result.outputs["annotate"] = ann
        caught: list[str] = []
        stack.enter_context(_stop_on_signals(stop, caught))
        if on_open is not None:  # Ctrl-C is handled from here on
            on_open(info)
        chunk: list[Any] = []
        try:
            if info.live:  # warm the analyzer up on the first frame before the live clock starts (its first
                analyze([source.first.image])  # call is several times slower and would drop frames for nothing)
            for frame in track(source, "processing video", total=None if info.live else info.frame_count):
                if t_start is None:
                    t_start, first_time = time.perf_counter(), frame.time
                if cfg.duration is not None and frame.time - first_time >= cfg.duration:
                    break
                chunk.append(frame)
                if info.live or len(chunk) >= cfg.batch_size:
                    process(chunk)
                    chunk = []
                if stop.is_set():
                    break
            if chunk:
                process(chunk)
        except KeyboardInterrupt:
            result.status, result.reason = "interrupted", "interrupted (second Ctrl-C)"
            raise
        except BrokenPipeError:  # the reader of --csv / --jsonl went away (`| head`): a stop, not a failure
            result.status, result.reason = "stopped", "the output stream was closed"
        except (FerError, OSError, RuntimeError, ValueError) as exc:  # mid-video: keep what was written
            log.debug("video processing failed", exc_info=True)
            result.status = "failed"
            result.reason = f"failed at frame {last_index + 1}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}"
        finally:
            result.seconds = time.perf_counter() - t_start if t_start is not None else 0.0
            if result.status == "ok":  # not already failed or stopped by a closed stream
                if caught:
                    result.status, result.reason = "interrupted", f"{caught[0]} after {processed} frame(s)"
                elif stop.is_set():
                    result.status, result.reason = "stopped", f"stopped after {processed} frame(s)"
                elif info.bad or info.ended_early:
                    result.status = "partial"
                    result.reason = "; ".join(x for x in (
                        f"{info.bad} undecodable frame(s) skipped" if info.bad else "", info.ended_early or "") if x)
            result.tracks = summary.finish()
            if cfg.out is not None:  # after the loop, however it ended
                result.outputs["summary"] = Path(cfg.out) / OUT_FILES["summary"]
                result.outputs["timeline"] = Path(cfg.out) / OUT_FILES["timeline"]
                atomic_write_json(result.outputs["summary"], result.to_dict())
                plot_timeline(summary, result.outputs["timeline"],
                              f"{Path(info.name).name if info.kind == 'file' else info.name}: smoothed probabilities")
    return result


def open_source(cfg: VideoConfig) -> FrameSource:
    """Open the input ``cfg`` names (its first frame is decoded); :class:`VideoProblem` if it cannot be read."""
    return FrameSource(cfg.webcam if cfg.webcam is not None else cfg.source, cfg.kind, live=cfg.is_live)


def recognizer_analyzer(rec: Any) -> Analyzer:
    """The :data:`Analyzer` of a :class:`fercli.api.Recognizer`: one detector pass over the frames and
    one classifier pass over all their faces (the same crops and probabilities as `fer predict`)."""
    from fercli.align.imageio import LoadedImage

    def analyze(frames: list[np.ndarray]) -> list[list[FaceObs]]:
        dets = rec.detect([LoadedImage(f, 1.0, (f.shape[1], f.shape[0])) for f in frames])
        crops = [face.crop for d in dets for face in d.faces]
        probs = rec.classify(np.stack(crops) if crops else [])
        out, k = [], 0
        for d in dets:
            out.append([FaceObs(face.box, face.score, probs[k + j]) for j, face in enumerate(d.faces)])
            k += len(d.faces)
        return out

    return analyze


def video_config(pcfg: Any) -> VideoConfig:
    """The :class:`VideoConfig` of a :class:`fercli.predict.PredictConfig` naming one video, camera or stream."""
    return VideoConfig(source=pcfg.inputs[0] if pcfg.inputs else None, webcam=pcfg.webcam, live=pcfg.live,
                       detect_every=pcfg.detect_every, smooth=pcfg.smooth, annotate=pcfg.annotate, out=pcfg.out,
                       show=pcfg.show, duration=pcfg.duration, batch_size=pcfg.batch_size)


def predict_video(pcfg: Any, ws: Any, *, streams: Sequence[tuple[str, TextIO]] = (),
                  track: Track = no_track, on_model: Callable[[Any], Any] | None = None,
                  on_open: Callable[[SourceInfo], Any] | None = None,
                  stop: threading.Event | None = None) -> tuple[VideoResult, Any]:
    """`fer predict` on one video, camera or stream (``pcfg``, a :class:`fercli.predict.PredictConfig`).
    Returns the result and the :class:`fercli.api.Recognizer` used (None when the input could not be
    read: it is opened before the model is loaded, so a bad input fails at once)."""
    from fercli.api import Recognizer
    from fercli.predict import recognizer_config

    vcfg = video_config(pcfg)
    vcfg.check()
    if pcfg.no_detect:
        raise FerError("--no-detect is for pictures that are already aligned faces; a video needs face detection")
    rcfg = recognizer_config(pcfg)
    rcfg.check()
    try:
        source = open_source(vcfg)
    except VideoProblem as exc:
        return VideoResult(None, exc.status, exc.reason), None
    try:
        rec = Recognizer.from_config(rcfg, ws, on_model)
    except BaseException:
        source.close()
        raise
    return run_video(vcfg, recognizer_analyzer(rec), rec.classes, streams=streams, track=track, stop=stop,
                     on_open=on_open, source=source), rec
