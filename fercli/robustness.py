"""`fer eval --robustness`: accuracy under a fixed, seeded set of image corruptions.

The corruptions and their severities are :mod:`fercli.corruptions`'; this module makes the corrupted
images and scores models on them.

**Identical inputs across models.** The corrupted images depend only on the manifest, the split's
rows, the corruption, :data:`SUITE_VERSION` and the seed: each source image is decoded at the
canonical size (:data:`CANONICAL_SIZE`, the decoded cache's own decoder), corrupted with a generator
seeded by ``(seed, corruption name, image index)`` (so neither the model nor the batch size matter),
and stored in the workspace's decoded cache dir (one memory-mapped ``.npy`` per corruption, reused
while its key matches). At scoring time each image is resized to the model's input size exactly as
the eval preprocessing resizes (:func:`fercli.transforms.to_rgb_uint8`). The clean reference goes
through the same canonical round trip, so a drop measures the corruption and nothing else.

Outputs (see :func:`write_outputs`): ``robustness.json`` (every figure, the seed, the corruptions and
their severities, the model's and manifest's sha256, the canonical size) and ``robustness.png`` (a bar
chart of accuracy per corruption against the clean accuracy).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fercli.corruptions import (  # check_options: declared there (light) for fer eval's config
    check_options,
    CORRUPTIONS,
    DEFAULT_SEED,
    EYES_BAND,
    MASK_GRAY,
    MOUTH_BAND,
    SUITE_VERSION,
    SUNGLASSES_GRAY,
    Corruption,
    band_rows,
    corrupt_all,
    image_rng,
    resolve_corruptions,
)
from fercli.data import batches, cache_dir_for, cache_key, load_or_build_cache
from fercli.errors import FerError
from fercli.fileio import atomic_path, atomic_write_json
from fercli.progress import Track, no_track
from fercli.schema import ROBUSTNESS_JSON, ROBUSTNESS_PNG, manifest_ref, model_ref, report_header
from fercli.transforms import decode_image, to_rgb_uint8

log = logging.getLogger(__name__)

CANONICAL_SIZE = 112  # corruptions are made at this size, then resized to each model's input size


# ---- the corrupted images ----------------------------------------------------------------------

def _corruption_key(base: str, c: Corruption, seed: int) -> str:
    h = hashlib.sha256(f"robustness:v{SUITE_VERSION}:{c.name}:{sorted(c.params.items())}:{seed}:{base}".encode())
    return h.hexdigest()[:20]


def _build_corrupted(clean: np.ndarray, c: Corruption, seed: int, dest: Path) -> np.ndarray:
    with atomic_path(dest) as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=clean.shape)
        for lo in range(0, len(clean), 256):  # chunks: the clean memmap is read sequentially
            corrupt_all(np.asarray(clean[lo:lo + 256]), c, seed, arr[lo:lo + 256], start=lo)
        arr.flush()
        del arr
    return np.load(dest, mmap_mode="r")


def corrupted_images(clean: np.ndarray, c: Corruption, seed: int, base_key: str, cache_dir: Path | None) -> np.ndarray:
    """``c`` applied to the canonical ``clean`` images: from the cache when its key matches, else made
    (and stored when ``cache_dir`` is given). ``base_key`` identifies the clean images
    (:func:`fercli.data.cache_key` of the manifest sha256, canonical size and rows)."""
    if cache_dir is None:
        return corrupt_all(np.asarray(clean), c, seed)
    key = _corruption_key(base_key, c, seed)
    dest, info = cache_dir / f"robust-{c.name}-{key}.npy", cache_dir / f"robust-{c.name}-{key}.json"
    if dest.is_file() and info.is_file():
        try:
            arr = np.load(dest, mmap_mode="r")
            if arr.shape == clean.shape:
                log.info("robustness cache: reusing %s", dest)
                return arr
        except (ValueError, OSError):
            pass  # damaged: rebuild below
    log.info("robustness cache: building %s", dest)
    arr = _build_corrupted(clean, c, seed, dest)
    atomic_write_json(info, {"corruption": c.name, **c.to_dict(), "seed": seed, "suite_version": SUITE_VERSION,
                             "base_key": base_key, "rows": len(clean), "size": int(clean.shape[1])})
    return arr


def canonical_images(paths: Sequence[Path], rel_paths: Sequence[str], manifest_sha: str, cache_dir: Path | None,
                     size: int = CANONICAL_SIZE, workers: int = 0, track: Track = no_track) -> np.ndarray:
    """The source images decoded at the canonical ``size`` (the workspace's ordinary decoded cache)."""
    if cache_dir is not None:
        return load_or_build_cache(list(paths), list(rel_paths), size, manifest_sha, cache_dir, workers, track)
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, p in enumerate(track(paths, f"decoding {len(paths):,} images at {size} px", len(paths))):
        out[i] = decode_image(p, size)
    return out


# ---- scoring ------------------------------------------------------------------------------------

ProbsFn = Callable[[torch.Tensor], np.ndarray]  # uint8 (B, 3, S, S) -> probabilities (B, C)


def _to_input(images: np.ndarray, size: int) -> torch.Tensor:
    if images.shape[1] != size:
        images = np.stack([to_rgb_uint8(im, size) for im in images])
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)


def _scores(y: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict[str, Any]:
    from fercli.metrics import compute_metrics

    m = compute_metrics(y, probs, list(classes))
    return {"accuracy": m["accuracy"], "mean_class_accuracy": m["mean_class_accuracy"], "macro_f1": m["macro_f1"],
            "per_class_accuracy": {c: v["recall"] for c, v in m["per_class"].items() if v["support"]}}


def score_suite(probs_fn: ProbsFn, input_size: int, paths: Sequence[Path], rel_paths: Sequence[str], y: np.ndarray,
                classes: Sequence[str], *, manifest_sha: str, cache_dir: Path | None,
                keep_cols: Sequence[int] | None = None, corruptions: Sequence[str] | None = None,
                seed: int = DEFAULT_SEED, canonical: int = CANONICAL_SIZE, batch_size: int = 128, workers: int = 0,
                track: Track = no_track) -> dict[str, Any]:
    """Score a model on the clean images and on every corruption; return the figures.

    ``probs_fn`` maps a uint8 batch ``(B, 3, input_size, input_size)`` to probabilities (the same
    callable as the clean evaluation: preprocessing, temperature, TTA); ``keep_cols`` selects and
    renormalises output columns (``--map``); ``y`` indexes ``classes``. The result holds ``clean``,
    ``corruptions`` (name -> figures and drops) and ``summary`` (mean and worst over corruptions).
    """
    suite = resolve_corruptions(corruptions)
    if batch_size < 1:
        raise FerError(f"--batch-size must be >= 1, got {batch_size}")
    y = np.asarray(y)
    clean = canonical_images(paths, rel_paths, manifest_sha, cache_dir, canonical, workers, track)
    base_key = cache_key(manifest_sha, canonical, list(rel_paths))
    index_batches = batches(list(range(len(y))), batch_size)
    probs: dict[str, np.ndarray] = {}
    # One corruption at a time (made or read from the cache, then scored): with --no-cache only one
    # corrupted copy is ever in memory.
    for c in track([None, *suite], f"robustness: {len(suite)} corruptions", len(suite) + 1):
        name, arr = ("clean", clean) if c is None else (c.name, corrupted_images(clean, c, seed, base_key, cache_dir))
        out: np.ndarray | None = None
        for idx in index_batches:
            p = probs_fn(_to_input(np.asarray(arr[idx[0]:idx[-1] + 1]), input_size))
            if keep_cols is not None:
                p = p[:, list(keep_cols)]
                p = p / p.sum(1, keepdims=True)
            if out is None:
                out = np.empty((len(y), p.shape[1]), dtype=np.float64)
            out[idx] = p
        assert out is not None  # the split has at least one image
        probs[name] = out
        del arr

    clean_scores = _scores(y, probs["clean"], classes)
    per: dict[str, Any] = {}
    for c in suite:
        s = _scores(y, probs[c.name], classes)
        per[c.name] = {**c.to_dict(), **s, "drop": clean_scores["accuracy"] - s["accuracy"],
                       "drop_mean_class_accuracy": clean_scores["mean_class_accuracy"] - s["mean_class_accuracy"]}
    accs = {n: v["accuracy"] for n, v in per.items()}
    mcas = {n: v["mean_class_accuracy"] for n, v in per.items()}
    worst = min(accs, key=accs.__getitem__)
    worst_mca = min(mcas, key=mcas.__getitem__)
    summary = {
        "mean_accuracy": float(np.mean(list(accs.values()))),
        "worst_accuracy": accs[worst], "worst": worst,
        "mean_drop": clean_scores["accuracy"] - float(np.mean(list(accs.values()))),
        "worst_drop": clean_scores["accuracy"] - accs[worst],
        "mean_mean_class_accuracy": float(np.mean(list(mcas.values()))),
        "worst_mean_class_accuracy": mcas[worst_mca], "worst_mean_class": worst_mca,
    }
    return {"suite_version": SUITE_VERSION, "seed": seed, "canonical_size": canonical, "input_size": input_size,
            "images": int(len(y)), "classes": list(classes), "clean": clean_scores, "corruptions": per,
            "summary": summary}


# ---- outputs ------------------------------------------------------------------------------------

def plot_robustness(rep: dict[str, Any], title: str, dest: Path) -> None:
    """Accuracy per corruption as horizontal bars, with the clean accuracy and the mean as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rep["corruptions"])
    accs = [rep["corruptions"][n]["accuracy"] for n in names]
    fig, ax = plt.subplots(figsize=(7.5, 1.2 + 0.32 * len(names)))
    ax.barh(range(len(names)), accs, color="tab:blue")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    clean = rep["clean"]["accuracy"]
    ax.axvline(clean, color="black", linestyle="--", label=f"clean {clean:.3f}")
    ax.axvline(rep["summary"]["mean_accuracy"], color="tab:red", linestyle=":",
               label=f"mean over corruptions {rep['summary']['mean_accuracy']:.3f}")
    for i, a in enumerate(accs):  # inside the bar's end, clear of the lines
        inside = a > 0.12
        ax.text(a - 0.01 if inside else a + 0.01, i, f"{a:.3f}", va="center", ha="right" if inside else "left",
                color="white" if inside else "black", fontsize=8)
    ax.set(xlim=(0, 1.0), xlabel="accuracy",
           title=f"{title}\n{rep['images']:,} images, seed {rep['seed']}, corrupted at {rep['canonical_size']} px")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def write_outputs(rep: dict[str, Any], out_dir: Path, title: str) -> dict[str, Any]:
    """Write ``robustness.json`` and ``robustness.png`` into ``out_dir``; return ``rep`` with their paths."""
    out_dir = Path(out_dir)
    rep = {**rep, "files": {"json": str(out_dir / ROBUSTNESS_JSON), "png": str(out_dir / ROBUSTNESS_PNG)}}
    plot_robustness(rep, title, out_dir / ROBUSTNESS_PNG)
    atomic_write_json(out_dir / ROBUSTNESS_JSON, rep)
    return rep


# ---- without the CLI ----------------------------------------------------------------------------

def run_robustness(model: str | Path, manifest: str | Path, split: str = "test", *, out: str | Path | None = None,
                   ws: Any = None, corruptions: Sequence[str] | None = None, seed: int = DEFAULT_SEED,
                   tta: str | None = None, map: bool = False, device: str = "cpu", threads: int | None = None,
                   batch_size: int = 128, workers: int = 0, cache: bool = True,
                   track: Track = no_track) -> dict[str, Any]:
    """The robustness suite for ``model`` on ``split`` of ``manifest``, without `fer eval`'s clean report.

    Two calls with the same manifest, split and seed score their models on byte-identical corrupted
    images (made once, cached in the workspace's decoded cache dir; ``ws`` is a
    :class:`~fercli.workspace.Workspace` or a directory, default: ``$FER_WORKSPACE`` or the current
    directory; ``cache=False`` keeps them in memory). ``tta`` defaults to the model's own. With
    ``out``, ``robustness.json`` and ``robustness.png`` are written there. Returns the report
    (the layout of ``robustness.json``).
    """
    from fercli.data import normalize
    from fercli.device import resolve_device
    from fercli.inference import Classifier, class_mapping
    from fercli.schema import COL_LABEL, COL_PATH, SPLITS, read_manifest
    from fercli.workspace import Workspace

    if split not in SPLITS:
        raise FerError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    if tta not in (None, "none", "flip"):
        raise FerError(f"--tta must be none or flip, got {tta!r}")
    check_options(True, corruptions, seed)
    ws = ws if isinstance(ws, Workspace) else Workspace.find(ws)
    dev = resolve_device(device)
    clf = Classifier.load(model, dev, threads)
    m = read_manifest(Path(manifest))
    rows = m.labelled([split])
    if rows.empty:
        raise FerError(f"{m.path}: no labelled images in split {split!r}")
    mapping = class_mapping(clf.classes, m.classes, map, str(clf.path), str(m.path))
    classes, keep_cols = list(m.classes), None
    if mapping is not None:
        keep_cols, scored = mapping
        classes = [m.classes[i] for i in scored]
        rows = rows[rows[COL_LABEL].isin(scored)]
        if rows.empty:
            raise FerError(f"{m.path}: no images of the shared classes in split {split!r}")
    y = np.array([classes.index(m.classes[i]) for i in rows[COL_LABEL]])
    tta = tta or getattr(clf, "tta", "none")
    rel = rows[COL_PATH].tolist()
    manifest_sha = ws.sha256(m.path)
    rep = score_suite(lambda x: clf.probs(normalize(x, clf.preprocess, dev), tta_flip=tta == "flip"),
                      clf.preprocess.input_size, [m.root / p for p in rel], rel, y, classes,
                      manifest_sha=manifest_sha, cache_dir=cache_dir_for(ws.root) if cache else None,
                      keep_cols=keep_cols, corruptions=corruptions, seed=seed, batch_size=batch_size,
                      workers=workers, track=track)
    rep = report(rep, model=model_ref(str(clf.path), ws.sha256(clf.path), clf.kind, clf.arch, clf.classes,
                                      clf.preprocess.input_size),
                 manifest=manifest_ref(str(m.path), manifest_sha, split), tta=tta,
                 temperature=getattr(clf, "temperature", 1.0))
    if out is not None:
        rep = write_outputs(rep, Path(out), f"{clf.arch} on {m.meta.get('dataset') or 'dataset'} {split}")
    return rep


def report(figures: dict[str, Any], *, model: dict[str, Any], manifest: dict[str, Any], tta: str,
           **extra: Any) -> dict[str, Any]:
    """The ``robustness.json`` document: header, the model and manifest (with sha256), then the figures."""
    return {**report_header("robustness"), "model": model, "manifest": manifest, "tta": tta, **extra, **figures}


# The suite's names are re-exported: `fercli.robustness` is the documented entry point.
__all__ = [
    "CANONICAL_SIZE", "CORRUPTIONS", "DEFAULT_SEED", "EYES_BAND", "MASK_GRAY", "MOUTH_BAND", "SUITE_VERSION",
    "SUNGLASSES_GRAY", "Corruption",
    "band_rows", "canonical_images", "check_options", "corrupt_all", "corrupted_images", "image_rng", "plot_robustness",
    "report", "resolve_corruptions", "run_robustness", "score_suite", "write_outputs",
]
