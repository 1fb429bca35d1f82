"""`fer align`: detect, align and crop every face of a source, resumably, recording every image.

Pipeline: the source (a folder, a dataset root or a manifest) becomes a table of images. Images are
decoded in DataLoader workers (robustly: :mod:`fercli.align.imageio`), detected in batches on the
chosen device (:mod:`fercli.align.detectors`), aligned onto the ArcFace template
(:mod:`fercli.align.transform`) and written atomically under DST, mirroring the source's relative
paths. Every finished image is appended to a journal (``DST/.align-journal.jsonl``, fsynced per
batch), so Ctrl-C or a kill loses nothing already done and a rerun skips it; ``DST/manifest.parquet``
is rebuilt from the journal at checkpoints and at the end, atomically. Every source image gets at
least one manifest row: ``status`` says what happened (``ok`` rows have a crop) and ``reason`` why.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, Literal

import cv2
import numpy as np
import pandas as pd
import torch

from fercli.align import detectors as det
from fercli.align.imageio import ImageProblem, LoadedImage, load_image, write_image
from fercli.align.transform import LANDMARK_WEIGHTS, align_face, box_crop, check_geometry, resize_face
from fercli.errors import FerError
from fercli.importers.base import IMAGE_EXTS, ImportConfig
from fercli.progress import Track, no_track
from fercli.schema import (
    BOX_COLUMNS,
    COL_LABEL,
    COL_LABEL_NAME,
    COL_PATH,
    COL_SPLIT,
    LANDMARK_COLUMNS,
    MANIFEST_NAME,
    make_provenance,
    read_manifest,
    read_parquet_meta,
    write_manifest,
)
from fercli.workspace import Workspace

log = logging.getLogger(__name__)

MODES = ("auto", "retinaface-resnet50", "retinaface-mobilenet", "haar", "landmarks", "none")
FACE_CHOICES = ("largest", "best", "all")
# Every status a row can have, in the order summaries list them.
from fercli.imagestatus import STATUSES  # noqa: E402  (one vocabulary with fer predict)
RETRY_STATUSES = frozenset({"missing", "error"})  # possibly transient: a rerun tries these again
JOURNAL_NAME = ".align-journal.jsonl"
JOURNAL_VERSION = 1
ALIGN_COLUMNS = ("src_path", "face_index", "score", "status", "reason")
NO_FACE_INDEX = -1  # face_index of rows without a crop


@dataclass
class AlignConfig:
    """Options of ``fer align`` (``[align]`` in fer.toml)."""

    # auto: the best detector available offline, as `fer predict` chooses (fercli.align.detectors.auto_detector)
    detector: Literal["auto", "retinaface-resnet50", "retinaface-mobilenet", "haar", "landmarks", "none"] = "auto"
    detector_weights: Path | None = None  # default: torch's hub cache (ResNet-50: downloaded there)
    faces: Literal["largest", "best", "all"] = "largest"
    min_score: float = 0.8
    min_face_size: float = 0.0  # shorter side of the face box, in source pixels
    size: int = 224
    margin: float = 0.0
    detect_size: int = det.DEFAULT_DETECT_SIZE  # longest side of the detector's input
    device: str = "auto"
    batch_size: int | None = None  # images per forward pass; default 16 on a GPU, 4 on CPU
    workers: int | None = None  # default: 0 for small jobs, else min(4, CPUs)
    overwrite: bool = False
    checkpoint_seconds: float = 60.0
    # SRC a folder of class folders without train/valid/test folders: split once, stratified and seeded
    # (fercli.importers.folder.assign_splits), or keep every image in train with no_split
    split_fractions: tuple[float, ...] = (0.8, 0.1, 0.1)
    no_split: bool = False

    def check(self) -> None:
        if self.detector not in MODES:
            raise FerError(f"--detector must be one of {', '.join(MODES)}, got {self.detector!r}")
        if self.faces not in FACE_CHOICES:
            raise FerError(f"--faces must be one of {', '.join(FACE_CHOICES)}, got {self.faces!r}")
        check_geometry(self.size, self.margin)
        if not 0.0 <= self.min_score < 1.0:
            raise FerError(f"--min-score must be in [0, 1), got {self.min_score}")
        if self.min_face_size < 0:
            raise FerError(f"--min-face-size must be >= 0, got {self.min_face_size}")
        if self.batch_size is not None and self.batch_size < 1:
            raise FerError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.workers is not None and self.workers < 0:
            raise FerError(f"--workers must be >= 0, got {self.workers}")
        if not 64 <= self.detect_size <= 4096:
            raise FerError(f"--detect-size must be in 64..4096, got {self.detect_size}")


# ---- the source -----------------------------------------------------------------------------
@dataclass
class Source:
    """What to align: one row per source image, paths relative to ``root``."""

    df: pd.DataFrame
    classes: tuple[str, ...]
    root: Path
    kind: str  # "manifest" or an importer format (folder, rafdb, ...)
    path: Path  # what the user named: a folder, dataset root or manifest file
    dataset: str | None = None
    notes: list[str] = field(default_factory=list)

    def fingerprint(self, workspace: Workspace | None = None) -> str:
        if self.kind == "manifest":
            return workspace.sha256(self.path) if workspace is not None else _sha256(self.path)
        h = hashlib.sha256()
        for p in self.df[COL_PATH]:
            h.update(p.encode())
            h.update(b"\n")
        return h.hexdigest()


def _sha256(path: Path) -> str:
    from fercli.fileio import sha256_file

    return sha256_file(path)


def _inside(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def load_source(src: str | os.PathLike[str], dst: Path | None = None,
                split_fractions: tuple[float, ...] = (0.8, 0.1, 0.1), no_split: bool = False) -> Source:
    """Turn SRC (folder, folder holding a manifest.parquet, dataset root or manifest parquet) into a
    :class:`Source`. A folder of class folders without split folders is split as ``split_fractions``
    says (train, valid, test), unless ``no_split``."""
    from fercli.importers import detect_format, load_dataset

    src = Path(src)
    if not src.exists():
        raise FerError(f"{src}: no such file or directory")
    if src.is_dir() and (src / MANIFEST_NAME).is_file():
        # A folder that carries its own manifest (e.g. `fer demo`'s sample, with landmarks) is read
        # through it, so labels, splits and landmarks the folder layout cannot hold are kept.
        src = src / MANIFEST_NAME
    if src.is_file():
        if src.suffix.lower() != ".parquet":
            raise FerError(
                f"{src}: SRC must be a folder of images, a dataset root or a manifest (.parquet); "
                "import other formats first with `fer data import FORMAT SRC` and align the manifest it writes"
            )
        m = read_manifest(src)
        df = m.df
        if "status" in df.columns or "align" in m.meta:
            # An aligned manifest: only rows with a crop are images, and its boxes and landmarks
            # refer to the photos the crops came from, not to the crops.
            df = df[df["status"] == "ok"] if "status" in df.columns else df
            df = df.drop(columns=[c for c in (*BOX_COLUMNS, *LANDMARK_COLUMNS) if c in df.columns])
        df = df.reset_index(drop=True)
        if df.empty:
            raise FerError(f"{src}: no rows with images to align (every row has a status other than ok)")
        if df[COL_PATH].duplicated().any():
            first = df[COL_PATH][df[COL_PATH].duplicated()].iloc[0]
            raise FerError(f"{src}: image {first!r} has several rows; fer align needs one row per source image")
        return Source(df, m.classes, m.root, "manifest", src, m.meta.get("dataset"))
    if dst is not None and (_inside(dst, src)):
        raise FerError(f"DST {dst} is inside SRC {src}; its crops would be read as source images: choose a DST outside {src}")
    fmt = detect_format(src)
    if fmt == "fer2013":
        raise FerError(f"{src}: holds fer2013.csv; run `fer data import fer2013 {src}` first, then `fer align` on the manifest it writes")
    imp = load_dataset(ImportConfig(format=fmt or "folder", src=src, split_fractions=tuple(split_fractions),
                                    no_split=no_split))
    return Source(imp.df.reset_index(drop=True), imp.classes, imp.root, imp.dataset, src, imp.dataset, list(imp.notes))


def resolve_source(src: str | os.PathLike[str] | None, dst: Path, workspace: Workspace,
                   split_fractions: tuple[float, ...] = (0.8, 0.1, 0.1), no_split: bool = False) -> Source:
    """SRC as given, else the workspace's current dataset; never DST's own manifest."""
    own = (dst / MANIFEST_NAME).resolve()
    if src is None:
        art = workspace.resolve("dataset", None)
        if art.path.resolve() == own:
            # The current dataset is this DST's output: realign from what it was made from.
            given = (art.meta.get("align") or {}).get("source")
            if not given:
                raise FerError(f"{art.path}: the workspace's dataset is fer align's own output with no recorded source; pass SRC")
            src = given
        else:
            src = art.path
    if Path(src).resolve() == own:
        raise FerError(f"SRC {src} is DST's own manifest; pass the folder or manifest it was made from")
    return load_source(src, dst, split_fractions, no_split)


# ---- output names ---------------------------------------------------------------------------
def crop_name(src_rel: str, face_index: int, multi: bool) -> str:
    """Crop path (relative to DST) for face ``face_index`` of ``src_rel``: the source path itself,
    or ``<stem>_face<i><ext>`` for the second and later faces with ``--faces all``."""
    p = PurePosixPath(src_rel)
    if p.suffix.lower() not in IMAGE_EXTS:
        p = p.with_name(p.name + ".png")
    if multi and face_index > 0:
        p = p.with_name(f"{p.stem}_face{face_index}{p.suffix}")
    return str(p)


def _check_name_clashes(paths: list[str], multi: bool) -> None:
    names = set(paths)
    for p in paths:
        q = crop_name(p, 0, multi)
        if q != p and q in names:
            raise FerError(f"source images {p!r} and {q!r} would both be written to {q!r}; rename one of them")
    if multi:
        for p in paths:
            pp = PurePosixPath(p)
            m = re.fullmatch(r"(.*)_face\d+", pp.stem)
            if m and str(pp.with_name(m.group(1) + pp.suffix)) in names:
                raise FerError(
                    f"source image {p!r} has the name --faces all gives to extra faces of "
                    f"{str(pp.with_name(m.group(1) + pp.suffix))!r}; rename it or use --faces largest"
                )


# ---- journal --------------------------------------------------------------------------------
def _settings(cfg: AlignConfig, weights_sha: str | None, source_root: Path) -> dict[str, Any]:
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


def _settings_diff(old: dict[str, Any], new: dict[str, Any]) -> str:
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fresh:
            from fercli.fileio import atomic_write_text

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



# ---- loading (runs in DataLoader workers) ---------------------------------------------------
@dataclass
class _Item:
    index: int  # position in the list of pending work
    src: str
    stat: tuple[int, int] | None = None
    problem: tuple[str, str] | None = None  # (status, reason)
    image: torch.Tensor | None = None  # working image (uint8), shared memory across processes
    scale: float = 1.0  # working image pixels per original pixel
    notes: list[str] = field(default_factory=list)
    det_input: torch.Tensor | None = None
    det_scale: float = 1.0
    crop: torch.Tensor | None = None  # landmarks/none modes: the finished crop
    used: dict[str, float] = field(default_factory=dict)  # landmarks mode: box/lm columns used


class _AlignDataset(torch.utils.data.Dataset):
    def __init__(self, srcs: list[str], root: Path, cfg: AlignConfig, spec: det.DetectorSpec | None,
                 landmarks: np.ndarray | None, boxes: np.ndarray | None) -> None:
        self.srcs, self.root, self.cfg, self.spec = srcs, root, cfg, spec
        self.landmarks, self.boxes = landmarks, boxes

    def __len__(self) -> int:
        return len(self.srcs)

    def __getitem__(self, i: int) -> _Item:
        item = _Item(i, self.srcs[i])
        path = self.root / self.srcs[i]
        try:
            st = os.stat(path)
            item.stat = (st.st_size, st.st_mtime_ns)
            loaded = load_image(path)
        except OSError as exc:  # one vocabulary with fer predict (fercli.imagestatus)
            from fercli.imagestatus import os_problem

            item.problem = os_problem(exc, path)
            return item
        except ImageProblem as p:
            item.problem = (p.status, p.reason)
            return item
        except Exception as exc:  # one bad file never stops the run
            item.problem = ("error", f"{type(exc).__name__}: {exc}")
            return item
        item.notes = loaded.notes
        item.scale = loaded.scale
        try:
            mode = self.cfg.detector
            if mode == "none":
                item.crop = torch.from_numpy(resize_face(loaded.image, self.cfg.size))
            elif mode == "landmarks":
                self._crop_from_manifest(item, loaded)
            elif mode == det.HAAR:  # detected in the main process, on the working image
                item.image = torch.from_numpy(loaded.image)
            else:
                item.image = torch.from_numpy(loaded.image)
                item.det_input, item.det_scale = det.RetinaFaceDetector.prepare_image(loaded.image, self.spec, self.cfg.detect_size)
        except Exception as exc:
            item.problem = ("error", f"{type(exc).__name__}: {exc}")
            item.image = item.crop = item.det_input = None
        return item

    def _crop_from_manifest(self, item: _Item, loaded: LoadedImage) -> None:
        i = item.index
        lm = self.landmarks[i] if self.landmarks is not None else None
        box = self.boxes[i] if self.boxes is not None else None
        if lm is not None and np.isfinite(lm).all():
            item.crop = torch.from_numpy(align_face(loaded.image, lm.reshape(5, 2) * loaded.scale, self.cfg.size, self.cfg.margin))
            item.used = dict(zip(LANDMARK_COLUMNS, lm.tolist()))
            if box is not None and np.isfinite(box).all():
                item.used.update(zip(BOX_COLUMNS, box.tolist()))
        elif box is not None and np.isfinite(box).all() and box[2] > 0 and box[3] > 0:
            item.crop = torch.from_numpy(box_crop(loaded.image, box * loaded.scale, self.cfg.size, self.cfg.margin))
            item.used = dict(zip(BOX_COLUMNS, box.tolist()))
            item.notes = item.notes + ["no landmarks: cropped the face box"]
        else:
            item.problem = ("no_landmarks", "the source row has no five landmarks and no face box")


def _collate(items: list[_Item]) -> list[_Item]:
    return items


def _worker_init(_: int) -> None:
    # Never touch cv2's thread pool here: reconfiguring a pool inherited through fork deadlocks.
    # The parent sets cv2 to one thread before the workers fork (see _Runner.run).
    torch.set_num_threads(1)


# ---- the run --------------------------------------------------------------------------------
@dataclass
class AlignResult:
    manifest_path: Path | None
    counts: dict[str, int]  # rows per status
    images: int  # source images in the manifest
    faces: int  # rows with a crop
    processed: int  # images processed by this run (the rest were done before)
    skipped: int  # images a previous run had finished
    seconds: float
    complete: bool
    dst: Path
    source: Source
    notes: list[str] = field(default_factory=list)
    detector: str | None = None  # the detector used (--detector auto resolved)
    detector_note: str | None = None  # why --detector auto chose it

    @property
    def images_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        return {
            "manifest": str(self.manifest_path) if self.manifest_path else None,
            "dst": str(self.dst),
            "source": str(self.source.path),
            "source_kind": self.source.kind,
            "images": self.images,
            "faces": self.faces,
            "statuses": self.counts,
            "processed": self.processed,
            "skipped_done_before": self.skipped,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 2),
            "complete": self.complete,
            "notes": self.notes,
            "detector": self.detector,
            "detector_note": self.detector_note,
        }


def select_faces(faces: list[det.Face], scale: float, mode: str, min_face_size: float = 0.0) -> list[int]:
    """Indices of the faces to keep, in output order (``--faces`` and ``--min-face-size``).

    ``faces`` are a detector's output (best first) in the coordinates of an image that is ``scale``
    times the original photo; ``min_face_size`` is the shorter side of the box in original pixels.
    ``largest`` keeps the biggest box (ties: higher score), ``best`` the highest score, ``all`` every
    face, best first. Shared with ``fer predict`` so both choose the same faces.
    """
    if mode not in FACE_CHOICES:
        raise FerError(f"--faces must be one of {', '.join(FACE_CHOICES)}, got {mode!r}")
    keep = [i for i, f in enumerate(faces) if min(f.width, f.height) / scale >= min_face_size]
    if not keep:
        return []
    if mode == "best":
        return keep[:1]
    if mode == "largest":
        return [max(keep, key=lambda i: (faces[i].area, faces[i].score or 0.0))]  # haar: no score
    return keep


def _align_and_write(image: np.ndarray, landmarks: np.ndarray | None, size: int, margin: float, dest: Path,
                     box: np.ndarray | None = None) -> None:
    if landmarks is None:  # a box-only detector (haar): a square crop around the box, as fer predict does
        x1, y1, x2, y2 = box
        write_image(dest, box_crop(image, np.array([x1, y1, x2 - x1, y2 - y1]), size, margin))
    else:
        write_image(dest, align_face(image, landmarks, size, margin))


def _face_row(path: str, face_index: int, score: float | None, box: np.ndarray | None, lms: np.ndarray | None,
              status: str, reason: str | None) -> dict[str, Any]:
    row: dict[str, Any] = {"path": path, "face_index": face_index, "score": score, "status": status, "reason": reason}
    if box is not None:
        x1, y1, x2, y2 = (float(v) for v in box)
        row.update(box_x=x1, box_y=y1, box_w=x2 - x1, box_h=y2 - y1)
    if lms is not None:
        row.update(zip(LANDMARK_COLUMNS, (float(v) for v in np.asarray(lms).reshape(-1))))
    return row


class _Runner:
    def __init__(self, cfg: AlignConfig, source: Source, dst: Path, workspace: Workspace | None,
                 track: Track, command: str | None) -> None:
        self.cfg, self.source, self.dst, self.ws, self.track, self.command = cfg, source, dst, workspace, track, command
        self.multi = cfg.faces == "all"
        self.detector: det.RetinaFaceDetector | det.HaarDetector | None = None
        self.entries: dict[str, dict[str, Any]] = {}
        self.journal = Journal(dst / JOURNAL_NAME)
        self.weights_ref: dict[str, str] | None = None
        self.last_checkpoint = time.monotonic()

    # -- setup --------------------------------------------------------------------------------
    def setup(self) -> list[int]:
        cfg, src = self.cfg, self.source
        if self.dst.resolve() == src.root.resolve():
            raise FerError(f"DST {self.dst} is the source image folder; crops would overwrite the originals: choose another DST")
        if self.dst.exists() and not self.dst.is_dir():
            raise FerError(f"DST {self.dst} is a file; pass a folder")
        paths = list(src.df[COL_PATH])
        _check_name_clashes(paths, self.multi)
        weights_sha = None
        if cfg.detector.startswith("retinaface"):
            device = det.resolve_device(cfg.device)
            self.detector = det.load_detector(cfg.detector, cfg.detector_weights, device, cfg.detect_size)
            wpath = self.detector.weights
            weights_sha = self.ws.sha256(wpath) if self.ws is not None else _sha256(wpath)
            self.weights_ref = {"path": str(wpath), "sha256": weights_sha}
        elif cfg.detector == det.HAAR:
            self.detector = det.load_detector(det.HAAR, cfg.detector_weights)
        elif cfg.detector == "landmarks":
            cols = set(src.df.columns)
            if not (set(LANDMARK_COLUMNS) <= cols or set(BOX_COLUMNS) <= cols):
                raise FerError(
                    f"{src.path}: --detector landmarks needs five landmarks (lm0_x..lm4_y) or a face box (box_x..box_h) "
                    "per image and this source has neither; use --detector retinaface-mobilenet or retinaface-resnet50"
                )
        settings = _settings(cfg, weights_sha, src.root)
        header, entries = self.journal.read()
        fresh = True
        if header is not None:
            if cfg.overwrite:
                self._remove_old_crops(entries)
            elif header.get("settings") != settings:
                raise FerError(
                    f"{self.dst}: holds crops made with other settings ({_settings_diff(header.get('settings') or {}, settings)}); "
                    "pass --overwrite to redo them, or choose another DST"
                )
            else:
                fresh = False
                self.entries = entries
        elif (self.dst / MANIFEST_NAME).exists() and not cfg.overwrite:
            try:
                meta = read_parquet_meta(self.dst / MANIFEST_NAME)
            except FerError:
                meta = {}
            if "align" not in meta:
                raise FerError(f"{self.dst / MANIFEST_NAME}: exists and was not made by fer align; choose another DST or pass --overwrite")
        self.header = {"fer_align_journal": JOURNAL_VERSION, "settings": settings}
        self.fresh = fresh
        return self._pending(paths)

    def _remove_old_crops(self, entries: dict[str, dict[str, Any]]) -> None:
        for e in entries.values():
            for r in e.get("rows", []):
                if r.get("status") == "ok":
                    p = self.dst / r["path"]
                    if _inside(p, self.dst):
                        p.unlink(missing_ok=True)
        (self.dst / MANIFEST_NAME).unlink(missing_ok=True)

    def _pending(self, paths: list[str]) -> list[int]:
        """Indices of source rows to process; drops journal entries that no longer hold."""
        pending = []
        for i, p in enumerate(paths):
            e = self.entries.get(p)
            if e is not None and self._still_done(p, e):
                continue
            self.entries.pop(p, None)
            pending.append(i)
        return pending

    def _still_done(self, src: str, e: dict[str, Any]) -> bool:
        rows = e.get("rows") or []
        if not rows or any(r.get("status") in RETRY_STATUSES for r in rows):
            return False
        try:
            st = os.stat(self.source.root / src)
            if e.get("stat") != [st.st_size, st.st_mtime_ns]:
                return False  # the source changed since
        except OSError:
            return False
        return all((self.dst / r["path"]).is_file() for r in rows if r.get("status") == "ok")

    # -- processing ---------------------------------------------------------------------------
    # Rows are decided in the main thread; the crops themselves (warp + encode + atomic write) are
    # jobs for a writer thread pool, overlapping the next batch's detection. An image is journaled
    # only after all its crops are on disk.
    def _faces_for(self, item: _Item, faces: list[det.Face]) -> tuple[list[dict[str, Any]], list[Callable[[], None]]]:
        cfg = self.cfg
        notes = list(item.notes)
        base = crop_name(item.src, 0, self.multi)
        if not faces:
            why = "no face found by haar" if cfg.detector == det.HAAR else f"no face with score > {cfg.min_score:g}"
            return [_face_row(base, NO_FACE_INDEX, None, None, None, "no_face", "; ".join(notes + [why]))], []
        orig = [f.scaled(1.0 / item.scale) for f in faces]  # in the original photo's pixels
        keep = select_faces(faces, item.scale, cfg.faces, cfg.min_face_size)
        if not keep:
            return [_face_row(base, NO_FACE_INDEX, None, None, None, "no_face", "; ".join(notes + [
                f"{len(faces)} face(s) found, all smaller than --min-face-size {cfg.min_face_size:g} px"]))], []
        image = item.image.numpy()
        rows, jobs = [], []
        for k, i in enumerate(keep):
            name = crop_name(item.src, k, self.multi)
            jobs.append(partial(_align_and_write, image, faces[i].landmarks, cfg.size, cfg.margin, self.dst / name,
                                faces[i].box))
            rows.append(_face_row(name, k, orig[i].score, orig[i].box, orig[i].landmarks, "ok", "; ".join(notes) or None))
        return rows, jobs

    def _rows_for(self, item: _Item, faces: list[det.Face] | None) -> tuple[list[dict[str, Any]], list[Callable[[], None]]]:
        base = crop_name(item.src, 0, self.multi)
        if item.problem is not None:
            status, reason = item.problem
            return [_face_row(base, NO_FACE_INDEX, None, None, None, status, "; ".join(item.notes + [reason]))], []
        try:
            if item.crop is not None:
                row = _face_row(base, 0, None, None, None, "ok", "; ".join(item.notes) or None)
                row.update(item.used)
                return [row], [partial(write_image, self.dst / base, item.crop.numpy())]
            return self._faces_for(item, faces or [])
        except Exception as exc:
            return [_face_row(base, NO_FACE_INDEX, None, None, None, "error", f"{type(exc).__name__}: {exc}")], []

    def _commit(self, pending: list[tuple[dict[str, Any], list[Future]]]) -> None:
        """Wait for a batch's crops, then journal its images (an image whose crop failed becomes ``error``)."""
        entries = []
        for entry, futures in pending:
            for fut in futures:
                exc = fut.exception()
                if isinstance(exc, FerError):
                    raise exc  # DST problems (disk full, unwritable) stop the run
                if exc is not None:
                    base = crop_name(entry["src"], 0, self.multi)
                    entry["rows"] = [_face_row(base, NO_FACE_INDEX, None, None, None, "error", f"{type(exc).__name__}: {exc}")]
                    break
            entries.append(entry)
        self.journal.append(entries)
        for entry in entries:
            self.entries[entry["src"]] = entry

    def _detect(self, items: list[_Item]) -> dict[int, list[det.Face]]:
        if isinstance(self.detector, det.HaarDetector):
            todo = [it for it in items if it.problem is None and it.image is not None]
            found = self.detector.detect_faces([it.image.numpy() for it in todo]) if todo else []
            return {it.index: f for it, f in zip(todo, found)}
        todo = [it for it in items if it.problem is None and it.det_input is not None]
        if not todo or self.detector is None:
            return {}
        try:
            found = self.detector.detect_prepared(
                [it.det_input for it in todo], [it.det_scale for it in todo],
                [tuple(it.image.shape[:2]) for it in todo], self.cfg.min_score,
            )
        except torch.OutOfMemoryError:
            raise FerError(f"out of memory while detecting a batch of {len(todo)} images; lower --batch-size or --detect-size") from None
        return {it.index: f for it, f in zip(todo, found)}

    def run(self, pending: list[int]) -> int:
        cfg, src = self.cfg, self.source
        srcs = [src.df[COL_PATH].iloc[i] for i in pending]
        landmarks = boxes = None
        if cfg.detector == "landmarks":
            cols = src.df.columns
            if set(LANDMARK_COLUMNS) <= set(cols):
                landmarks = src.df[list(LANDMARK_COLUMNS)].to_numpy(dtype=np.float64)[pending]
            if set(BOX_COLUMNS) <= set(cols):
                boxes = src.df[list(BOX_COLUMNS)].to_numpy(dtype=np.float64)[pending]
        dataset = _AlignDataset(srcs, src.root, cfg, getattr(self.detector, "spec", None), landmarks, boxes)
        ncpu = os.cpu_count() or 1
        on_cpu = self.detector is not None and getattr(getattr(self.detector, "device", None), "type", "cpu") == "cpu"
        # On CPU, big batches of a small network are memory-bound: 4 is as fast per image as it gets.
        batch_size = cfg.batch_size or (4 if on_cpu else 16)
        workers = cfg.workers
        if workers is None:
            if len(srcs) < 4 * batch_size:
                workers = 0  # starting worker processes costs more than it saves
            elif on_cpu:
                # The detector wants every core: its OpenMP threads crawl when anything else competes
                # for them (measured on 2 cores: 0 workers 47 images/s, 1 worker 32). Decoding is about
                # a fifth of the work, so it gets worker processes only where cores are plentiful.
                workers = 0 if ncpu < 4 else min(4, ncpu // 4)
            else:
                workers = min(4, ncpu)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=_collate,
            worker_init_fn=_worker_init if workers else None, prefetch_factor=2 if workers else None,
        )
        self.journal.start(self.header, self.fresh)
        processed = 0
        cv2_threads, torch_threads = cv2.getNumThreads(), torch.get_num_threads()
        if workers:
            cv2.setNumThreads(1)  # forked workers must not inherit a live cv2 thread pool
            if on_cpu:
                # Leave the workers their cores: oversubscribed OpenMP threads spin and crawl.
                torch.set_num_threads(max(1, min(torch_threads, ncpu - workers)))
        inflight: list[list[tuple[dict[str, Any], list[Future]]]] = []
        writers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fer-align-write")
        try:
            for batch in self.track(loader, description=f"aligning {len(srcs):,} images", total=len(loader)):
                found = self._detect(batch)
                pending = []
                for item in batch:
                    rows, jobs = self._rows_for(item, found.get(item.index))
                    entry = {"src": item.src, "stat": list(item.stat) if item.stat else None, "rows": rows}
                    pending.append((entry, [writers.submit(job) for job in jobs]))
                inflight.append(pending)
                while len(inflight) > 1:  # keep one batch of crops in flight
                    self._commit(inflight.pop(0))
                processed += len(batch)
                if time.monotonic() - self.last_checkpoint > cfg.checkpoint_seconds:
                    self.write_manifest(complete=False)
                    self.last_checkpoint = time.monotonic()
            while inflight:
                self._commit(inflight.pop(0))
        except KeyboardInterrupt:
            # Keep what is finished: crops in flight complete and are journaled, then the manifest.
            try:
                while inflight:
                    self._commit(inflight.pop(0))
            finally:
                self.journal.close()
                self.write_manifest(complete=False)
            raise
        finally:
            writers.shutdown(wait=True, cancel_futures=True)
            self.journal.close()
            if workers:
                cv2.setNumThreads(cv2_threads)
                torch.set_num_threads(torch_threads)
        return processed

    # -- the manifest -------------------------------------------------------------------------
    def build_table(self) -> tuple[pd.DataFrame, dict[str, int]]:
        src = self.source
        carried = [c for c in src.df.columns
                   if c != COL_PATH and c not in BOX_COLUMNS and c not in LANDMARK_COLUMNS and c not in ALIGN_COLUMNS]
        rows, index = [], []
        for i, p in enumerate(src.df[COL_PATH]):
            e = self.entries.get(p)
            if e is None:
                continue
            for r in e["rows"]:
                rows.append(r)
                index.append(i)
        if not rows:
            return pd.DataFrame(), {}
        faces = pd.DataFrame(rows)
        base = src.df[carried].iloc[index].reset_index(drop=True)
        out = pd.DataFrame({COL_PATH: faces[COL_PATH]})
        for c in carried:
            out[c] = base[c]
        out["src_path"] = src.df[COL_PATH].iloc[index].to_numpy()
        out["face_index"] = faces["face_index"].astype(np.int16)
        for c in ("score", *BOX_COLUMNS, *LANDMARK_COLUMNS):
            out[c] = pd.to_numeric(faces[c], errors="coerce").astype(np.float32) if c in faces else np.float32(np.nan)
        out["status"] = faces["status"].astype(object)
        out["reason"] = faces["reason"].astype(object) if "reason" in faces else None
        if self.cfg.detector == "none":
            out = out.drop(columns=[*BOX_COLUMNS, *LANDMARK_COLUMNS, "score"])
        elif not out[list(BOX_COLUMNS)].notna().any().any():
            out = out.drop(columns=list(BOX_COLUMNS))
        counts = {s: int(n) for s, n in out["status"].value_counts().items()}
        counts = {s: counts[s] for s in STATUSES if s in counts} | {s: n for s, n in counts.items() if s not in STATUSES}
        first = [COL_PATH, COL_SPLIT, COL_LABEL, COL_LABEL_NAME]
        return out[first + [c for c in out.columns if c not in first]], counts

    def write_manifest(self, complete: bool) -> tuple[Path | None, pd.DataFrame, dict[str, int]]:
        df, counts = self.build_table()
        if df.empty:
            return None, df, counts
        dest = self.dst / MANIFEST_NAME
        images = int(df["src_path"].nunique())
        ok = counts.get("ok", 0)
        summary = {"images": images, "faces": ok, **{s: n for s, n in counts.items() if s != "ok"}}
        if not complete:
            summary["pending"] = len(self.source.df) - images
        inputs: dict[str, dict[str, str]] = {
            "source": {"path": str(self.source.path), "sha256": self.source.fingerprint(self.ws)},
        }
        if self.weights_ref:
            inputs["detector_weights"] = self.weights_ref
        prov = make_provenance("dataset", inputs=inputs, summary=summary, command=self.command)
        meta = {
            "dataset": self.source.dataset,
            "align": {
                "source": str(Path(self.source.path).resolve()),
                "source_kind": self.source.kind,
                "source_root": str(self.source.root.resolve()),
                "settings": self.header["settings"] if hasattr(self, "header") else None,
                "config": {f.name: (str(v) if isinstance(v, Path) else v)
                           for f in dataclasses.fields(self.cfg) for v in [getattr(self.cfg, f.name)]},
                "complete": complete,
                "images": images,
                "counts": counts,
            },
        }
        write_manifest(df, self.source.classes, self.dst, dest, provenance=prov, extra_meta=meta)
        return dest, df, counts


# A class that keeps less than this share of its images is reported: a detector that misses one
# expression (Haar on disgust, say) otherwise removes a class from the dataset without a word.
CLASS_LOSS_WARN = 0.5


def class_losses(df: pd.DataFrame, classes: tuple[str, ...], detector: str) -> list[str]:
    """One warning per labelled class that kept less than ``CLASS_LOSS_WARN`` of its source images."""
    if df.empty or COL_LABEL not in df or "status" not in df:
        return []
    per_image = df[df[COL_LABEL] >= 0].groupby("src_path").agg(label=(COL_LABEL, "first"),
                                                              ok=("status", lambda s: bool((s == "ok").any())))
    out = []
    for label, g in per_image.groupby("label"):
        kept, total = int(g["ok"].sum()), len(g)
        if kept < CLASS_LOSS_WARN * total:
            name = classes[int(label)] if 0 <= int(label) < len(classes) else str(label)
            out.append(f"warning: class {name!r} kept a face in {kept:,} of {total:,} images"
                       f"{' (the class is gone from the dataset)' if kept == 0 else ''}; detector {detector!r} "
                       "misses these faces: try --detector retinaface, or --detector none for pre-cropped faces")
    return out


def run_align(
    cfg: AlignConfig,
    src: str | os.PathLike[str] | Source | None = None,
    dst: str | os.PathLike[str] | None = None,
    ws: Workspace | None = None,
    track: Track = no_track,
    command: str | None = None,
) -> AlignResult:
    """Align every image of ``src`` into ``dst`` (see the module docstring).

    ``src`` None means the workspace's current dataset; ``dst`` None means ``WORKSPACE/aligned``.
    On success with at least one crop, DST's manifest becomes the workspace's current dataset.
    Ctrl-C writes the manifest of what is done (marked incomplete) and re-raises.
    """
    cfg.check()
    if dst is None:
        if ws is None:
            raise FerError("no DST given and no workspace to put aligned/ in")
        dst = ws.root / "aligned"
    dst = Path(dst)
    from fercli.fileio import check_writable_dir

    check_writable_dir(dst, "DST")  # before any work: one line, not a traceback mid-run
    if isinstance(src, Source):
        source = src
    elif ws is not None:
        source = resolve_source(src, dst, ws, cfg.split_fractions, cfg.no_split)
    elif src is None:
        raise FerError("no SRC given and no workspace to take the current dataset from")
    else:
        source = load_source(src, dst, cfg.split_fractions, cfg.no_split)
    detector_note = None
    if cfg.detector == "auto":  # the best detector available offline, as fer predict chooses it
        name, detector_note = det.auto_detector(cfg.detector_weights)
        cfg = dataclasses.replace(cfg, detector=name)
    runner = _Runner(cfg, source, dst, ws, track, command)
    t0 = time.perf_counter()
    pending = runner.setup()
    skipped = len(source.df) - len(pending)
    processed = 0
    if pending:
        processed = runner.run(pending)
    elif runner.fresh:
        runner.journal.start(runner.header, True)
        runner.journal.close()
    manifest_path, df, counts = runner.write_manifest(complete=True)
    seconds = time.perf_counter() - t0
    faces = counts.get("ok", 0)
    if ws is not None and manifest_path is not None and faces > 0:
        ws.record("dataset", manifest_path)
    return AlignResult(
        manifest_path=manifest_path, counts=counts, images=int(df["src_path"].nunique()) if not df.empty else 0,
        faces=faces, processed=processed, skipped=skipped, seconds=seconds, complete=True, dst=dst,
        source=source, notes=source.notes + class_losses(df, source.classes, cfg.detector),
        detector=cfg.detector if cfg.detector not in ("landmarks", "none") else None, detector_note=detector_note,
    )
