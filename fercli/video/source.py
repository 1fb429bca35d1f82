"""Frames and their timestamps from a video file, a camera or a stream URL.

Two ways of reading, one interface (:class:`FrameSource`, an iterator of :class:`Frame`):

- **offline** (a file): every frame, in order, as fast as the consumer takes them; nothing is dropped.
- **live** (a camera, a stream URL, or a file with ``live=True``): a reader thread decodes frames as
  they arrive (a file is paced at its own frame rate, as a camera would deliver it) and keeps only the
  newest; when processing falls behind, older frames are dropped rather than queued, and counted.

Timestamps are the file's presentation times (``CAP_PROP_POS_MSEC``), so variable frame rate is
honoured; a camera or stream is stamped with the monotonic clock at capture, since their own clocks are
unreliable. A frame that cannot be decoded mid-file is skipped and counted (``Frame.index`` keeps
counting it, so indices stay positions in the file), never the end of the run.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fercli.errors import FerError
from fercli.choices import VIDEO_EXTS  # noqa: F401
from fercli.stage_configs import (  # noqa: F401  (light, for PredictConfig's checks; re-exported here)
    ANNOTATE_VIDEO_SUFFIXES, URL_SCHEMES, is_stream_url, is_video_input, is_video_run)

log = logging.getLogger(__name__)

MAX_BAD_RUN = 25  # consecutive undecodable frames taken as the end of a file (or of a broken stream)
DEFAULT_FPS = 30.0  # when the container states none (some streams, some cameras)


class VideoProblem(FerError):
    """A video that cannot be read at all: ``status`` (fercli.imagestatus's vocabulary) and a reason."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass
class Frame:
    """One decoded frame: its position in the input, its time in seconds and its BGR pixels."""

    index: int  # position in the input (frames that were dropped or undecodable still count)
    time: float  # seconds: the file's presentation time; for a camera or stream, capture time since its first frame
    image: np.ndarray


@dataclass
class SourceInfo:
    """What the input says about itself, and what reading it found (updated while reading)."""

    name: str  # the path, URL or ``webcam N``
    kind: str  # file, webcam or stream
    live: bool
    fps: float  # the stated frame rate (DEFAULT_FPS when none is stated)
    width: int
    height: int
    frame_count: int | None  # stated by the container; None for live sources (and when unknown)
    rotation: int = 0  # degrees the frames were turned upright by (the file's rotation metadata)
    read: int = 0  # frames delivered to the consumer
    dropped: int = 0  # live: frames decoded but replaced by a newer one before being taken
    bad: int = 0  # frames that could not be decoded (skipped)
    ended_early: str | None = None  # why reading stopped before the stated frame count
    notes: list[str] = field(default_factory=list)


def _probe_problem(path: Path) -> VideoProblem:
    """Why OpenCV could not open ``path``, as precisely as the file allows."""
    if path.stat().st_size == 0:
        return VideoProblem("unreadable", "the file is empty (0 bytes)")
    try:  # PyAV (installed with the tracker) can tell an audio-only file from a foreign one
        import av

        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    kinds = sorted({s.type for s in container.streams})
                    return VideoProblem("unreadable", "no video stream in the file (it has "
                                        + (", ".join(kinds) + " only)" if kinds else "no streams)"))
        except Exception:  # noqa: BLE001 - whatever av fails on, the file is not a readable video
            pass
    except ImportError:
        pass
    return VideoProblem("unreadable", "not a video OpenCV can decode (truncated or damaged, unknown format or codec, "
                        "or not a video); check that it plays in a video player, or copy or re-encode it again")


def open_capture(spec: str | int, kind: str):
    """An opened ``cv2.VideoCapture`` for a file path, a camera index or a stream URL, or a
    :class:`VideoProblem` saying why not."""
    import cv2

    if kind == "file":
        path = Path(spec)
        if not path.exists():
            raise VideoProblem("missing", "no such file")
        if not path.is_file() or not os.access(path, os.R_OK):
            raise VideoProblem("unreadable", "not a readable file")
        if path.stat().st_size == 0:
            raise _probe_problem(path)
    # OpenCV logs every backend it tries (V4L2, FFmpeg, Orbbec ...) when an input cannot be opened: the
    # error below says it once.
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        cap = cv2.VideoCapture(int(spec) if kind == "webcam" else str(spec))
    finally:
        cv2.utils.logging.setLogLevel(level)
    if not cap.isOpened():
        cap.release()
        if kind == "file":
            raise _probe_problem(Path(spec))
        what = f"camera {spec}" if kind == "webcam" else f"the stream {spec}"
        raise VideoProblem("unreadable", f"cannot open {what} (not connected, in use, or unreachable)")
    return cap


class FrameSource:
    """Iterate the frames of one input; :attr:`info` says what it is and what reading found.

    Use as a context manager (or call :meth:`close`): closing stops a live reader thread and releases
    the capture, whatever state the iteration is in.
    """

    def __init__(self, spec: str | int, kind: str = "file", live: bool | None = None) -> None:
        import cv2

        self._cap = open_capture(spec, kind)
        self.live = (kind != "file") if live is None else live
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        if not (fps and np.isfinite(fps) and 0 < fps < 1000):
            fps = DEFAULT_FPS
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT)) if kind == "file" else 0
        name = f"webcam {spec}" if kind == "webcam" else str(spec)
        self.info = SourceInfo(name, kind, self.live, float(fps), int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
                               int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT)), count if count > 0 else None)
        rotation = int(self._cap.get(cv2.CAP_PROP_ORIENTATION_META) or 0) % 360 if hasattr(cv2, "CAP_PROP_ORIENTATION_META") else 0
        if rotation:  # OpenCV turns the frames upright (CAP_PROP_ORIENTATION_AUTO): report the upright size
            self.info.rotation = rotation
            if rotation in (90, 270):
                self.info.width, self.info.height = self.info.height, self.info.width
            self.info.notes.append(f"turned {rotation} degrees upright (the file's rotation metadata)")
        self._frames = self._decode()  # one generator for the whole input: the first frame is read now
        self._first = self._read_first()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._slot: Frame | None = None
        self._cond = threading.Condition()
        self._done = False

    @property
    def first(self) -> Frame:
        """The first frame (read when the source was opened; iteration still yields it first)."""
        return self._first

    # ---- decoding --------------------------------------------------------------------------------
    def _read_first(self) -> Frame:
        """The first decodable frame, read now so that a file with no frame at all fails before any
        output is created (and so that the true, upright frame size is known)."""
        frame = next(self._frames, None)
        if frame is None:
            self._cap.release()
            if self.info.kind == "file":
                raise VideoProblem("unreadable", "the video has no readable frames")
            raise VideoProblem("unreadable", f"{self.info.name} delivered no frame")
        self.info.height, self.info.width = frame.image.shape[:2]
        return frame

    def _decode(self) -> Iterator[Frame]:
        """Decode frames in order, skipping undecodable ones (counted in ``info.bad``).

        A failed read is a bad frame only if a later read succeeds; otherwise it is the end: the file's
        position has reached its stated frame count, or ``MAX_BAD_RUN`` reads in a row failed."""
        import cv2

        info, index, pending, t0, last_t = self.info, 0, 0, None, None
        while True:
            ok, image = self._cap.read()
            if not ok or image is None:
                pending += 1
                if info.kind == "file" and info.frame_count is not None:
                    at_end = self._cap.get(cv2.CAP_PROP_POS_FRAMES) >= info.frame_count - info.bad - pending
                else:
                    at_end = False
                if at_end or pending >= MAX_BAD_RUN:
                    if not at_end and info.frame_count is not None and index < info.frame_count:
                        info.ended_early = f"decoding stopped at frame {index} of {info.frame_count}"
                    return
                continue
            if pending:  # decoding went on: the failed reads were bad frames, not the end
                info.bad += pending
                log.warning("%s: %d undecodable frame(s) skipped before frame %d", info.name, pending, index + pending)
                index += pending
                pending = 0
            if info.kind == "file":
                t = self._cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                if last_t is not None and not t > last_t:  # no usable timestamp: one nominal frame later
                    t = last_t + 1.0 / info.fps
            else:
                now = time.monotonic()
                t0 = now if t0 is None else t0
                t = now - t0
            last_t = t
            yield Frame(index, t, image)
            index += 1

    # ---- iteration -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Frame]:
        if not self.live:
            yield self._deliver(self._first)
            for frame in self._frames:
                yield self._deliver(frame)
            return
        self._thread = threading.Thread(target=self._reader, name="fer-video-reader", daemon=True)
        self._thread.start()
        while True:
            with self._cond:
                while self._slot is None and not self._done:
                    self._cond.wait(0.1)
                frame, self._slot = self._slot, None
                if frame is None:  # done and nothing left
                    return
            yield self._deliver(frame)

    def _deliver(self, frame: Frame) -> Frame:
        self.info.read += 1
        return frame

    def _reader(self) -> None:
        """Live: decode continuously and keep only the newest frame (drop, never queue)."""
        start = time.monotonic()
        pace = self.info.kind == "file"  # a file played live is delivered at its own rate, like a camera
        try:
            for frame in itertools.chain([self._first], self._frames):
                if self._stop.is_set():
                    return
                if pace:
                    delay = start + frame.time - self._first.time - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        return
                with self._cond:
                    if self._slot is not None:
                        self.info.dropped += 1
                    self._slot = frame
                    self._cond.notify()
        except Exception as exc:  # noqa: BLE001 - a failing camera ends the run; the consumer keeps its output
            log.warning("%s: reading stopped: %s", self.info.name, exc)
            self.info.ended_early = f"reading stopped: {exc}"
        finally:
            with self._cond:
                self._done = True
                self._cond.notify()

    def close(self) -> None:
        """Stop the reader thread (if any) and release the capture. Safe to call more than once."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        self._cap.release()

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
