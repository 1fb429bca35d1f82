"""`fer eval --robustness`: accuracy under a fixed, seeded set of image corruptions.

Every corruption is a plain function ``(uint8 HxWx3 RGB image, numpy Generator) -> image`` of the
same shape and dtype, registered by name in :data:`CORRUPTIONS` with its severity. The suite (all
sizes relative to the image unless said otherwise; at the canonical 112 px):

==================  ===========================================================================
``crop_tight25``    crop box 25% tighter (side x0.75, centred), resized back: the face fills more
``crop_loose25``    crop box 25% looser (side x1.25): the face shrinks to 80% of the frame. FERPlus
                    crops have no context around them, so the new border **replicates the edge
                    pixels** (``cv2.BORDER_REPLICATE``). Reflection would mirror eyebrows, chin and
                    cheeks into the border, i.e. add facial features a looser real crop never has
                    (and it is what ``fer train --shift`` already shows the model).
``rotate_ccw15``    rotation by 15 degrees counter-clockwise about the centre (edges replicated)
``rotate_cw15``     rotation by 15 degrees clockwise
``blur_1/2``        Gaussian blur, sigma 1.5% / 3% of the side (1.7 / 3.4 px at 112)
``noise_1/2``       additive Gaussian noise, sigma 0.08 / 0.16 of the pixel range; one noise plane
                    shared by the three channels when the image is gray (FERPlus), else per channel
``jpeg_15``         JPEG round trip at quality 15 (gray images encoded as one-channel JPEG)
``brighter40``      brightness +40% (pixels x1.4, clipped)
``darker40``        brightness -40% (pixels x0.6)
``contrast50``      contrast x0.5: pixels pulled halfway to the image's mean gray level
``downsample24``    down-sampled to 24 px (area) and back up (bilinear)
``occlude_eyes``    a black band over the eyes (sunglasses): rows :data:`EYES_BAND` of the height
``occlude_mouth``   a light-gray band over the mouth (a mask): rows :data:`MOUTH_BAND`
==================  ===========================================================================

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
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fercli.data import batches, cache_dir_for, cache_key, load_or_build_cache
from fercli.errors import FerError
from fercli.fileio import atomic_path, atomic_write_json
from fercli.progress import Track, no_track
from fercli.transforms import decode_image, to_rgb_uint8

log = logging.getLogger(__name__)

SUITE_VERSION = 1  # bump when a corruption's code changes: it is part of every cache key
DEFAULT_SEED = 0
CANONICAL_SIZE = 112  # corruptions are made at this size, then resized to each model's input size

# Occluding bands as (top, bottom) fractions of the height. On aligned crops the eyes lie at about
# 35-45% of the height (FERPlus' mean face: ~37%; the ArcFace template used by `fer align`: 46%) and
# the mouth at about 70-85% (FERPlus ~77%, ArcFace 82%); each band covers its range with a margin.
EYES_BAND = (0.28, 0.50)
MOUTH_BAND = (0.64, 0.90)
SUNGLASSES_GRAY = 0  # black lenses
MASK_GRAY = 200  # a light surgical mask


# ---- the corruptions ---------------------------------------------------------------------------

def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _is_gray(img: np.ndarray) -> bool:
    return bool((img[:, :, 0] == img[:, :, 1]).all() and (img[:, :, 1] == img[:, :, 2]).all())


def _affine(img: np.ndarray, rng: np.random.Generator, *, zoom: float = 1.0, angle: float = 0.0) -> np.ndarray:
    """Zoom by ``zoom`` (> 1: a tighter crop) and rotate by ``angle`` degrees (counter-clockwise)
    about the centre; pixels from outside the frame replicate the edge."""
    import cv2

    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, zoom)
    return cv2.warpAffine(np.ascontiguousarray(img), m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def crop(img: np.ndarray, rng: np.random.Generator, *, side: float) -> np.ndarray:
    """A centred crop box ``side`` times the frame's side, resized back to the frame (``side < 1``
    tighter, ``side > 1`` looser with the border filled by edge replication)."""
    return _affine(img, rng, zoom=1.0 / side)


def rotate(img: np.ndarray, rng: np.random.Generator, *, degrees: float) -> np.ndarray:
    """Rotation about the centre, ``degrees`` counter-clockwise (negative: clockwise); corners replicate the edge."""
    return _affine(img, rng, angle=degrees)


def blur(img: np.ndarray, rng: np.random.Generator, *, sigma: float) -> np.ndarray:
    """Gaussian blur with standard deviation ``sigma`` times the image's width."""
    import cv2

    s = sigma * img.shape[1]
    return cv2.GaussianBlur(np.ascontiguousarray(img), (0, 0), sigmaX=s, sigmaY=s, borderType=cv2.BORDER_REFLECT_101)


def noise(img: np.ndarray, rng: np.random.Generator, *, sigma: float) -> np.ndarray:
    """Additive Gaussian noise of standard deviation ``sigma`` x 255 (one plane for gray images)."""
    shape = img.shape[:2] + ((1,) if _is_gray(img) else (img.shape[2],))
    return _to_uint8(img.astype(np.float64) + rng.normal(0.0, sigma * 255.0, shape))


def jpeg(img: np.ndarray, rng: np.random.Generator, *, quality: int) -> np.ndarray:
    """A JPEG encode/decode round trip at ``quality`` (OpenCV's libjpeg, 4:2:0 chroma for colour)."""
    import cv2

    gray = _is_gray(img)
    src = img[:, :, 0] if gray else img[:, :, ::-1]
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(src), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV always encodes uint8 images
        raise FerError("OpenCV could not encode a JPEG")
    out = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR)
    return np.repeat(out[:, :, None], 3, axis=2) if gray else np.ascontiguousarray(out[:, :, ::-1])


def brightness(img: np.ndarray, rng: np.random.Generator, *, factor: float) -> np.ndarray:
    """Pixels times ``factor``, clipped (torchvision's ``adjust_brightness``)."""
    return _to_uint8(img.astype(np.float64) * factor)


def contrast(img: np.ndarray, rng: np.random.Generator, *, factor: float) -> np.ndarray:
    """Blend with the image's mean gray level: ``mean + factor * (pixel - mean)`` (torchvision's ``adjust_contrast``)."""
    x = img.astype(np.float64)
    mean = float((x @ np.array([0.299, 0.587, 0.114])).mean())
    return _to_uint8(mean + factor * (x - mean))


def downsample(img: np.ndarray, rng: np.random.Generator, *, size: int) -> np.ndarray:
    """Down to ``size`` x ``size`` (area averaging) and back up (bilinear)."""
    import cv2

    h, w = img.shape[:2]
    small = cv2.resize(np.ascontiguousarray(img), (size, size), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def band_rows(height: int, band: tuple[float, float]) -> tuple[int, int]:
    """The rows ``[top, bottom)`` an occluding band covers on an image ``height`` pixels tall."""
    return int(round(band[0] * height)), int(round(band[1] * height))


def occlude(img: np.ndarray, rng: np.random.Generator, *, band: tuple[float, float], gray: int) -> np.ndarray:
    """A full-width band of constant ``gray`` over rows ``band`` (fractions of the height)."""
    top, bottom = band_rows(img.shape[0], band)
    out = img.copy()
    out[top:bottom] = gray
    return out


@dataclass(frozen=True)
class Corruption:
    """One named corruption at one severity: ``corruption(image, rng) -> image``."""

    name: str
    family: str
    severity: str  # in words, for tables and the JSON
    fn: Callable[..., np.ndarray] = field(repr=False)

    @property
    def params(self) -> dict[str, Any]:
        """The severity's parameters (part of the cache key)."""
        return dict(self.fn.keywords) if isinstance(self.fn, partial) else {}

    def __call__(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        img = np.asarray(img)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise FerError(f"{self.name}: expected a uint8 HxWx3 image, got {img.dtype} {img.shape}")
        out = self.fn(img, rng)
        assert out.shape == img.shape and out.dtype == np.uint8, (self.name, out.shape, out.dtype)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"family": self.family, "severity": self.severity, "params": self.params}


def _c(name: str, family: str, severity: str, fn: Callable[..., np.ndarray], **params: Any) -> Corruption:
    return Corruption(name, family, severity, partial(fn, **params))


_SUITE = [
    _c("crop_tight25", "crop", "box side x0.75", crop, side=0.75),
    _c("crop_loose25", "crop", "box side x1.25, edges replicated", crop, side=1.25),
    _c("rotate_ccw15", "rotate", "+15 degrees", rotate, degrees=15.0),
    _c("rotate_cw15", "rotate", "-15 degrees", rotate, degrees=-15.0),
    _c("blur_1", "blur", "sigma 1.5% of the side", blur, sigma=0.015),
    _c("blur_2", "blur", "sigma 3% of the side", blur, sigma=0.03),
    _c("noise_1", "noise", "sigma 0.08", noise, sigma=0.08),
    _c("noise_2", "noise", "sigma 0.16", noise, sigma=0.16),
    _c("jpeg_15", "jpeg", "quality 15", jpeg, quality=15),
    _c("brighter40", "brightness", "x1.4", brightness, factor=1.4),
    _c("darker40", "brightness", "x0.6", brightness, factor=0.6),
    _c("contrast50", "contrast", "x0.5", contrast, factor=0.5),
    _c("downsample24", "resolution", "24 px and back", downsample, size=24),
    _c("occlude_eyes", "occlusion", f"rows {EYES_BAND[0]:.0%}-{EYES_BAND[1]:.0%}, black", occlude, band=EYES_BAND,
       gray=SUNGLASSES_GRAY),
    _c("occlude_mouth", "occlusion", f"rows {MOUTH_BAND[0]:.0%}-{MOUTH_BAND[1]:.0%}, light gray", occlude,
       band=MOUTH_BAND, gray=MASK_GRAY),
]

# name -> corruption, in the suite's order (the order of tables, charts and the JSON).
CORRUPTIONS: dict[str, Corruption] = {c.name: c for c in _SUITE}


def resolve_corruptions(names: Sequence[str] | None = None) -> list[Corruption]:
    """The named corruptions (all of them for ``None`` or empty), or a one-line FerError."""
    if not names:
        return list(CORRUPTIONS.values())
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise FerError(f"--corruptions: unknown {', '.join(map(repr, unknown))}; known: {', '.join(CORRUPTIONS)}")
    if len(set(names)) != len(names):
        raise FerError(f"--corruptions: a name is given twice in {', '.join(names)}")
    return [CORRUPTIONS[n] for n in names]


def check_options(robustness: bool, corruptions: Sequence[str] | None, seed: int) -> None:
    """Validate the robustness options of `fer eval` before anything is loaded."""
    if corruptions and not robustness:
        raise FerError("--corruptions needs --robustness")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise FerError(f"robustness_seed must be an integer >= 0, got {seed!r}")
    if robustness:
        resolve_corruptions(corruptions)


def image_rng(seed: int, name: str, index: int) -> np.random.Generator:
    """The generator for image ``index`` under corruption ``name``: depends on nothing else."""
    return np.random.default_rng([int(seed), zlib.crc32(name.encode()), int(index)])


# ---- the corrupted images ----------------------------------------------------------------------

def corrupt_all(images: np.ndarray, corruption: Corruption, seed: int = DEFAULT_SEED, out: np.ndarray | None = None,
                start: int = 0) -> np.ndarray:
    """``corruption`` applied to every image of a uint8 ``(N, S, S, 3)`` array, image ``i`` seeded
    as index ``start + i``."""
    out = np.empty_like(images) if out is None else out
    for i in range(len(images)):
        out[i] = corruption(np.asarray(images[i]), image_rng(seed, corruption.name, start + i))
    return out


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
    from fercli.evaluation import compute_metrics  # here: evaluation imports this module lazily

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
    rep = {**rep, "files": {"json": str(out_dir / "robustness.json"), "png": str(out_dir / "robustness.png")}}
    plot_robustness(rep, title, out_dir / "robustness.png")
    atomic_write_json(out_dir / "robustness.json", rep)
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
    rep = report(rep, model={"path": str(clf.path), "sha256": ws.sha256(clf.path), "kind": clf.kind, "arch": clf.arch,
                             "classes": list(clf.classes), "input_size": clf.preprocess.input_size},
                 manifest={"path": str(m.path), "sha256": manifest_sha, "split": split}, tta=tta,
                 temperature=getattr(clf, "temperature", 1.0))
    if out is not None:
        rep = write_outputs(rep, Path(out), f"{clf.arch} on {m.meta.get('dataset') or 'dataset'} {split}")
    return rep


def report(figures: dict[str, Any], *, model: dict[str, Any], manifest: dict[str, Any], tta: str,
           **extra: Any) -> dict[str, Any]:
    """The ``robustness.json`` document: header, the model and manifest (with sha256), then the figures."""
    from fercli.schema import now_iso

    return {"schema_version": 1, "kind": "robustness", "created": now_iso(), "model": model, "manifest": manifest,
            "tta": tta, **extra, **figures}


__all__ = [
    "CANONICAL_SIZE", "CORRUPTIONS", "DEFAULT_SEED", "EYES_BAND", "MOUTH_BAND", "SUITE_VERSION", "Corruption",
    "band_rows", "canonical_images", "check_options", "corrupt_all", "corrupted_images", "image_rng", "plot_robustness",
    "report", "resolve_corruptions", "run_robustness", "score_suite", "write_outputs",
]
