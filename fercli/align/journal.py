"""`fer align`'s resume journal: one JSON line per finished source image, under DST.

The journal (``DST/.align-journal.jsonl``) starts with a header holding the settings the crops were
made with; each later line is one finished image (its manifest rows and the source file's size and
mtime). Lines are flushed per batch and fsynced every few seconds, so Ctrl-C or a kill loses nothing
already done, and a rerun with the same settings skips what the journal says is finished.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from fercli.align.config import AlignConfig
from fercli.align.transform import LANDMARK_WEIGHTS
from fercli.fileio import atomic_write_text

JOURNAL_NAME = ".align-journal.jsonl"
JOURNAL_VERSION = 1
RETRY_STATUSES = frozenset({"missing", "error"})  # possibly transient: a rerun tries these again


def journal_settings(cfg: AlignConfig, weights_sha: str | None, source_root: Path) -> dict[str, Any]:
    """What the crops depend on: a journal made with other settings is not resumed."""
    return {
        "detector": cfg.detector,
        "detector_weights_sha256": weights_sha,
        "faces": cfg.faces,
        "min_score": cfg.min_score,
        "min_face_size": cfg.min_face_size,
        "size": cfg.size,
        "margin": cfg.margin,
        "detect_size": cfg.detect_size if cfg.detector.startswith("retinaface") else None,
        "landmark_weights": list(LANDMARK_WEIGHTS),
        "source_root": str(source_root.resolve()),
    }


def settings_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
    """The first few settings that differ, as ``name old -> new`` (for the refusal message)."""
    diffs = [f"{k} {old.get(k)!r} -> {new.get(k)!r}" for k in new if old.get(k) != new.get(k)]
    return ", ".join(diffs[:4])


class Journal:
    """Append-only record of finished images: a header line, then one JSON line per source image."""

    SYNC_SECONDS = 2.0

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: Any = None
        self._synced = time.monotonic()

    def read(self) -> tuple[dict[str, Any] | None, dict[str, dict[str, Any]]]:
        """(header, {src: entry}); a torn last line (killed mid-write) is ignored."""
        if not self.path.is_file():
            return None, {}
        header, entries = None, {}
        with open(self.path, "rb") as fh:
            for i, raw in enumerate(fh):
                try:
                    obj = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
                if i == 0:
                    header = obj if isinstance(obj, dict) and "fer_align_journal" in obj else None
                    if header is None:
                        return None, {}
                    continue
                if isinstance(obj, dict) and "src" in obj and "rows" in obj:
                    entries[obj["src"]] = obj  # later lines (retries) win
        return header, entries

    def start(self, header: dict[str, Any], fresh: bool) -> None:
        """Open for appending; ``fresh`` starts a new journal holding only ``header``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fresh:
            atomic_write_text(self.path, json.dumps(header) + "\n")
        self._fh = open(self.path, "ab")
        # A torn last line from a killed run would glue onto our first line: start on a fresh line.
        if self._fh.tell() > 0:
            with open(self.path, "rb") as rfh:
                rfh.seek(-1, os.SEEK_END)
                if rfh.read(1) != b"\n":
                    self._fh.write(b"\n")

    def append(self, entries: list[dict[str, Any]]) -> None:
        """Append and flush to the OS (a killed process loses nothing); fsync every few seconds
        (so even a machine crash loses at most that much)."""
        if not entries:
            return
        self._fh.write(b"".join(json.dumps(e, separators=(",", ":")).encode() + b"\n" for e in entries))
        self._fh.flush()
        now = time.monotonic()
        if now - self._synced > self.SYNC_SECONDS:
            os.fsync(self._fh.fileno())
            self._synced = now

    def close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None
