"""Robust image loading and crop writing for alignment.

:func:`load_image` never lets one bad file stop a run: it raises :class:`ImageProblem` with a
status (``unreadable``, ``too_large``, ``missing``) and a one-line reason, and returns notes about
conversions it made (EXIF rotation applied, CMYK or 16-bit converted, very large photo reduced).
Grey images stay single-channel; everything else becomes 8-bit BGR.
"""

from __future__ import annotations

import io
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from fercli.errors import FerError
from fercli.fileio import atomic_path
from fercli.imagestatus import EMPTY_FILE, os_problem

# Above this many pixels a photo is decoded reduced (JPEG) or resized (others) to about this many;
# landmarks and crops then refer to the EXIF-rotated original's coordinates regardless.
WORK_MAX_PIXELS = 16_000_000
# Refuse outright (decompression bombs); 8000x6000 = 48 MP is processed.
MAX_PIXELS = 250_000_000
_FLAGS = cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH  # applies EXIF orientation, drops alpha
_REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
_REDUCED_GREY = {2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4, 8: cv2.IMREAD_REDUCED_GRAYSCALE_8}
_ROTATING = {5, 6, 7, 8}  # EXIF orientations that swap width and height
JPEG_QUALITY = 95
NOT_AN_IMAGE = "not an image (unrecognised file format)"


class ImageProblem(Exception):
    """An image that cannot be used: ``status`` for the manifest and a one-line ``reason``."""

    def __init__(self, status: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class LoadedImage:
    """A decoded photo. ``scale`` maps original (EXIF-rotated) pixels to ``image`` pixels."""

    image: np.ndarray  # HxW (grey) or HxWx3 (BGR), uint8
    scale: float = 1.0
    original_size: tuple[int, int] = (0, 0)  # (width, height) after EXIF rotation
    notes: list[str] = field(default_factory=list)

    @property
    def grey(self) -> bool:
        return self.image.ndim == 2


def _open_unchecked(data: bytes):
    """PIL's lazy open, without PIL's own decompression-bomb refusal.

    PIL refuses headers over 2 x ``Image.MAX_IMAGE_PIXELS`` (about 179 MP) with a message of its own;
    fercli checks the pixel count itself, against its own limit (which may be higher: up to
    :data:`MAX_PIXELS`) and in its own words. Only an image PIL refuses that way is identified again,
    through the plugin registry ``Image.open`` walks (``Image.ID``, ``Image.OPEN``), minus the check;
    nothing is decoded. Changing ``Image.MAX_IMAGE_PIXELS`` instead would lift the check for every
    thread of the process."""
    import struct

    from PIL import Image

    try:
        return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        bomb = exc
    fp = io.BytesIO(data)
    for fmt in Image.ID:
        factory, accept = Image.OPEN[fmt]
        ok = not accept or accept(data[:16])
        if ok and not isinstance(ok, str):  # a str is PIL's "almost this format" warning
            try:
                fp.seek(0)
                return factory(fp, "")
            except (SyntaxError, IndexError, TypeError, struct.error):
                continue
    raise bomb


def _header(data: bytes):
    """(format, (w, h), mode, exif orientation) from the file header, via PIL (no full decode)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = _open_unchecked(data)
            fmt, size, mode = im.format, im.size, im.mode
            try:
                orientation = int(im.getexif().get(0x0112, 1) or 1)
            except Exception:  # a damaged EXIF block is not a damaged image
                orientation = 1
    except UnidentifiedImageError:
        raise ImageProblem("unreadable", NOT_AN_IMAGE) from None
    except Image.DecompressionBombError:  # only if PIL's registry stops matching _open_unchecked's use of it
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        raise ImageProblem("too_large", f"the header declares more than {limit / 1e6:.0f} MP") from None
    except Exception as exc:
        raise ImageProblem("unreadable", f"unreadable image header ({type(exc).__name__}: {exc})") from None
    return fmt, size, mode, orientation


def _truncated(data: bytes, fmt: str | None) -> bool:
    """Cheap end-marker check; ambiguous cases are settled by a full PIL decode."""
    tail = data.rstrip(b"\x00\r\n ")
    if fmt == "JPEG" and tail.endswith(b"\xff\xd9"):
        return False
    if fmt == "PNG" and b"IEND" in data[-16:]:
        return False
    if fmt not in ("JPEG", "PNG"):
        return False
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except Exception:
        return True
    return False


def _verify_png(data: bytes) -> None:
    """Chunk CRCs and structure, without decoding (cheap): corrupt PNGs become ``unreadable``."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Image.open(io.BytesIO(data)).verify()
    except Exception as exc:
        what = (str(exc) or type(exc).__name__).replace("b'", "").replace("'", "")
        chunk = re.search(r"checksum in (\w{4})", what)
        if chunk and chunk.group(1)[0].islower():
            return  # a damaged ancillary chunk (text, time...): decoders skip it, the pixels are fine
        what = what[len("broken PNG file ("):-1] if what.startswith("broken PNG file (") else what
        raise ImageProblem("unreadable", f"corrupt PNG file ({what})") from None


# What C libraries print while decoding (libpng errors, libjpeg warnings) is noise for our users: the
# image's reason says it. C writes to file descriptor 2 directly, so it is redirected there.
_C_NOISE = ("libpng", "corrupt jpeg", "premature end of jpeg", "invalid jpeg", "not a jpeg", "bogus", "warning:")


@contextmanager
def _quiet_c_stderr() -> Iterator[list[str]]:
    """Capture what C code writes to fd 2 meanwhile; yield the lines that look like decoder complaints
    (filled on exit) and pass anything else (another thread's output) through to stderr."""
    said: list[str] = []
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield said
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield said
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
    other = []
    for line in text.splitlines(keepends=True):
        if line.strip().lower().startswith(_C_NOISE):
            said.append(line.strip())
        elif line:
            other.append(line)
    if other:
        try:
            sys.stderr.write("".join(other))
        except (OSError, ValueError):
            pass


def _to_uint8(img: np.ndarray, notes: list[str]) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        notes.append("16-bit image scaled to 8-bit")
        return ((img.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(img.dtype, np.floating):
        notes.append(f"{img.dtype} image scaled to 8-bit")
        hi = float(np.nanmax(img)) if img.size else 1.0
        img = img * (255.0 if hi <= 1.0 else 1.0)
        return np.clip(np.nan_to_num(img), 0, 255).astype(np.uint8)
    notes.append(f"{img.dtype} image clipped to 8-bit")
    return np.clip(img, 0, 255).astype(np.uint8)


def load_image(path: str | os.PathLike[str], work_max_pixels: int = WORK_MAX_PIXELS) -> LoadedImage:
    """Decode ``path`` for detection and alignment, or raise :class:`ImageProblem`."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:  # one vocabulary with fer predict: fercli.imagestatus
        raise ImageProblem(*os_problem(exc, path)) from None
    return decode_image(data, work_max_pixels)


def decode_image(data: bytes, work_max_pixels: int = WORK_MAX_PIXELS, max_pixels: int | None = None,
                 quiet: bool = True) -> LoadedImage:
    """Decode an encoded image held in memory (what :func:`load_image` reads), or raise :class:`ImageProblem`.

    Everything is checked from the header before any pixel is decoded: not an image (reason
    :data:`NOT_AN_IMAGE`), empty, truncated, corrupt, or more than ``max_pixels`` pixels (status
    ``too_large``: a decompression bomb costs no memory). ``quiet`` captures what the C decoders print
    by redirecting file descriptor 2 through a temporary file; servers pass False, since that
    redirection is process-wide and they decode in several threads.
    """
    if not data:
        raise ImageProblem("unreadable", EMPTY_FILE)
    fmt, (w0, h0), mode, orientation = _header(data)
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    if w0 * h0 > max_pixels:  # before the truncation check, which may decode
        raise ImageProblem("too_large", f"{w0}x{h0} pixels is more than the {max_pixels / 1e6:g} MP limit")
    # Damage is found before OpenCV decodes: libpng and libjpeg would print their own complaints.
    if _truncated(data, fmt):
        raise ImageProblem("unreadable", f"truncated {fmt or 'image'} file ({len(data)} bytes)")
    if fmt == "PNG":
        _verify_png(data)
    notes: list[str] = []
    if orientation in range(2, 9):
        notes.append(f"EXIF orientation {orientation} applied")
    if mode == "CMYK":
        notes.append("CMYK converted to RGB")
    elif mode in ("P", "PA"):
        notes.append("palette image converted to RGB")
    grey_src = mode in ("L", "LA", "1", "I;16", "I;16B", "I;16L", "I")
    buf = np.frombuffer(data, np.uint8)
    reduce = 1
    if fmt == "JPEG" and w0 * h0 > work_max_pixels:
        while reduce < 8 and w0 * h0 / (reduce * 2) ** 2 >= work_max_pixels / 4 and w0 * h0 / reduce**2 > work_max_pixels:
            reduce *= 2
    flags = (_REDUCED_GREY if grey_src else _REDUCED)[reduce] if reduce > 1 else _FLAGS
    said: list[str] = []
    if quiet:
        with _quiet_c_stderr() as said:
            img = cv2.imdecode(buf, flags)
    else:
        img = cv2.imdecode(buf, flags)
    if img is None or img.size == 0:
        detail = f" ({said[0]})" if said else ""
        raise ImageProblem("unreadable", f"cannot decode {fmt or 'image'} data{detail}")
    img = _to_uint8(img, notes)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    elif img.ndim == 3 and img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    ow, oh = (h0, w0) if orientation in _ROTATING else (w0, h0)
    h, w = img.shape[:2]
    if h * w > work_max_pixels:
        f = (work_max_pixels / (h * w)) ** 0.5
        img = cv2.resize(img, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
        h, w = img.shape[:2]
    scale = w / ow if ow else 1.0
    if scale < 1.0:
        notes.append(f"{ow}x{oh} photo reduced to {w}x{h} for alignment")
    return LoadedImage(np.ascontiguousarray(img), scale, (ow, oh), notes)


def write_image(dest: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write a crop atomically; the format follows ``dest``'s extension (JPEG at quality 95)."""
    dest = Path(dest)
    params: list[int] = []
    if dest.suffix.lower() in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
    with atomic_path(dest) as tmp:
        ok = cv2.imwrite(str(tmp), image, params)
        if not ok:
            raise FerError(f"{dest}: could not write the aligned crop (disk full or folder not writable?)")
