"""The manifest schema: round trip, validation messages, versioning, atomic writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from fercli.classes import CLASSES_7
from fercli.errors import FerError
from fercli.fileio import atomic_path, atomic_write_text
from fercli.schema import META_KEY, SCHEMA_VERSION, read_artifact_meta, read_manifest, write_manifest


def frame(n: int = 3, **extra) -> pd.DataFrame:
    df = pd.DataFrame({
        "path": [f"img/{i}.png" for i in range(n)],
        "split": ["train"] * (n - 1) + ["valid"],
        "label": [0, 1, -1][:n] + [0] * max(0, n - 3),
        "label_name": ["neutral", "happiness", None][:n] + ["neutral"] * max(0, n - 3),
    })
    for k, v in extra.items():
        df[k] = v
    return df


def test_round_trip_keeps_dtypes_root_and_metadata(tmp_path: Path):
    dist = np.eye(7, dtype=np.float32)[[0, 1, 2]]
    df = frame(box_x=[1.0, 2.0, 3.0], dataset="ferplus", **{f"dist_{c}": dist[:, i] for i, c in enumerate(CLASSES_7)})
    df["votes_unknown"] = [0, 1, 2]
    (tmp_path / "data" / "img").mkdir(parents=True)
    m = write_manifest(df, CLASSES_7, tmp_path / "data", tmp_path / "out" / "m.parquet")
    back = read_manifest(tmp_path / "out" / "m.parquet")
    assert back.classes == CLASSES_7 and back.root == (tmp_path / "data").resolve()
    assert back.meta["root"] == "../data" and back.meta["schema_version"] == SCHEMA_VERSION
    assert str(back.df["label"].dtype) == "int16" and str(back.df["box_x"].dtype) == "float32"
    assert str(back.df["votes_unknown"].dtype) == "int16"
    assert back.df["label_name"].isna().tolist() == [False, False, True]
    assert back.has_dist and back.vote_columns == ["votes_unknown"]
    assert back.image_path("img/0.png") == (tmp_path / "data" / "img" / "0.png").resolve()
    assert m.df.equals(df.reset_index(drop=True))


def test_root_falls_back_to_absolute_when_manifest_moves(tmp_path: Path):
    (tmp_path / "data").mkdir()
    write_manifest(frame(), CLASSES_7, tmp_path / "data", tmp_path / "a" / "m.parquet")
    (tmp_path / "elsewhere" / "deep").mkdir(parents=True)
    os.replace(tmp_path / "a" / "m.parquet", tmp_path / "elsewhere" / "deep" / "m.parquet")
    assert read_manifest(tmp_path / "elsewhere" / "deep" / "m.parquet").root == (tmp_path / "data").resolve()


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.drop(columns=["split"]), "missing required column"),
    (lambda d: d.assign(colour=1), "unknown column"),
    (lambda d: d.assign(split=["train", "dev", "valid"]), r"row 1\): split 'dev'"),
    (lambda d: d.assign(label=[0, 9, -1]), r"row 1\): label 9 outside"),
    (lambda d: d.assign(label_name=["neutral", "anger", None]), r"row 1\): label_name 'anger' does not match"),
    (lambda d: d.assign(path=["img/0.png", "../x.png", "c"]), r"row 1\): image path '../x.png' must be relative"),
    (lambda d: d.assign(path=["/abs.png", "b", "c"]), r"row 0\): image path '/abs.png'"),
    (lambda d: d.assign(path=["a", "b", "a"]), r"row 2\): duplicate row for 'a' \(first at row 0\)"),
    (lambda d: d.iloc[:0], "empty"),
    (lambda d: d.assign(**{f"dist_{c}": 0.5 for c in CLASSES_7}), r"distribution sums to 3.5"),
    (lambda d: d.assign(dist_neutral=1.0), "do not match the class list"),
])
def test_validation_says_what_is_wrong_and_writes_nothing(tmp_path: Path, mutate, message):
    dest = tmp_path / "m.parquet"
    dest.write_bytes(b"previous version")
    with pytest.raises(FerError, match=message):
        write_manifest(mutate(frame()), CLASSES_7, tmp_path, dest)
    assert dest.read_bytes() == b"previous version"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.parquet"]


def test_newer_schema_and_foreign_parquet_are_refused(tmp_path: Path):
    m = tmp_path / "m.parquet"
    write_manifest(frame(), CLASSES_7, tmp_path, m)
    table = pq.read_table(m)
    meta = json.loads(table.schema.metadata[META_KEY])
    meta["schema_version"] = SCHEMA_VERSION + 1
    pq.write_table(table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()}), m)
    with pytest.raises(FerError, match=rf"schema version {SCHEMA_VERSION + 1} by a newer fercli.*upgrade"):
        read_manifest(m)
    pq.write_table(table.replace_schema_metadata({}), m)
    with pytest.raises(FerError, match="without fercli metadata"):
        read_manifest(m)
    m.write_bytes(b"not parquet at all")
    with pytest.raises(FerError, match="not a readable parquet file"):
        read_manifest(m)


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path):
    dest = tmp_path / "a.txt"
    atomic_write_text(dest, "v1")
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert dest.read_text() == "v1" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_disk_full_is_a_clear_error(tmp_path: Path, monkeypatch):
    import errno

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(FerError, match=r"a.txt: disk full while writing; free some space"):
        atomic_write_text(tmp_path / "a.txt", "x")
    assert list(tmp_path.iterdir()) == []


def test_checkpoint_with_pickled_code_is_refused(tmp_path: Path):
    import torch

    bad = tmp_path / "bad.pt"
    torch.save({"format": "fercli.checkpoint", "obj": Path("x")}, bad)  # a Path object needs unpickling code
    with pytest.raises(FerError, match="refused to load"):
        read_artifact_meta(bad)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(1)}, other)
    with pytest.raises(FerError, match="not a fercli checkpoint"):
        read_artifact_meta(other)
