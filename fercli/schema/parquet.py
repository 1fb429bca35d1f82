"""The ``fercli`` metadata of parquet artifacts (manifests, label tables) and their content identity."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from fercli.errors import FerError
from fercli.fileio import atomic_path
from fercli.schema.common import META_KEY, SCHEMA_VERSION, pa, pq

# Metadata that says when, where and by what a table was written rather than what it holds: left out
# of its content identity, so rewriting identical data (a rerun of import or align, the same dataset
# imported on another machine) keeps every artifact made from it fresh.
_VOLATILE_META = ("root", "root_abs")
_VOLATILE_PROVENANCE = ("created", "command", "fercli_version")


def content_sha256(path: str | os.PathLike[str]) -> str | None:
    """The content identity of a fercli parquet artifact (manifest or labels), or None for other files.

    sha256 over the rows (column names, types and values, in Arrow's IPC encoding) and the metadata
    without :data:`_VOLATILE_META` / :data:`_VOLATILE_PROVENANCE`, with inputs reduced to their
    sha256. The workspace records and compares this instead of the file's bytes.
    """
    path = Path(path)
    if path.suffix.lower() != ".parquet":
        return None
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError):
        return None
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        return None
    return _table_identity(table, json.loads(raw))


def _table_identity(table: pa.Table, meta: dict[str, Any]) -> str:
    canon = {k: v for k, v in meta.items() if k not in _VOLATILE_META}
    prov = {k: v for k, v in (canon.get("provenance") or {}).items() if k not in _VOLATILE_PROVENANCE}
    prov["inputs"] = {role: ref.get("sha256") if isinstance(ref, dict) else ref
                      for role, ref in (prov.get("inputs") or {}).items()}
    canon["provenance"] = prov
    h = hashlib.sha256(json.dumps(canon, sort_keys=True, default=str).encode())
    sink = pa.BufferOutputStream()
    data = table.replace_schema_metadata(None).combine_chunks()
    with pa.ipc.new_stream(sink, data.schema) as writer:
        writer.write_table(data)
    h.update(sink.getvalue().to_pybytes())
    return h.hexdigest()


def _write_table_if_changed(table: pa.Table, meta: dict[str, Any], dest: Path) -> bool:
    """Write ``table`` with ``meta`` atomically unless ``dest`` already holds the same content
    (then the file, its timestamp and its identity stay as they are); True if written."""
    if dest.is_file() and content_sha256(dest) == _table_identity(table, meta):
        return False
    table = table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()})
    with atomic_path(dest) as tmp:
        pq.write_table(table, tmp)
    return True


def read_parquet_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``fercli`` metadata of a parquet artifact, checked for a supported schema version."""
    path = Path(path)
    if not path.is_file():
        raise FerError(f"{path}: no such file")
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise FerError(f"{path}: not a readable parquet file ({exc}); regenerate it") from exc
    raw = (schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise FerError(f"{path}: parquet file without fercli metadata; create it with `fer data import` or `fer align`")
    meta = json.loads(raw)
    version = meta.get("schema_version")
    if not isinstance(version, int):
        raise FerError(f"{path}: fercli metadata has no schema_version")
    if version > SCHEMA_VERSION:
        raise FerError(
            f"{path}: written with schema version {version} by a newer fercli; this fercli reads up to "
            f"version {SCHEMA_VERSION}: upgrade fercli (pip install -U fercli)"
        )
    return meta

