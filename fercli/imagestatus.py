"""The one vocabulary of per-image statuses and reasons, shared by `fer align` and `fer predict`.

Every source image (align: its manifest rows; predict: its JSON object, CSV rows and table row) gets a
``status`` from :data:`STATUSES` and, unless it is ``ok``, a one-line ``reason``. File-system problems
are classified here once, by :func:`path_problem` (before reading) and :func:`os_problem` (an
``OSError`` met while reading), so the same file gets the same status and reason from both commands.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

# status -> what it means, in the order summaries list them.
STATUS_MEANINGS: dict[str, str] = {
    "ok": "face(s) found and used",
    "no_face": "no face above --min-score / --min-face-size",
    "no_landmarks": "source row has no landmarks or box (--detector landmarks)",
    "unreadable": "empty, truncated, corrupt or not an image",  # also: a folder, a symlink loop, no permission
    "too_large": "more pixels than fercli accepts",
    "missing": "file not found (or a symlink to nothing)",
    "error": "unexpected failure on this image (fer align retries it on rerun)",
}
STATUSES: tuple[str, ...] = tuple(STATUS_MEANINGS)

# Reasons with a fixed text.
FILE_NOT_FOUND = "file not found"
BROKEN_SYMLINK = "broken symbolic link (its target does not exist)"
SYMLINK_LOOP = "symbolic link loop (too many levels of symbolic links)"
PERMISSION_DENIED = "permission denied"
IS_A_DIRECTORY = "is a directory, not an image"
EMPTY_FILE = "empty file (0 bytes)"
NO_IMAGES_IN_FOLDER = "directory holds no images"
NO_MATCH = "pattern matches no file"


def os_problem(exc: OSError, path: str | os.PathLike[str] | None = None) -> tuple[str, str]:
    """(status, reason) for an ``OSError`` raised while opening or reading ``path``."""
    code = exc.errno
    if code in (errno.ENOENT, errno.ENOTDIR):
        if path is not None and os.path.islink(path):
            return "missing", BROKEN_SYMLINK
        return "missing", FILE_NOT_FOUND
    if code == errno.ELOOP:
        return "unreadable", SYMLINK_LOOP
    if code in (errno.EACCES, errno.EPERM):
        return "unreadable", PERMISSION_DENIED
    if code == errno.EISDIR:
        return "unreadable", IS_A_DIRECTORY
    return "unreadable", f"cannot read file ({exc.strerror or type(exc).__name__})"


def path_problem(path: str | os.PathLike[str]) -> tuple[str, str] | None:
    """(status, reason) if ``path`` cannot be an image file, else None (it may still fail to decode)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        return os_problem(exc, path)
    if Path(path).is_dir():
        return "unreadable", IS_A_DIRECTORY
    if st.st_size == 0:
        return "unreadable", EMPTY_FILE
    return None
