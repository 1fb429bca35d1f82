"""What a video run writes: per-frame per-track rows (CSV, JSONL), the annotated video, the per-track
summary and the timeline plot.

Rows are written and flushed one at a time, and the annotated video's encoder is released in a
``finally``, so an interrupted or failed run leaves files that are complete up to the last frame
processed. Files go to a temporary name beside their destination and are moved into place when the
run ends, however it ends (:func:`fercli.fileio.partial_path`): a reader never sees a half-written file.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from fercli.errors import FerError

TIMELINE_MAX_TRACKS = 12  # panels in the timeline plot: the longest tracks


@dataclass
class TrackRow:
    """One face on one frame. ``probs`` are smoothed; ``raw`` is the classifier's measurement on this
    frame, None on frames without detection (``--detect-every``), where the box is the tracker's."""

    frame: int
    time: float
    track: int
    box: Sequence[float]
    score: float | None
    label: str
    probs: np.ndarray
    raw: np.ndarray | None


def csv_header(classes: Sequence[str]) -> list[str]:
    return ["frame", "time", "track", "x1", "y1", "x2", "y2", "score", "detected", "label", *classes,
            "raw_label", *(f"raw_{c}" for c in classes)]


class RowWriter:
    """Writes :class:`TrackRow` s to a text stream as CSV or JSONL, one flushed line per row."""

    def __init__(self, stream: TextIO, fmt: str, classes: Sequence[str]) -> None:
        if fmt not in ("csv", "jsonl"):
            raise ValueError(f"unknown row format {fmt!r}")
        self.stream, self.fmt, self.classes = stream, fmt, tuple(classes)
        if fmt == "csv":
            self._line(csv_header(self.classes))

    def _line(self, fields: list[Any]) -> None:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerow(fields)
        self.stream.write(buf.getvalue())  # one write per line: an interruption never splits a row
        self.stream.flush()

    def write(self, row: TrackRow) -> None:
        box = [round(float(v), 1) for v in row.box]
        raw_label = None if row.raw is None else self.classes[int(np.argmax(row.raw))]
        if self.fmt == "csv":
            raw = [""] * len(self.classes) if row.raw is None else [f"{v:.6f}" for v in row.raw]
            self._line([row.frame, f"{row.time:.6f}", row.track, *box, "" if row.score is None else row.score,
                        int(row.raw is not None), row.label, *(f"{v:.6f}" for v in row.probs), raw_label or "", *raw])
            return
        obj = {"frame": row.frame, "time": round(row.time, 6), "track": row.track, "box": box, "score": row.score,
               "detected": row.raw is not None, "label": row.label,
               "probs": {c: round(float(v), 6) for c, v in zip(self.classes, row.probs)}, "raw_label": raw_label,
               "raw_probs": None if row.raw is None else {c: round(float(v), 6) for c, v in zip(self.classes, row.raw)}}
        self.stream.write(json.dumps(obj) + "\n")
        self.stream.flush()


class AnnotatedVideo:
    """An mp4 at the input's size and frame rate; :meth:`close` finalises it (call it in a ``finally``)."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        import cv2

        self.size = size
        self.frames = 0
        self._writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
        if not self._writer.isOpened():
            raise FerError(f"{path}: OpenCV cannot write an mp4 video here (no mp4v encoder, or the folder is not writable)")

    def write(self, image: np.ndarray) -> None:
        self._writer.write(image)
        self.frames += 1

    def close(self) -> None:
        self._writer.release()


def annotate_frame(image: np.ndarray, rows: Sequence[TrackRow], classes: Sequence[str]) -> np.ndarray:
    """``image`` with each row's box, track id and smoothed label ("#3 hap 94%"), at the input's size.

    The layout is `fer predict`'s (:func:`fercli.predict.plan_annotation`); the legend strip it puts
    below a photo is left out, since a video frame must keep its size."""
    import cv2

    from fercli.predict import FaceResult, draw_annotation, plan_annotation

    h, w = image.shape[:2]
    if not rows:
        return image
    faces = [FaceResult(r.track, [float(v) for v in r.box], r.score, r.label,
                        {c: float(p) for c, p in zip(classes, r.probs)}) for r in rows]
    plan = plan_annotation(w, h, faces, classes, prefixes=[f"#{r.track} " for r in rows])
    plan.legend = []
    canvas = draw_annotation(image, plan)
    if canvas.shape[:2] != (h, w):  # small frames are drawn enlarged: back to the input's size
        canvas = cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA)
    return canvas


@dataclass
class TrackStats:
    """What the summary needs of one track; the timeline keeps its smoothed probabilities."""

    first: float
    last: float
    frames: int = 0
    detected: int = 0
    seconds: np.ndarray | None = None  # visible time per class (by the smoothed label)
    times: list[float] = field(default_factory=list)
    series: list[np.ndarray] = field(default_factory=list)


class Summary:
    """Per-track duration, dominant expression and time share per class, accumulated frame by frame.

    A frame's rows count for the time until the next processed frame (the last for one nominal frame),
    so shares are time-weighted: right with variable frame rate and with dropped frames."""

    def __init__(self, classes: Sequence[str], nominal_dt: float) -> None:
        self.classes = tuple(classes)
        self.nominal_dt = nominal_dt
        self.tracks: dict[int, TrackStats] = {}
        self._pending: tuple[float, list[tuple[int, int]]] | None = None  # last frame's time, (track, class)

    def _credit(self, until: float | None) -> None:
        if self._pending is None:
            return
        t, items = self._pending
        dt = self.nominal_dt if until is None else max(0.0, until - t)
        for track, k in items:
            self.tracks[track].seconds[k] += dt
        self._pending = None

    def add_frame(self, time: float, rows: Sequence[TrackRow]) -> None:
        self._credit(time)
        items = []
        for r in rows:
            st = self.tracks.get(r.track)
            if st is None:
                st = self.tracks[r.track] = TrackStats(r.time, r.time, seconds=np.zeros(len(self.classes)))
            st.last = r.time
            st.frames += 1
            st.detected += r.raw is not None
            st.times.append(r.time)
            st.series.append(np.asarray(r.probs, dtype=np.float32))
            items.append((r.track, self.classes.index(r.label)))
        self._pending = (time, items)

    def finish(self) -> list[dict[str, Any]]:
        """One dict per track, in track order (call once, at the end)."""
        self._credit(None)
        out = []
        for track, st in sorted(self.tracks.items()):
            total = float(st.seconds.sum())
            share = {c: (round(float(s / total), 4) if total > 0 else 0.0) for c, s in zip(self.classes, st.seconds)}
            out.append({"track": track, "first_time": round(st.first, 3), "last_time": round(st.last, 3),
                        "duration": round(total, 3), "frames": st.frames, "detected_frames": st.detected,
                        "dominant": max(share, key=share.get), "share": share})
        return out


def plot_timeline(summary: Summary, dest: Path, title: str) -> None:
    """One panel per track (the ``TIMELINE_MAX_TRACKS`` longest): smoothed probabilities over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from fercli.fileio import atomic_path
    from fercli.predict import class_colours

    tracks = sorted(summary.tracks.items(), key=lambda kv: -float(kv[1].seconds.sum()))[:TIMELINE_MAX_TRACKS]
    tracks.sort()
    colours = {c: tuple(v / 255 for v in reversed(bgr)) for c, bgr in class_colours(summary.classes).items()}
    n = max(1, len(tracks))
    height = 0.9 + 1.25 * n  # inches: 1.25 per panel, room for the title and the legend
    fig, axes = plt.subplots(n, 1, figsize=(9, height), sharex=True, squeeze=False)
    t_max = max((st.last for _, st in tracks), default=1.0)
    for ax, (track, st) in zip(axes[:, 0], tracks):
        series = np.stack(st.series) if st.series else np.zeros((0, len(summary.classes)))
        for k, c in enumerate(summary.classes):
            if series.size and series[:, k].max() >= 0.05:  # classes that never rise above 5% are noise
                ax.plot(st.times, series[:, k], color=colours[c], lw=1.6, label=c)
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlim(0, max(t_max, 1e-3))
        ax.set_ylabel(f"#{track}", rotation=0, ha="right", va="center", fontsize=11)
        ax.set_yticks([0, 0.5, 1])
        ax.grid(alpha=0.3)
    if not tracks:
        axes[0, 0].text(0.5, 0.5, "no face was tracked", ha="center", va="center", transform=axes[0, 0].transAxes)
    axes[-1, 0].set_xlabel("time (s)")
    shown = f", {len(tracks)} of {len(summary.tracks)} tracks (the longest)" if len(summary.tracks) > len(tracks) else ""
    axes[0, 0].set_title(f"{title}{shown}", fontsize=10)
    handles: dict[str, Any] = {}
    for ax in axes[:, 0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    legend_in = 0.45 if handles else 0.0
    if handles:
        order = [c for c in summary.classes if c in handles]
        fig.legend([handles[c] for c in order], order, loc="lower center", ncol=min(8, len(order)), fontsize=9,
                   frameon=False)
    fig.tight_layout(rect=(0, legend_in / height, 1, 1))
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
