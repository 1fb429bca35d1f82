"""Alignment geometry: template, similarity fit, warping (grey, large images), box crops, resizing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fercli.align.transform import (
    ARCFACE_112,
    LANDMARK_WEIGHTS,
    align_face,
    alignment_matrix,
    box_crop,
    check_geometry,
    resize_face,
    similarity_transform,
    template,
    transform_points,
)
from fercli.errors import FerError


def _similarity(angle_deg: float, scale: float, tx: float, ty: float) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array([[scale * np.cos(a), -scale * np.sin(a), tx], [scale * np.sin(a), scale * np.cos(a), ty]])


def _dots_image(points: np.ndarray, h: int, w: int, radius: int = 3) -> np.ndarray:
    """Black colour image with a white dot (sub-pixel position) at each point."""
    img = np.zeros((h, w, 3), np.uint8)
    for p in points:
        centre = (int(round(p[0] * 16)), int(round(p[1] * 16)))
        cv2.circle(img, centre, radius * 16, (255, 255, 255), -1, lineType=cv2.LINE_AA, shift=4)
    return img


def _dot_centres(crop: np.ndarray, expected: np.ndarray, win: int = 12) -> np.ndarray:
    """Intensity-weighted centre of the blob nearest each expected point."""
    grey = crop if crop.ndim == 2 else crop.max(axis=2)
    out = []
    for ex, ey in expected:
        x0, y0 = int(max(0, ex - win)), int(max(0, ey - win))
        patch = grey[y0 : int(ey + win), x0 : int(ex + win)].astype(np.float64)
        ys, xs = np.mgrid[0 : patch.shape[0], 0 : patch.shape[1]]
        m = patch.sum()
        assert m > 0, f"no dot near {(ex, ey)}"
        out.append([x0 + (xs * patch).sum() / m, y0 + (ys * patch).sum() / m])
    return np.array(out)


def test_template_scales_with_size_and_margin() -> None:
    np.testing.assert_allclose(template(112), ARCFACE_112)
    np.testing.assert_allclose(template(224), ARCFACE_112 * 2)
    t = template(224, margin=0.25)
    # margin shrinks the template towards the centre: eye distance / (1 + 2 * margin)
    assert np.linalg.norm(t[1] - t[0]) == pytest.approx(np.linalg.norm(ARCFACE_112[1] - ARCFACE_112[0]) * 2 / 1.5)
    assert t.mean(axis=0) == pytest.approx((template(224).mean(axis=0) - 112) / 1.5 + 112)


@pytest.mark.parametrize("weights", [None, LANDMARK_WEIGHTS])
def test_similarity_transform_recovers_a_known_similarity(weights) -> None:
    rng = np.random.default_rng(1)
    src = rng.uniform(0, 500, (5, 2))
    truth = _similarity(23.0, 0.37, 14.0, -9.0)
    m = similarity_transform(src, transform_points(truth, src), weights)
    np.testing.assert_allclose(m, truth, atol=1e-9)


def test_similarity_transform_rejects_degenerate_points() -> None:
    with pytest.raises(ValueError):
        similarity_transform(np.ones((5, 2)), template(112))
    with pytest.raises(ValueError):
        similarity_transform(np.full((5, 2), np.nan), template(112))


def test_weighted_fit_keeps_eyes_closer_than_unweighted() -> None:
    # A broad smile: mouth corners far wider than the template's.
    lm = template(224).copy()
    lm[3, 0] -= 25
    lm[4, 0] += 25
    lm[3:, 1] -= 10
    plain = np.linalg.norm(transform_points(alignment_matrix(lm, 224, weights=None), lm)[:2] - template(224)[:2], axis=1)
    weighted = np.linalg.norm(transform_points(alignment_matrix(lm, 224), lm)[:2] - template(224)[:2], axis=1)
    assert weighted.max() < plain.max()


@pytest.mark.parametrize("shape,scale", [((400, 300), 1.3), ((3000, 2400), 0.12)])
def test_align_face_puts_landmarks_on_the_template(shape, scale) -> None:
    """Dots drawn where the landmarks are end up on the template points (incl. the large-image path)."""
    h, w = shape
    # landmarks = the template mapped into the photo by a rotated similarity
    m = _similarity(-17.0, 1.0 / scale * 224 / 112 / 2, w * 0.4, h * 0.3)
    lm = transform_points(m, ARCFACE_112)
    img = _dots_image(lm, h, w, radius=max(2, int(3 / scale)))
    crop = align_face(img, lm, 224, weights=None)
    assert crop.shape == (224, 224, 3) and crop.dtype == np.uint8
    np.testing.assert_allclose(_dot_centres(crop, template(224)), template(224), atol=1.0)


def test_grey_input_gives_grey_crop_consistent_with_colour() -> None:
    rng = np.random.default_rng(0)
    colour = cv2.GaussianBlur(rng.integers(0, 255, (300, 260, 3), dtype=np.uint8), (7, 7), 0)
    grey = cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY)
    lm = template(112) + [70, 80]
    a, b = align_face(colour, lm, 128, 0.1), align_face(grey, lm, 128, 0.1)
    assert b.shape == (128, 128) and a.shape == (128, 128, 3)
    assert np.abs(cv2.cvtColor(a, cv2.COLOR_BGR2GRAY).astype(int) - b.astype(int)).max() <= 1


def test_box_crop_centres_the_box_with_margin() -> None:
    img = np.zeros((200, 300), np.uint8)
    img[50:150, 100:200] = 255  # the "face" box
    crop = box_crop(img, np.array([100, 50, 100, 100]), 64, margin=0.25)
    inside = np.argwhere(crop > 127)
    # box side 100 + 2*25 margin -> 150 px onto 64: the box covers 64*100/150 = 42.7 px, centred
    assert inside[:, 0].min() == pytest.approx(10.7, abs=1.5) and inside[:, 0].max() == pytest.approx(52.7, abs=1.5)
    assert inside[:, 1].min() == pytest.approx(10.7, abs=1.5) and inside[:, 1].max() == pytest.approx(52.7, abs=1.5)
    with pytest.raises(ValueError):
        box_crop(img, np.array([0, 0, 0, 10]), 64)


def test_resize_face_keeps_channels() -> None:
    assert resize_face(np.zeros((48, 48), np.uint8), 224).shape == (224, 224)
    assert resize_face(np.zeros((300, 280, 3), np.uint8), 112).shape == (112, 112, 3)


@pytest.mark.parametrize("size,margin", [(8, 0.0), (224, -0.1), (224, 1.0)])
def test_bad_geometry_is_a_fer_error(size, margin) -> None:
    with pytest.raises(FerError):
        check_geometry(size, margin)


def test_select_faces_modes_and_min_size() -> None:
    from fercli.align.faces import select_faces
    from fercli.align.detectors import Face

    def face(x1, y1, x2, y2, score):
        return Face(np.array([x1, y1, x2, y2], float), score, np.zeros((5, 2)))

    faces = [face(0, 0, 20, 20, 0.99), face(0, 0, 60, 50, 0.95), face(0, 0, 40, 40, 0.9)]  # best first
    assert select_faces(faces, 1.0, "best") == [0]
    assert select_faces(faces, 1.0, "largest") == [1]
    assert select_faces(faces, 1.0, "all") == [0, 1, 2]
    assert select_faces(faces, 1.0, "all", min_face_size=30) == [1, 2]
    # the detector saw a half-size image: 20 px there are 40 px in the original
    assert select_faces(faces, 0.5, "all", min_face_size=40) == [0, 1, 2]
    assert select_faces(faces, 1.0, "largest", min_face_size=100) == []
    with pytest.raises(FerError):
        select_faces(faces, 1.0, "several")
