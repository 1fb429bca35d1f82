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


@contextmanager
def partial_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``dest`` that replaces ``dest`` however the block ends.

    For streaming outputs (rows, an encoded video) that must keep what was written so far when the
    run is interrupted or fails part-way: the caller makes the file complete in its own ``finally``
    (rows flushed, video writer released) inside this block. ``dest`` is never seen half-written;
    a temporary file left empty (nothing was written) is removed and ``dest`` left untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(dest)
    try:
        yield tmp
    finally:
        if tmp.is_file() and tmp.stat().st_size > 0:
            os.replace(tmp, dest)
        else:
            tmp.unlink(missing_ok=True)


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
        first = (str(exc).splitlines() or [type(exc).__name__])[0].split(". ")[0]  # the first sentence
        raise FerError(f"{name}: not a readable PyTorch file ({first}): damaged, truncated or not made by torch.save") from exc
    except Exception as exc:  # anything else the unpickler trips on: the file is not what it should be
        raise FerError(f"{name}: not a readable PyTorch file (damaged, truncated or not made by torch.save; "
                       f"{type(exc).__name__}: {exc})") from exc


def _probe_dir(path: Path, label: str) -> None:
    """Create ``path`` if needed and write a file in it; undo both. Raises FerError naming ``label``."""
    import tempfile

    if not path.is_dir() and (path.exists() or path.is_symlink()):
        raise FerError(f"{label}: exists and is not a folder; pass a folder (or a new name)")
    missing: list[Path] = []
    p = path
    while not p.is_dir():
        if p.exists() or p.is_symlink():  # a file (or a dangling link) where a folder must go
            raise FerError(f"{label}: {p} is not a folder; choose another path")
        missing.append(p)
        p = p.parent
    created: list[Path] = []
    try:
        for d in reversed(missing):
            try:
                d.mkdir()
            except OSError as exc:
                why = "the file system does not allow it" if exc.errno == errno.ENOENT else exc.strerror or exc
                raise FerError(f"{label}: cannot create the folder {d} ({why}); choose a writable location") from None
            created.append(d)
        try:
            fd, tmp = tempfile.mkstemp(prefix=".fer-write-test-", dir=path)
            os.close(fd)
            os.unlink(tmp)
        except OSError as exc:
            raise FerError(f"{label}: cannot write in this folder ({exc.strerror or exc}); "
                           "choose a writable location") from None
    finally:
        for d in reversed(created):  # leave no trace: the real writes create them again
            try:
                d.rmdir()
            except OSError:
                pass


def check_writable_dir(path: str | os.PathLike[str], option: str | None = None) -> None:
    """Refuse, before any work is done, an output folder that cannot be created or written into.

    ``option`` names what the user typed (``--annotate``, ``DST``) in the one-line error. The check
    really creates the folder and a file in it (permission bits say nothing to root, nor about
    read-only or virtual file systems such as /proc), then removes what it created.
    """
    path = Path(path)
    _probe_dir(path, f"{option} {path}" if option else str(path))


def check_writable_file(path: str | os.PathLike[str], option: str | None = None) -> None:
    """As :func:`check_writable_dir`, for an output file: not a folder, and its folder writable."""
    path = Path(path)
    label = f"{option} {path}" if option else str(path)
    if path.is_dir():
        raise FerError(f"{label}: is a folder; pass a file name")
    _probe_dir(path.parent, label)


class DirIndex:
    """Answers "does root/rel exist" with one directory listing per folder (fast on 400k files)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[str, frozenset[str]] = {}

    def exists(self, rel: str) -> bool:
        parent, _, name = rel.rpartition("/")
        if parent not in self._cache:
            try:
                self._cache[parent] = frozenset(os.listdir(self.root / parent if parent else self.root))
            except (FileNotFoundError, NotADirectoryError):
                self._cache[parent] = frozenset()
        return name in self._cache[parent]
