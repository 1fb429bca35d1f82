"""Builders of test images for the fer align tests (bad inputs are generated, never stored)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

WEIGHTS_REL = Path("weights/retinaface/mobilenet0.25_Final.pth")


def face_grid(n: int = 4, size: int = 64, seed: int = 0) -> list[np.ndarray]:
    """Synthetic colour images (not faces) for the detector-free paths."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = np.full((size, size + 8 * i, 3), 40 * i % 255, np.uint8)
        cv2.circle(img, (size // 2, size // 2), size // 4, tuple(int(v) for v in rng.integers(0, 255, 3)), -1)
        out.append(img)
    return out


def write_bad_inputs(folder: Path, face: np.ndarray) -> dict[str, str]:
    """Write one file per bad-input case into ``folder``; returns {file name: expected status}."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    ok, buf = cv2.imencode(".jpg", face)
    data = buf.tobytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    expected["truncated.jpg"] = "unreadable"
    (folder / "not_an_image.png").write_bytes(b"this is a text file, not a PNG\n" * 10)
    expected["not_an_image.png"] = "unreadable"
    (folder / "empty.jpg").write_bytes(b"")
    expected["empty.jpg"] = "unreadable"
    Image.fromarray(face[:, :, ::-1]).convert("CMYK").save(folder / "cmyk.jpg", quality=95)
    expected["cmyk.jpg"] = "ok"
    cv2.imwrite(str(folder / "deep16.png"), face.astype(np.uint16) * 257)
    expected["deep16.png"] = "ok"
    # Stored rotated 90 degrees counter-clockwise; EXIF orientation 6 says "rotate clockwise to view".
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.ascontiguousarray(np.rot90(face, 1)[:, :, ::-1])).save(folder / "exif_rotated.jpg", exif=exif.tobytes(), quality=95)
    expected["exif_rotated.jpg"] = "ok"
    cv2.imwrite(str(folder / "grey.png"), cv2.cvtColor(face, cv2.COLOR_BGR2GRAY))
    expected["grey.png"] = "ok"
    return expected


def write_huge(path: Path, face: np.ndarray, width: int = 8000, height: int = 6000) -> None:
    """A ``width`` x ``height`` JPEG with ``face`` scaled up in the middle."""
    canvas = np.full((height, width, 3), 128, np.uint8)
    side = min(height, width) // 2
    big = cv2.resize(face, (side, side), interpolation=cv2.INTER_LINEAR)
    y, x = (height - side) // 2, (width - side) // 2
    canvas[y : y + side, x : x + side] = big
    cv2.imwrite(str(path), canvas, [cv2.IMWRITE_JPEG_QUALITY, 80])
