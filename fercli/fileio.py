"""Atomic writes and file hashing.

Every artifact is written to a temporary file in the destination directory and moved into place
with :func:`os.replace`, so a crash, Ctrl-C or a full disk never leaves a half-written artifact
where a later stage would read it, and never destroys the previous version.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fercli.errors import FerError


def _temp_name(dest: Path) -> Path:
    # Keep the real suffix last: writers such as cv2.imwrite choose the format from it.
    return dest.with_name(f".{dest.stem}.tmp-{os.getpid()}{dest.suffix}")


@contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; on success it replaces ``dest`` atomically.

    On any exception the temporary file is removed and ``dest`` is left untouched. A full disk
    becomes a :class:`FerError` naming the file.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(dest)
    try:
        yield tmp
        os.replace(tmp, dest)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise FerError(
                f"{dest}: disk full while writing; free some space and rerun (nothing was overwritten)"
            ) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(dest: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_text(dest: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``dest`` atomically."""
    atomic_write_bytes(dest, text.encode("utf-8"))


def atomic_write_json(dest: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``dest`` atomically."""
    atomic_write_text(dest, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def safe_torch_load(src: Any, path: str | os.PathLike[str] | None = None) -> Any:
    """``torch.load(src, weights_only=True)`` on CPU, with one-line errors naming ``path``.

    A file that needs pickled code (classes, functions) is refused: loading it would run that code.
    A damaged or foreign file is reported as unreadable. ``src`` may be a path or a file object.
    """
    import pickle

    import torch

    name = path if path is not None else src
    if isinstance(src, (str, os.PathLike)) and not Path(src).is_file():
        raise FerError(f"{name}: no such file")
    try:
        return torch.load(src, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's weights-only unpickler names the global it refused; anything else is damage.
        if "global" not in str(exc).lower():
            raise FerError(f"{name}: not a readable PyTorch file (damaged, truncated or not made by torch.save)") from exc
        raise FerError(
            f"{name}: refused to load: the file contains pickled code or objects, not plain tensors and "
            "containers; only load it if you trust it, and re-save it as a state dict"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise FerError(f"{name}: not a readable PyTorch file ({first})") from exc
