"""Face tracks across frames, with Roboflow's ByteTrack (the ``trackers`` package).

The tracker is fed only the frames where faces were detected (every ``--detect-every``-th frame), with
their timestamps, so its Kalman filter steps by the real time between detections (variable frame rate
and skipped frames alike). On the frames in between, each track's box is the same filter's prediction
for that frame's time, computed on a copy: carrying a box never changes the tracker's state.

A face gets its track id at its first detection, so the first frame it is seen on has a row (ByteTrack
itself only numbers a track at its second detection; :class:`FaceTracker` numbers new tracks as they
are made); a track that goes unmatched for longer than ``lost_seconds`` ends, and a face that comes
back later gets a new id. When
detections are further apart than that (a slow machine on live input), the budget grows to three
times the usual gap between detections, so that tracks survive from one detection to the next.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

LOST_SECONDS = 1.0  # a track survives this long without a matching detection


@dataclass
class Tracked:
    """One face on one frame: its track, its box, and which detection it is (None: carried)."""

    track: int  # >= 1
    box: np.ndarray  # x1, y1, x2, y2 in frame pixels
    detection: int | None  # index into the frame's detections; None on a frame without detection


class FaceTracker:
    """ByteTrack over face boxes; :meth:`update` on frames with detections, :meth:`carry` between them."""

    def __init__(self, fps: float, lost_seconds: float = LOST_SECONDS) -> None:
        from trackers import ByteTrackTracker

        # lost_track_buffer is in 30 fps frames (the library's convention); with timestamps the budget
        # is lost_track_buffer / 30 seconds.
        # minimum_consecutive_frames=1: one detection makes a track (its id is given in update below).
        self._bt = ByteTrackTracker(lost_track_buffer=max(1, round(lost_seconds * 30)), frame_rate=fps,
                                    track_activation_threshold=0.0, high_conf_det_threshold=0.0,
                                    minimum_consecutive_frames=1)
        self._next_id = 0  # tracker ids are ours (0-based, as ByteTrack's): see update
        self.fps = fps
        self.lost_seconds = lost_seconds
        self._gap: float | None = None  # running mean of the time between updates
        self._last_time: float | None = None
        self._visible: set[int] = set()  # tracks matched at the last update (tracker ids, 0-based)

    def update(self, boxes: np.ndarray, scores: list[float | None], time: float) -> list[Tracked]:
        """Match this frame's detections (``boxes`` (N, 4), x1 y1 x2 y2) to tracks at ``time`` seconds.

        Returns the detections that belong to a confirmed track, in detection order. Detections are all
        treated as confident (the detector's ``--min-score`` has already filtered them; a Haar box has
        no score), so ByteTrack's low-score stage never applies."""
        import supervision as sv

        boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        conf = np.array([1.0 if s is None else float(s) for s in scores], dtype=np.float32)
        dets = sv.Detections(xyxy=boxes, confidence=conf) if len(boxes) else sv.Detections.empty()
        if self._last_time is not None and time > self._last_time:
            gap = time - self._last_time
            self._gap = gap if self._gap is None else 0.8 * self._gap + 0.2 * gap
            # ByteTrack's lost-track budget in seconds (a public attribute, read on every update)
            self._bt.maximum_time_without_update = max(self.lost_seconds, 3.0 * self._gap)
        out = self._bt.update(dets, timestamp=time)
        self._last_time = time
        # ByteTrack returns a new face's detection with id -1 and numbers its track only at the next
        # match, so the first frame would have no row. Number each new track now, from our own counter
        # (every track then has an id, so ByteTrack never allocates one of its own), and give the
        # detection it was made from that id.
        ids = np.asarray(out.tracker_id, dtype=int).copy()
        new_tracks = [t for t in self._bt.tracks if t.tracker_id == -1]  # made from this update's detections
        for i in np.flatnonzero(ids < 0):
            if not new_tracks:
                break
            made = min(new_tracks, key=lambda t: float(np.abs(t.get_state_bbox() - out.xyxy[i]).sum()))
            new_tracks.remove(made)
            made.tracker_id = ids[i] = self._next_id
            self._next_id += 1
        found: list[Tracked] = []
        for box, tid in zip(out.xyxy, ids):
            if tid < 0:  # a detection that made no track (none with the thresholds above)
                continue
            # The returned rows are the input rows reordered: find which detection each one is.
            k = int(np.argmin(np.abs(boxes - box).sum(1)))
            found.append(Tracked(int(tid) + 1, boxes[k].astype(np.float64), k))
        found.sort(key=lambda t: t.detection)
        self._visible = {t.track - 1 for t in found}
        return found

    def carry(self, time: float) -> list[Tracked]:
        """The tracks seen at the last update, with boxes predicted for ``time`` (no state changes)."""
        if self._last_time is None:
            return []
        step = max(0.0, time - self._last_time) * self.fps  # in frames: the filter's unit
        out = []
        for t in self._bt.tracks:
            if t.tracker_id in self._visible:
                est = copy.deepcopy(t.state_estimator)
                est.predict(frame_step=step, frame_rate=self.fps)
                out.append(Tracked(int(t.tracker_id) + 1, np.asarray(est.state_to_bbox(), dtype=np.float64), None))
        return sorted(out, key=lambda t: t.track)
