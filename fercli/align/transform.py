"""Five-point face alignment: a similarity transform onto the ArcFace template.

The template is ArcFace's reference for 112x112 crops (left eye, right eye, nose tip, left and
right mouth corner, image-left/right as seen in the photo), scaled to the output size. ``margin``
adds context around the face: the template shrinks towards the centre so that ``margin`` of the
face's extent is added on every side (0.1 = 10% more on each side).

Everything here works on single images as numpy arrays (HxW grey or HxWx3 BGR, uint8) and is
shared by ``fer align`` and any later stage that crops faces (``fer predict``).
"""

from __future__ import annotations

import cv2
import numpy as np

from fercli.align.config import DEFAULT_SIZE, check_geometry  # noqa: F401  (check_geometry: declared light, for the configs)

ARCFACE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)


# Weights of the five points in the least-squares fit. Expressions move the mouth (smiles widen it,
# surprise opens it) far more than the eyes, so the eyes dominate: the crop's scale and position stay
# steady across expressions and the eyes land within a few pixels of the template (unweighted, a
# broad smile pulls them 5-6 px off at 224). ``weights=None`` gives the plain unweighted fit.
LANDMARK_WEIGHTS = (4.0, 4.0, 2.0, 1.0, 1.0)


def template(size: int = DEFAULT_SIZE, margin: float = 0.0) -> np.ndarray:
    """The five template points (5x2, x/y in pixels) for a ``size`` x ``size`` crop."""
    scale = size / 112.0 / (1.0 + 2.0 * margin)
    return (ARCFACE_112 - 56.0) * scale + size / 2.0


def similarity_transform(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | tuple[float, ...] | None = None) -> np.ndarray:
    """Weighted least-squares similarity (rotation, uniform scale, translation) mapping ``src`` onto ``dst``.

    Umeyama's closed form (with ``weights=None`` exactly the estimate of
    ``skimage.transform.SimilarityTransform`` that insightface uses); returns the 2x3 matrix for
    :func:`cv2.warpAffine`.
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise ValueError("landmarks contain NaN or infinite values")
    w = np.ones(len(src)) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    s0, d0 = src - mu_s, dst - mu_d
    cov = (d0 * w[:, None]).T @ s0
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(cov) < 0:
        d[1] = -1.0
    rot = u @ np.diag(d) @ vt
    var_s = float(w @ (s0**2).sum(axis=1))
    if var_s <= 1e-12:
        raise ValueError("degenerate landmarks (all points coincide)")
    scale = (sig * d).sum() / var_s
    m = np.empty((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def transform_points(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine matrix to Nx2 points."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return pts @ matrix[:, :2].T + matrix[:, 2]


def _warp(image: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """warpAffine that first area-downsamples the needed region when the transform shrinks a lot.

    Bilinear warping alone aliases when a 2000-px face becomes a 224-px crop; resizing the region
    with INTER_AREA first keeps the crop as sharp as a proper downscale.
    """
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    if scale < 0.5:
        inv = cv2.invertAffineTransform(matrix)
        corners = transform_points(inv, np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64))
        h, w = image.shape[:2]
        x0 = int(max(0, np.floor(corners[:, 0].min()) - 2))
        y0 = int(max(0, np.floor(corners[:, 1].min()) - 2))
        x1 = int(min(w, np.ceil(corners[:, 0].max()) + 2))
        y1 = int(min(h, np.ceil(corners[:, 1].max()) + 2))
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            region = image[y0:y1, x0:x1]
            nw = max(1, int(round((x1 - x0) * scale)))
            nh = max(1, int(round((y1 - y0) * scale)))
            small = cv2.resize(region, (nw, nh), interpolation=cv2.INTER_AREA)
            fx, fy = nw / (x1 - x0), nh / (y1 - y0)
            # pixel-centre convention of cv2.resize: u = (x - x0 + 0.5) * fx - 0.5
            to_small = np.array([[fx, 0, (0.5 - x0) * fx - 0.5], [0, fy, (0.5 - y0) * fy - 0.5]])
            from_small = cv2.invertAffineTransform(to_small)
            full = np.vstack([matrix, [0, 0, 1]]) @ np.vstack([from_small, [0, 0, 1]])
            return cv2.warpAffine(small, full[:2], (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def alignment_matrix(landmarks: np.ndarray, size: int = DEFAULT_SIZE, margin: float = 0.0,
                     weights: tuple[float, ...] | None = LANDMARK_WEIGHTS) -> np.ndarray:
    """The 2x3 matrix taking the five ``landmarks`` (image pixels) onto the scaled template."""
    return similarity_transform(np.asarray(landmarks, dtype=np.float64).reshape(5, 2), template(size, margin), weights)


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = DEFAULT_SIZE, margin: float = 0.0,
               weights: tuple[float, ...] | None = LANDMARK_WEIGHTS) -> np.ndarray:
    """Crop ``image`` so the five ``landmarks`` land on the ArcFace template at ``size`` x ``size``.

    Grey input gives a grey crop and colour gives colour (channels are never changed); parts of the
    crop outside the photo are black.
    """
    return _warp(image, alignment_matrix(landmarks, size, margin, weights), size)


def box_crop(image: np.ndarray, box: np.ndarray, size: int = DEFAULT_SIZE, margin: float = 0.0) -> np.ndarray:
    """Square crop around a face box (x, y, w, h in pixels), ``margin`` of its side added all round.

    Used when a manifest has a face box but no landmarks (``--detector landmarks``).
    """
    x, y, w, h = (float(v) for v in box)
    if not (w > 0 and h > 0):
        raise ValueError(f"empty face box {box}")
    side = max(w, h) * (1.0 + 2.0 * margin)
    cx, cy = x + w / 2.0, y + h / 2.0
    s = size / side
    matrix = np.array([[s, 0.0, size / 2.0 - s * cx], [0.0, s, size / 2.0 - s * cy]])
    return _warp(image, matrix, size)


def resize_face(image: np.ndarray, size: int = DEFAULT_SIZE) -> np.ndarray:
    """``--detector none``: the image is already an aligned face; only resize it to ``size``."""
    h, w = image.shape[:2]
    if (h, w) == (size, size):
        return image.copy()
    interp = cv2.INTER_AREA if size < max(h, w) else cv2.INTER_CUBIC
    return cv2.resize(image, (size, size), interpolation=interp)
