"""The pieces every artifact shares: the schema version, the parquet metadata key, provenance.

Also the lazily imported numpy/pandas/pyarrow the other schema modules use, so that importing
:mod:`fercli.schema` (``fer --help``, ``fer status``) costs no table library until one is read.
"""

from __future__ import annotations

import datetime as _dt
import importlib
from typing import Any

from fercli import __version__


class _LazyModule:
    """A module imported on first use: ``fer --help`` and ``fer status`` import this module but
    should not pay for numpy, pandas and pyarrow (about half a second) unless a table is read."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: Any = None

    def __getattr__(self, attr: str) -> Any:
        if self._module is None:
            self._module = importlib.import_module(self._name)
        return getattr(self._module, attr)


np: Any = _LazyModule("numpy")
pd: Any = _LazyModule("pandas")
pa: Any = _LazyModule("pyarrow")
pq: Any = _LazyModule("pyarrow.parquet")

SCHEMA_VERSION = 1
META_KEY = b"fercli"


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).astimezone().isoformat(timespec="seconds")


def make_provenance(
    kind: str,
    inputs: dict[str, dict[str, str]] | None = None,
    summary: dict[str, Any] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Provenance block stored in every artifact.

    ``inputs`` maps an input's role (an artifact kind such as ``dataset`` or ``teacher``, or a free
    name such as ``source``) to ``{"path": ..., "sha256": ...}``; the workspace compares these
    hashes to detect stale artifacts. ``summary`` holds the key figures shown by ``fer status``.
    """
    return {
        "kind": kind,
        "created": now_iso(),
        "fercli_version": __version__,
        "command": command,
        "inputs": inputs or {},
        "summary": summary or {},
    }


def _where(src: str, row: int | None = None) -> str:
    return f"{src} (row {row})" if row is not None else src

