"""Manifest and label-table columns: names, Arrow types, the ``dist_``/``votes_`` prefixes."""

from __future__ import annotations

from fercli.schema.common import np, pa, pd

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

