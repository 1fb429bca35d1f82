"""Artifact schemas: file names, manifest columns and dtypes, metadata, schema version.

This is the only module that knows how artifacts look on disk. A *manifest* is a parquet table,
one row per image (or per face, after alignment), whose image paths are relative to a root stored
in the file's metadata. Every artifact carries ``fercli`` metadata: schema version, kind, class
list and provenance (which inputs, by sha256, made it; when; with which command).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from fercli import __version__
from fercli.classes import CLASSES_7, CLASSES_8
from fercli.errors import FerError
from fercli.fileio import atomic_path



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

# ---- workspace file names -------------------------------------------------------------------
# Default location of each artifact kind, relative to the workspace root.
ARTIFACT_FILES: dict[str, str] = {
    "dataset": "aligned/manifest.parquet",
    "teacher": "teacher/best.pt",
    "labels": "labels/labels.parquet",
    "student": "student/best.pt",
    "eval": "eval/report.json",
    "export": "export/model.onnx",
}
MANIFEST_NAME = "manifest.parquet"  # what `fer align SRC DST` writes inside DST
IMPORTED_MANIFEST = "data/manifest.parquet"  # default output of `fer data import`
CONFIG_FILES = ("fer.toml", "fer.yaml", "fer.yml")
STATE_FILE = ".fer/state.json"

# Checkpoints (torch.save of plain containers, loaded with weights_only=True) use these keys.
CHECKPOINT_FORMAT = "fercli.checkpoint"
CHECKPOINT_KEYS = (
    "format", "schema_version", "arch", "model_args", "classes", "input_size", "mean", "std",
    "state_dict", "config", "metrics", "versions", "provenance",
)
# Optional keys and their meaning when absent (checked by fercli.checkpoint.load_checkpoint):
# temperature: softmax temperature fitted by `fer calibrate` (probabilities = softmax(logits / T));
# tta: the recommended test-time augmentation ("none" or "flip"), the default of `fer eval`/`fer predict`;
# calibration: how the temperature was fitted (split, manifest sha256, ECE/NLL before and after);
# weights_dtype: "float16" in `fer export --format checkpoint --half` files.
CHECKPOINT_OPTIONAL_KEYS: dict[str, object] = {"temperature": 1.0, "tta": "none", "calibration": None, "weights_dtype": "float32"}

# ---- manifest columns -----------------------------------------------------------------------
SPLITS = ("train", "valid", "test")
UNLABELLED = -1

COL_PATH, COL_SPLIT, COL_LABEL, COL_LABEL_NAME = "path", "split", "label", "label_name"
# Column -> Arrow type, by the name of its pyarrow factory (pa.string(), pa.int16(), ...).
REQUIRED_COLUMNS: dict[str, str] = {
    COL_PATH: "string",  # POSIX path relative to the manifest's root
    COL_SPLIT: "string",  # one of SPLITS
    COL_LABEL: "int16",  # index into the class list, UNLABELLED (-1) when none
    COL_LABEL_NAME: "string",  # class name, null when unlabelled
}
BOX_COLUMNS = ("box_x", "box_y", "box_w", "box_h")  # face box in image pixels
LANDMARK_COLUMNS = tuple(f"lm{i}_{a}" for i in range(5) for a in "xy")  # l-eye, r-eye, nose, l-mouth, r-mouth
OPTIONAL_COLUMNS: dict[str, str] = {
    "dataset": "string",  # source dataset id (ferplus, rafdb, ...)
    **{c: "float32" for c in BOX_COLUMNS},
    **{c: "float32" for c in LANDMARK_COLUMNS},
    "valence": "float32",
    "arousal": "float32",
    # written by `fer align`:
    "src_path": "string",  # source image, relative to the source root
    "face_index": "int16",
    "score": "float32",
    "status": "string",
    "reason": "string",  # why a row has no crop, or what was converted (EXIF rotation, CMYK, ...)
}
DIST_PREFIX = "dist_"  # dist_<class>: a probability distribution over the class list
VOTE_PREFIX = "votes_"  # votes_<category>: raw annotator votes (any categories, e.g. FERPlus unknown)
DIST_TOLERANCE = 1e-3


def dist_columns(classes: list[str] | tuple[str, ...]) -> list[str]:
    return [f"{DIST_PREFIX}{c}" for c in classes]


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


@dataclass
class Manifest:
    """A validated manifest: the table, its class list, the image root and the rest of the metadata."""

    df: pd.DataFrame
    classes: tuple[str, ...]
    root: Path
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None  # the file it was read from, if any

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def image_path(self, rel: str) -> Path:
        return self.root / rel

    def image_paths(self) -> list[Path]:
        return [self.root / p for p in self.df[COL_PATH]]

    @property
    def dist_columns(self) -> list[str]:
        return dist_columns(self.classes)

    @property
    def has_dist(self) -> bool:
        return all(c in self.df.columns for c in self.dist_columns)

    @property
    def vote_columns(self) -> list[str]:
        return [c for c in self.df.columns if c.startswith(VOTE_PREFIX)]

    def split(self, name: str) -> pd.DataFrame:
        return self.df[self.df[COL_SPLIT] == name]

    def labelled(self, splits: tuple[str, ...] | list[str] | None = None) -> pd.DataFrame:
        """Rows that can be trained or scored on: a label, an image (``status`` ok after `fer align`),
        and, if given, one of ``splits``."""
        keep = self.df[COL_LABEL] >= 0
        if "status" in self.df.columns:
            keep &= self.df["status"] == "ok"
        if splits is not None:
            keep &= self.df[COL_SPLIT].isin(list(splits))
        return self.df[keep]


def _where(src: str, row: int | None = None) -> str:
    return f"{src} (row {row})" if row is not None else src


def _column_type(name: str) -> pa.DataType | None:
    if name in REQUIRED_COLUMNS:
        return getattr(pa, REQUIRED_COLUMNS[name])()
    if name in OPTIONAL_COLUMNS:
        return getattr(pa, OPTIONAL_COLUMNS[name])()
    if name.startswith(DIST_PREFIX):
        return pa.float32()
    if name.startswith(VOTE_PREFIX):
        return pa.int16()
    return None


def validate_manifest(df: pd.DataFrame, classes: tuple[str, ...] | list[str], src: str) -> None:
    """Raise :class:`FerError` saying exactly what is wrong with a manifest table.

    ``src`` names the file (or the importer's output) in messages; rows are numbered from 0.
    """
    classes = tuple(classes)
    if not classes or len(set(classes)) != len(classes):
        raise FerError(f"{src}: class list must be non-empty and unique, got {list(classes)}")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise FerError(f"{src}: missing required column(s) {', '.join(missing)}; expected {', '.join(REQUIRED_COLUMNS)}")
    unknown = [c for c in df.columns if _column_type(c) is None]
    if unknown:
        raise FerError(f"{src}: unknown column(s) {', '.join(unknown)}; see fercli.schema for the allowed columns")
    if len(df) == 0:
        raise FerError(f"{src}: the manifest is empty (no images)")

    paths = df[COL_PATH]
    if paths.isna().any():
        raise FerError(f"{_where(src, int(np.flatnonzero(paths.isna().to_numpy())[0]))}: empty image path")
    for i, p in enumerate(paths):
        pp = PurePosixPath(p)
        if p == "" or pp.is_absolute() or ".." in pp.parts or "\\" in p or (len(p) > 1 and p[1] == ":"):
            raise FerError(
                f"{_where(src, i)}: image path {p!r} must be relative to the dataset root and stay inside it"
            )
    key = [COL_PATH] + (["face_index"] if "face_index" in df.columns else [])
    dup = df.duplicated(subset=key, keep="first").to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        first = int(np.flatnonzero((paths == paths.iloc[i]).to_numpy())[0])
        raise FerError(f"{_where(src, i)}: duplicate row for {paths.iloc[i]!r} (first at row {first})")

    bad_split = ~df[COL_SPLIT].isin(SPLITS).to_numpy()
    if bad_split.any():
        i = int(np.flatnonzero(bad_split)[0])
        raise FerError(f"{_where(src, i)}: split {df[COL_SPLIT].iloc[i]!r} is not one of {', '.join(SPLITS)}")

    labels = df[COL_LABEL].to_numpy()
    bad_label = (labels < UNLABELLED) | (labels >= len(classes))
    if bad_label.any():
        i = int(np.flatnonzero(bad_label)[0])
        raise FerError(f"{_where(src, i)}: label {labels[i]} outside 0..{len(classes) - 1} (or -1 for none)")
    names = df[COL_LABEL_NAME]
    expected = pd.Series([classes[l] if l >= 0 else None for l in labels], index=df.index, dtype=object)
    mismatch = ~((names.astype(object) == expected) | (names.isna() & expected.isna())).to_numpy()
    if mismatch.any():
        i = int(np.flatnonzero(mismatch)[0])
        raise FerError(
            f"{_where(src, i)}: label_name {names.iloc[i]!r} does not match label {labels[i]} "
            f"({expected.iloc[i]!r} in the class list {list(classes)})"
        )

    dcols = [c for c in df.columns if c.startswith(DIST_PREFIX)]
    if dcols:
        expected_cols = dist_columns(classes)
        if sorted(dcols) != sorted(expected_cols):
            raise FerError(
                f"{src}: distribution columns {dcols} do not match the class list; expected {expected_cols}"
            )
        d = df[expected_cols].to_numpy(dtype=np.float64)
        present = ~np.isnan(d).all(axis=1)
        partial = np.isnan(d).any(axis=1) & present
        if partial.any():
            raise FerError(f"{_where(src, int(np.flatnonzero(partial)[0]))}: distribution has NaN entries")
        sums = d[present].sum(axis=1)
        bad = (np.abs(sums - 1.0) > DIST_TOLERANCE) | (d[present] < 0).any(axis=1)
        if bad.any():
            i = int(np.flatnonzero(present)[np.flatnonzero(bad)[0]])
            raise FerError(f"{_where(src, i)}: distribution sums to {d[i].sum():.4f} (must be non-negative and sum to 1)")


def _to_arrow(df: pd.DataFrame) -> pa.Table:
    fields, arrays = [], []
    for name in df.columns:
        typ = _column_type(name)
        col = df[name]
        if pa.types.is_string(typ):
            values = [None if (v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA) else str(v) for v in col]
            arrays.append(pa.array(values, type=typ))
        else:
            arrays.append(pa.array(col.to_numpy(), type=typ, from_pandas=True))
        fields.append(pa.field(name, typ))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def write_manifest(
    df: pd.DataFrame,
    classes: tuple[str, ...] | list[str],
    root: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    provenance: dict[str, Any] | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> Manifest:
    """Validate and write a manifest atomically; returns it as read back.

    The image root is stored relative to the manifest's directory (so a workspace can be moved
    together with its data) and also as an absolute path (so the manifest alone can be moved).
    If ``dest`` already holds the same content (:func:`content_sha256`) it is left untouched.
    """
    dest = Path(dest)
    classes = tuple(classes)
    df = df.reset_index(drop=True)
    validate_manifest(df, classes, str(dest))
    root_abs = Path(root).resolve()
    meta = {
        "schema_version": SCHEMA_VERSION,
        "kind": "manifest",
        "classes": list(classes),
        "root": os.path.relpath(root_abs, dest.resolve().parent),
        "root_abs": str(root_abs),
        "provenance": provenance or make_provenance("manifest"),
        **(extra_meta or {}),
    }
    if not _write_table_if_changed(_to_arrow(df), meta, dest):
        meta = read_parquet_meta(dest)  # identical content: the file (and its provenance) is kept as it was
    return Manifest(df=df, classes=classes, root=root_abs, meta=meta, path=dest)


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


def _resolve_root(path: Path, meta: dict[str, Any]) -> Path:
    rel = (path.resolve().parent / meta.get("root", ".")).resolve()
    if rel.is_dir():
        return rel
    absolute = Path(meta.get("root_abs", rel))
    return absolute if absolute.is_dir() else rel


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate a manifest parquet file."""
    path = Path(path)
    meta = read_parquet_meta(path)
    if meta.get("kind") != "manifest":
        raise FerError(f"{path}: is a {meta.get('kind')!r} artifact, not a manifest")
    classes = tuple(meta.get("classes") or ())
    df = pq.read_table(path).to_pandas()
    validate_manifest(df, classes, str(path))
    return Manifest(df=df, classes=classes, root=_resolve_root(path, meta), meta=meta, path=path)


def known_class_list(classes: list[str] | tuple[str, ...]) -> bool:
    """True for the canonical 7- or 8-class lists (other lists are allowed but unusual)."""
    return tuple(classes) in (CLASSES_7, CLASSES_8)


def checkpoint_meta(ckpt: dict[str, Any]) -> dict[str, Any]:
    """The metadata part of a loaded checkpoint (everything but the weights)."""
    return {k: v for k, v in ckpt.items() if k != "state_dict"}


def read_artifact_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Metadata of any fercli artifact, by file type.

    Parquet: the ``fercli`` schema metadata. Checkpoints (``.pt``/``.pth``): every key but the
    weights, loaded with ``weights_only=True``. JSON reports: the object itself. Anything else
    (ONNX, TorchScript): a sidecar ``<file>.json`` written beside it.
    """
    path = Path(path)
    if not path.exists():
        raise FerError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return read_parquet_meta(path)
    if suffix in (".pt", ".pth"):
        from fercli.fileio import safe_torch_load

        ckpt = safe_torch_load(path)
        if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
            raise FerError(f"{path}: not a fercli checkpoint (no format={CHECKPOINT_FORMAT!r} entry)")
        return checkpoint_meta(ckpt)
    if suffix == ".json":
        try:
            return json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise FerError(f"{path}: not valid JSON ({exc}); regenerate it") from exc
    sidecar = path.with_name(path.name + ".json")
    if sidecar.is_file():
        return json.loads(sidecar.read_text())
    raise FerError(f"{path}: no fercli metadata (expected a sidecar {sidecar.name})")


# ---- label distributions (`fer gen-labels`) -------------------------------------------------
# One row per labelled image: path (as in the manifest), split, single label, dist_<class>.
LABELS_KIND = "labels"


def validate_labels(df: pd.DataFrame, classes: tuple[str, ...] | list[str], src: str) -> None:
    """Raise unless ``df`` is a valid label-distribution table for ``classes``."""
    cols = dist_columns(classes)
    missing = [c for c in [COL_PATH, COL_SPLIT, COL_LABEL, *cols] if c not in df.columns]
    if missing:
        raise FerError(f"{src}: missing column(s) {', '.join(missing)}; regenerate it with `fer gen-labels`")
    if len(df) == 0:
        raise FerError(f"{src}: no rows")
    d = df[cols].to_numpy(dtype=np.float64)
    bad = np.isnan(d).any(axis=1) | (np.abs(d.sum(axis=1) - 1.0) > DIST_TOLERANCE) | (d < 0).any(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise FerError(f"{_where(src, i)}: distribution {np.round(d[i], 4).tolist()} is not a probability "
                       "distribution (NaN, negative, or does not sum to 1)")
    dup = df.duplicated(subset=[COL_PATH], keep="first").to_numpy()
    if dup.any():
        raise FerError(f"{_where(src, int(np.flatnonzero(dup)[0]))}: duplicate path {df[COL_PATH].iloc[int(np.flatnonzero(dup)[0])]!r}")


def write_labels(df: pd.DataFrame, classes: tuple[str, ...] | list[str], dest: str | os.PathLike[str],
                 provenance: dict[str, Any], extra_meta: dict[str, Any] | None = None) -> None:
    """Validate and write a label-distribution parquet atomically (left untouched if the content is the same)."""
    dest = Path(dest)
    df = df[[COL_PATH, COL_SPLIT, COL_LABEL, *dist_columns(classes)]].reset_index(drop=True)
    validate_labels(df, classes, str(dest))
    meta = {"schema_version": SCHEMA_VERSION, "kind": LABELS_KIND, "classes": list(classes),
            "provenance": provenance, **(extra_meta or {})}
    _write_table_if_changed(_to_arrow(df), meta, dest)


def read_labels(path: str | os.PathLike[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read and validate a label-distribution parquet: (table, metadata)."""
    path = Path(path)
    meta = read_parquet_meta(path)
    if meta.get("kind") != LABELS_KIND:
        raise FerError(f"{path}: is a {meta.get('kind')!r} artifact, not label distributions from `fer gen-labels`")
    df = pq.read_table(path).to_pandas()
    validate_labels(df, tuple(meta.get("classes") or ()), str(path))
    return df, meta
