"""`fer align`: detect, align and crop every face of a source, resumably, recording every image.

Pipeline: the source (a folder, a dataset root or a manifest: :mod:`fercli.align.sources`) becomes
a table of images. Images are decoded in DataLoader workers (robustly: :mod:`fercli.align.dataset`),
detected in batches on the chosen device (:mod:`fercli.align.detectors`), chosen and cropped onto
the ArcFace template (:mod:`fercli.align.faces`) and written atomically under DST, mirroring the
source's relative paths (:mod:`fercli.align.outputs`). Every finished image is appended to a journal
(``DST/.align-journal.jsonl``, :mod:`fercli.align.journal`), so Ctrl-C or a kill loses nothing
already done and a rerun skips it; ``DST/manifest.parquet`` is rebuilt from the journal at
checkpoints and at the end, atomically. Every source image gets at least one manifest row:
``status`` says what happened (``ok`` rows have a crop) and ``reason`` why.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch

from fercli.align import detectors as det
from fercli.align.config import HAAR, AlignConfig
from fercli.align.dataset import AlignDataset, AlignItem, collate, worker_init
from fercli.align.faces import Face, crop_face, no_face_reason, select_faces
from fercli.align.imageio import write_image
from fercli.align.journal import (
    JOURNAL_NAME,
    JOURNAL_VERSION,
    RETRY_STATUSES,
    Journal,
    journal_settings,
    settings_diff,
)
from fercli.align.outputs import build_table, check_name_clashes, class_losses, crop_name, face_row, problem_row
from fercli.align.sources import Source, load_source, path_inside, resolve_source
from fercli.errors import FerError
from fercli.fileio import check_writable_dir, sha256_file
from fercli.progress import Track, no_track
from fercli.schema import BOX_COLUMNS, COL_PATH, LANDMARK_COLUMNS, MANIFEST_NAME, make_provenance, read_parquet_meta
from fercli.schema import write_manifest as write_manifest_file
from fercli.workspace import Workspace

Rows = list[dict[str, Any]]
Jobs = list[Callable[[], None]]
Batch = list[tuple[dict[str, Any], list[Future]]]  # (journal entry, its crops being written)


@dataclass
class AlignResult:
    """What :func:`run_align` did."""

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


def _write_crop(image: np.ndarray, face: Face, size: int, margin: float, dest: Path) -> None:
    write_image(dest, crop_face(image, face, size, margin))


def _auto_workers(images: int, batch_size: int, on_cpu: bool) -> int:
    """DataLoader worker processes when ``--workers`` is not given."""
    ncpu = os.cpu_count() or 1
    if images < 4 * batch_size:
        return 0  # starting worker processes costs more than it saves
    if on_cpu:
        # The detector wants every core: its OpenMP threads crawl when anything else competes
        # for them (measured on 2 cores: 0 workers 47 images/s, 1 worker 32). Decoding is about
        # a fifth of the work, so it gets worker processes only where cores are plentiful.
        return 0 if ncpu < 4 else min(4, ncpu // 4)
    return min(4, ncpu)


@contextmanager
def _thread_budget(workers: int, on_cpu: bool) -> Iterator[None]:
    """While DataLoader workers run: one cv2 thread here, and on CPU fewer torch threads."""
    if not workers:
        yield
        return
    cv2_threads, torch_threads = cv2.getNumThreads(), torch.get_num_threads()
    cv2.setNumThreads(1)  # forked workers must not inherit a live cv2 thread pool
    if on_cpu:
        # Leave the workers their cores: oversubscribed OpenMP threads spin and crawl.
        torch.set_num_threads(max(1, min(torch_threads, (os.cpu_count() or 1) - workers)))
    try:
        yield
    finally:
        cv2.setNumThreads(cv2_threads)
        torch.set_num_threads(torch_threads)


class _Runner:
    """One `fer align` run into ``dst``: setup (detector, journal, what is pending), processing, manifest."""

    def __init__(self, cfg: AlignConfig, source: Source, dst: Path, workspace: Workspace | None,
                 track: Track, command: str | None) -> None:
        self.cfg, self.source, self.dst, self.ws, self.track, self.command = cfg, source, dst, workspace, track, command
        self.multi = cfg.faces == "all"
        self.detector: det.RetinaFaceDetector | det.HaarDetector | None = None
        self.entries: dict[str, dict[str, Any]] = {}
        self.journal = Journal(dst / JOURNAL_NAME)
        self.header: dict[str, Any] | None = None
        self.fresh = True
        self.weights_ref: dict[str, str] | None = None
        self.last_checkpoint = time.monotonic()

    # -- setup --------------------------------------------------------------------------------
    def setup(self) -> list[int]:
        """Check DST, load the detector, read the journal; the indices of the source rows to process."""
        src = self.source
        if self.dst.resolve() == src.root.resolve():
            raise FerError(f"DST {self.dst} is the source image folder; crops would overwrite the originals: choose another DST")
        if self.dst.exists() and not self.dst.is_dir():
            raise FerError(f"DST {self.dst} is a file; pass a folder")
        paths = list(src.df[COL_PATH])
        check_name_clashes(paths, self.multi)
        settings = journal_settings(self.cfg, self._load_detector(), src.root)
        self.fresh = self._resume(settings)
        self.header = {"fer_align_journal": JOURNAL_VERSION, "settings": settings}
        return self._pending(paths)

    def _load_detector(self) -> str | None:
        """Load the configured detector; the sha256 of its weights (None without weights)."""
        cfg, src = self.cfg, self.source
        if cfg.detector.startswith("retinaface"):
            device = det.resolve_device(cfg.device)
            self.detector = det.load_detector(cfg.detector, cfg.detector_weights, device, cfg.detect_size)
            wpath = self.detector.weights
            weights_sha = self.ws.sha256(wpath) if self.ws is not None else sha256_file(wpath)
            self.weights_ref = {"path": str(wpath), "sha256": weights_sha}
            return weights_sha
        if cfg.detector == HAAR:
            self.detector = det.load_detector(HAAR, cfg.detector_weights)
        elif cfg.detector == "landmarks":
            cols = set(src.df.columns)
            if not (set(LANDMARK_COLUMNS) <= cols or set(BOX_COLUMNS) <= cols):
                raise FerError(
                    f"{src.path}: --detector landmarks needs five landmarks (lm0_x..lm4_y) or a face box (box_x..box_h) "
                    "per image and this source has neither; use --detector retinaface-mobilenet or retinaface-resnet50"
                )
        return None

    def _resume(self, settings: dict[str, Any]) -> bool:
        """Whether the journal starts afresh; takes over a previous run's entries when it does not."""
        header, entries = self.journal.read()
        if header is not None:
            if self.cfg.overwrite:
                self._remove_old_crops(entries)
                return True
            if header.get("settings") != settings:
                raise FerError(
                    f"{self.dst}: holds crops made with other settings ({settings_diff(header.get('settings') or {}, settings)}); "
                    "pass --overwrite to redo them, or choose another DST"
                )
            self.entries = entries
            return False
        if (self.dst / MANIFEST_NAME).exists() and not self.cfg.overwrite:
            try:
                meta = read_parquet_meta(self.dst / MANIFEST_NAME)
            except FerError:
                meta = {}
            if "align" not in meta:
                raise FerError(f"{self.dst / MANIFEST_NAME}: exists and was not made by fer align; choose another DST or pass --overwrite")
        return True

    def _remove_old_crops(self, entries: dict[str, dict[str, Any]]) -> None:
        for e in entries.values():
            for r in e.get("rows", []):
                if r.get("status") == "ok":
                    p = self.dst / r["path"]
                    if path_inside(p, self.dst):
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
    def _faces_for(self, item: AlignItem, faces: list[Face]) -> tuple[Rows, Jobs]:
        cfg = self.cfg
        notes = list(item.notes)
        keep = select_faces(faces, item.scale, cfg.faces, cfg.min_face_size) if faces else []
        if not keep:
            why = no_face_reason(cfg.detector, cfg.min_score, len(faces), cfg.min_face_size)
            return [problem_row(crop_name(item.src, 0, self.multi), "no_face", "; ".join(notes + [why]))], []
        image = item.image.numpy()
        rows, jobs = [], []
        for k, i in enumerate(keep):
            name = crop_name(item.src, k, self.multi)
            orig = faces[i].scaled(1.0 / item.scale)  # in the original photo's pixels
            jobs.append(partial(_write_crop, image, faces[i], cfg.size, cfg.margin, self.dst / name))
            rows.append(face_row(name, k, orig.score, orig.box, orig.landmarks, "ok", "; ".join(notes) or None))
        return rows, jobs

    def _rows_for(self, item: AlignItem, faces: list[Face] | None) -> tuple[Rows, Jobs]:
        base = crop_name(item.src, 0, self.multi)
        if item.problem is not None:
            status, reason = item.problem
            return [problem_row(base, status, "; ".join(item.notes + [reason]))], []
        try:
            if item.crop is not None:
                row = face_row(base, 0, None, None, None, "ok", "; ".join(item.notes) or None)
                row.update(item.used)
                return [row], [partial(write_image, self.dst / base, item.crop.numpy())]
            return self._faces_for(item, faces or [])
        except Exception as exc:
            return [problem_row(base, "error", f"{type(exc).__name__}: {exc}")], []

    def _submit(self, batch: list[AlignItem], writers: ThreadPoolExecutor) -> Batch:
        """Detect a batch, decide its rows and hand its crops to the writers."""
        found = self._detect(batch)
        pending = []
        for item in batch:
            rows, jobs = self._rows_for(item, found.get(item.index))
            entry = {"src": item.src, "stat": list(item.stat) if item.stat else None, "rows": rows}
            pending.append((entry, [writers.submit(job) for job in jobs]))
        return pending

    def _commit(self, pending: Batch) -> None:
        """Wait for a batch's crops, then journal its images (an image whose crop failed becomes ``error``)."""
        entries = []
        for entry, futures in pending:
            for fut in futures:
                exc = fut.exception()
                if isinstance(exc, FerError):
                    raise exc  # DST problems (disk full, unwritable) stop the run
                if exc is not None:
                    base = crop_name(entry["src"], 0, self.multi)
                    entry["rows"] = [problem_row(base, "error", f"{type(exc).__name__}: {exc}")]
                    break
            entries.append(entry)
        self.journal.append(entries)
        for entry in entries:
            self.entries[entry["src"]] = entry

    def _detect(self, items: list[AlignItem]) -> dict[int, list[Face]]:
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

    def _loader(self, pending: list[int]) -> tuple[torch.utils.data.DataLoader, int, bool]:
        """(DataLoader over the ``pending`` source rows, its worker processes, whether detection runs on CPU)."""
        cfg, src = self.cfg, self.source
        srcs = [src.df[COL_PATH].iloc[i] for i in pending]
        landmarks = boxes = None
        if cfg.detector == "landmarks":
            cols = src.df.columns
            if set(LANDMARK_COLUMNS) <= set(cols):
                landmarks = src.df[list(LANDMARK_COLUMNS)].to_numpy(dtype=np.float64)[pending]
            if set(BOX_COLUMNS) <= set(cols):
                boxes = src.df[list(BOX_COLUMNS)].to_numpy(dtype=np.float64)[pending]
        dataset = AlignDataset(srcs, src.root, cfg, getattr(self.detector, "spec", None), landmarks, boxes)
        on_cpu = self.detector is not None and getattr(getattr(self.detector, "device", None), "type", "cpu") == "cpu"
        # On CPU, big batches of a small network are memory-bound: 4 is as fast per image as it gets.
        batch_size = cfg.batch_size or (4 if on_cpu else 16)
        workers = cfg.workers if cfg.workers is not None else _auto_workers(len(srcs), batch_size, on_cpu)
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate,
            worker_init_fn=worker_init if workers else None, prefetch_factor=2 if workers else None,
        )
        return loader, workers, on_cpu

    def run(self, pending: list[int]) -> int:
        """Process the source rows ``pending``; the number of images processed."""
        loader, workers, on_cpu = self._loader(pending)
        self.journal.start(self.header, self.fresh)
        with _thread_budget(workers, on_cpu):
            return self._process(loader, len(pending))

    def _process(self, loader: torch.utils.data.DataLoader, images: int) -> int:
        processed = 0
        inflight: list[Batch] = []
        writers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fer-align-write")
        try:
            for batch in self.track(loader, description=f"aligning {images:,} images", total=len(loader)):
                inflight.append(self._submit(batch, writers))
                while len(inflight) > 1:  # keep one batch of crops in flight
                    self._commit(inflight.pop(0))
                processed += len(batch)
                if time.monotonic() - self.last_checkpoint > self.cfg.checkpoint_seconds:
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
                # The interrupt can land inside _commit after a batch is journaled but before it is
                # recorded in memory: the journal is the truth, so the manifest is built from it.
                self.entries.update(self.journal.read()[1])
                self.write_manifest(complete=False)
            raise
        finally:
            writers.shutdown(wait=True, cancel_futures=True)
            self.journal.close()
        return processed

    # -- the manifest -------------------------------------------------------------------------
    def write_manifest(self, complete: bool) -> tuple[Path | None, pd.DataFrame, dict[str, int]]:
        """Write DST's manifest from the journaled entries: (its path, the table, rows per status)."""
        df, counts = build_table(self.source.df, self.entries, self.cfg.detector)
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
                "settings": self.header["settings"] if self.header is not None else None,
                "config": {f.name: (str(v) if isinstance(v, Path) else v)
                           for f in dataclasses.fields(self.cfg) for v in [getattr(self.cfg, f.name)]},
                "complete": complete,
                "images": images,
                "counts": counts,
            },
        }
        write_manifest_file(df, self.source.classes, self.dst, dest, provenance=prov, extra_meta=meta)
        return dest, df, counts


def _source_for(cfg: AlignConfig, src: str | os.PathLike[str] | Source | None, dst: Path,
                ws: Workspace | None) -> Source:
    if isinstance(src, Source):
        return src
    if ws is not None:
        return resolve_source(src, dst, ws, cfg.split_fractions, cfg.no_split)
    if src is None:
        raise FerError("no SRC given and no workspace to take the current dataset from")
    return load_source(src, dst, cfg.split_fractions, cfg.no_split)


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
    check_writable_dir(dst, "DST")  # before any work: one line, not a traceback mid-run
    source = _source_for(cfg, src, dst, ws)
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
