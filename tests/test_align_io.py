"""Robust image loading for fer align: every bad input is a status and a reason, never a crash."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from align_helpers import write_bad_inputs, write_huge

from fercli.align.imageio import ImageProblem, load_image, write_image


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """A colour test picture with structure (not a real face: detection is tested elsewhere)."""
    rng = np.random.default_rng(3)
    img = cv2.GaussianBlur(rng.integers(0, 255, (120, 100, 3), dtype=np.uint8), (5, 5), 0)
    cv2.rectangle(img, (10, 10), (40, 30), (0, 0, 255), -1)  # a red block top-left, to see rotations
    return img


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory: pytest.TempPathFactory, face: np.ndarray) -> tuple[Path, dict[str, str]]:
    folder = tmp_path_factory.mktemp("bad")
    return folder, write_bad_inputs(folder, face)


@pytest.mark.parametrize("name,reason", [
    ("truncated.jpg", "truncated JPEG"),
    ("not_an_image.png", "not an image"),
    ("empty.jpg", "empty file (0 bytes)"),
])
def test_unusable_files_raise_a_status_and_reason(bad_dir, name: str, reason: str) -> None:
    folder, expected = bad_dir
    with pytest.raises(ImageProblem) as info:
        load_image(folder / name)
    assert info.value.status == expected[name] == "unreadable"
    assert reason in info.value.reason


def test_missing_file_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ImageProblem) as info:
        load_image(tmp_path / "gone.jpg")
    assert info.value.status == "missing"


def test_truncated_png(tmp_path: Path, face: np.ndarray) -> None:
    data = cv2.imencode(".png", face)[1].tobytes()
    (tmp_path / "t.png").write_bytes(data[: len(data) - 20])
    with pytest.raises(ImageProblem) as info:
        load_image(tmp_path / "t.png")
    assert info.value.status == "unreadable" and "PNG" in info.value.reason


def test_cmyk_jpeg_becomes_bgr(bad_dir, face: np.ndarray) -> None:
    img = load_image(bad_dir[0] / "cmyk.jpg")
    assert img.image.shape == face.shape and img.image.dtype == np.uint8
    assert np.abs(img.image.astype(int) - face.astype(int)).mean() < 6
    assert "CMYK converted to RGB" in img.notes


def test_16bit_png_is_scaled_to_8bit(bad_dir, face: np.ndarray) -> None:
    img = load_image(bad_dir[0] / "deep16.png")
    assert img.image.dtype == np.uint8
    np.testing.assert_array_equal(img.image, face)
    assert "16-bit image scaled to 8-bit" in img.notes


def test_exif_orientation_is_applied(bad_dir, face: np.ndarray) -> None:
    img = load_image(bad_dir[0] / "exif_rotated.jpg")
    assert img.image.shape == face.shape  # stored 100x120, shown 120x100 after rotation
    assert np.abs(img.image.astype(int) - face.astype(int)).mean() < 12  # JPEG noise only
    b, g, r = (int(v) for v in img.image[20, 25])
    assert r > 200 and b < 60 and g < 60  # the red block is back at the top left
    assert img.original_size == (face.shape[1], face.shape[0])
    assert "EXIF orientation 6 applied" in img.notes


def test_grey_stays_single_channel(bad_dir) -> None:
    img = load_image(bad_dir[0] / "grey.png")
    assert img.image.ndim == 2 and img.grey


def test_alpha_and_palette_pngs_become_bgr(tmp_path: Path, face: np.ndarray) -> None:
    from PIL import Image

    cv2.imwrite(str(tmp_path / "a.png"), np.dstack([face, np.full(face.shape[:2], 100, np.uint8)]))
    Image.fromarray(face[:, :, ::-1]).convert("P").save(tmp_path / "p.png")
    assert load_image(tmp_path / "a.png").image.shape == face.shape
    p = load_image(tmp_path / "p.png")
    assert p.image.shape == face.shape and "palette image converted to RGB" in p.notes


def test_huge_photo_is_reduced_with_its_scale(tmp_path: Path, face: np.ndarray) -> None:
    write_huge(tmp_path / "huge.jpg", face)
    img = load_image(tmp_path / "huge.jpg")
    assert img.original_size == (8000, 6000)
    assert img.image.shape[:2] == (3000, 4000) and img.scale == 0.5
    assert any("8000x6000 photo reduced to 4000x3000" in n for n in img.notes)
    small = load_image(tmp_path / "huge.jpg", work_max_pixels=1_000_000)
    assert small.image.shape[0] * small.image.shape[1] <= 1_000_000 and small.scale == pytest.approx(small.image.shape[1] / 8000)


def test_too_many_pixels_is_refused_from_the_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, face) -> None:
    import fercli.align.imageio as io

    cv2.imwrite(str(tmp_path / "x.png"), face)
    monkeypatch.setattr(io, "MAX_PIXELS", 1000)
    with pytest.raises(ImageProblem) as info:
        io.load_image(tmp_path / "x.png")
    assert info.value.status == "too_large" and "100x120" in info.value.reason


def test_write_image_is_atomic_and_keeps_the_format(tmp_path: Path, face: np.ndarray) -> None:
    for name in ("a.JPG", "b.png", "c.webp", "d.bmp", "sub/e.jpeg"):
        write_image(tmp_path / name, face)
        back = cv2.imread(str(tmp_path / name))
        assert back is not None and back.shape == face.shape
    assert (tmp_path / "a.JPG").read_bytes()[:3] == b"\xff\xd8\xff"
    assert not [p for p in tmp_path.rglob(".*")]  # no temporary files left behind
