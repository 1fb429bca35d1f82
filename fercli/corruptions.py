"""The corruptions of `fer eval --robustness` (:mod:`fercli.robustness` scores models on them).

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
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from fercli.errors import FerError

SUITE_VERSION = 1  # bump when a corruption's code changes: it is part of every cache key
DEFAULT_SEED = 0

# Occluding bands as (top, bottom) fractions of the height. On aligned crops the eyes lie at about
# 35-45% of the height (FERPlus' mean face: ~37%; the ArcFace template used by `fer align`: 46%) and
# the mouth at about 70-85% (FERPlus ~77%, ArcFace 82%); each band covers its range with a margin.
EYES_BAND = (0.28, 0.50)
MOUTH_BAND = (0.64, 0.90)
SUNGLASSES_GRAY = 0  # black lenses
MASK_GRAY = 200  # a light surgical mask


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


def corrupt_all(images: np.ndarray, corruption: Corruption, seed: int = DEFAULT_SEED, out: np.ndarray | None = None,
                start: int = 0) -> np.ndarray:
    """``corruption`` applied to every image of a uint8 ``(N, S, S, 3)`` array, image ``i`` seeded
    as index ``start + i``."""
    out = np.empty_like(images) if out is None else out
    for i in range(len(images)):
        out[i] = corruption(np.asarray(images[i]), image_rng(seed, corruption.name, start + i))
    return out
