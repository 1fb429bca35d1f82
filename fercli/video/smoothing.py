"""Per-track temporal smoothing of class probabilities, on timestamps.

An exponential moving average with a half-life in seconds: a measurement ``dt`` seconds after the
previous one gets weight ``1 - 0.5 ** (dt / half_life)``. The weight depends on elapsed time, not on
frame counts, so the same half-life means the same thing at 15 or 60 fps, with variable frame rate,
with ``--detect-every`` and with dropped frames. ``half_life == 0`` is no smoothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class TrackSmoother:
    """The smoothed probabilities of every track."""

    def __init__(self, half_life: float) -> None:
        if not half_life >= 0:
            raise ValueError(f"half-life must be >= 0 seconds, got {half_life}")
        self.half_life = half_life
        self._state: dict[int, tuple[float, np.ndarray]] = {}  # track -> (time of last measurement, probs)

    def update(self, track: int, time: float, probs: np.ndarray) -> np.ndarray:
        """Fold the measurement ``probs`` taken at ``time`` into ``track``'s average and return it.

        A new track starts at its first measurement. Time going backwards (it should not) counts as no
        time passing."""
        probs = np.asarray(probs, dtype=np.float64)
        prev = self._state.get(track)
        if prev is None or self.half_life == 0:
            smoothed = probs.copy()
        else:
            dt = max(0.0, time - prev[0])
            keep = 0.5 ** (dt / self.half_life)
            smoothed = keep * prev[1] + (1.0 - keep) * probs
        self._state[track] = (time, smoothed)
        return smoothed

    def current(self, track: int) -> np.ndarray | None:
        """``track``'s smoothed probabilities as of its last measurement (None: never measured)."""
        state = self._state.get(track)
        return None if state is None else state[1]


def label_flips(labels: Sequence[object]) -> int:
    """How many times consecutive labels differ (a track's frame-to-frame flicker)."""
    return sum(1 for a, b in zip(labels, labels[1:]) if a != b)
