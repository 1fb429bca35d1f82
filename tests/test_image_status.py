"""One vocabulary of statuses and reasons for bad files, in `fer align` and `fer predict` alike."""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from fercli.cli import app
from fercli.inference import BUNDLED_MODEL


def _png_with_bad_filter(path: Path) -> None:
    """Valid chunk CRCs, invalid data (filter type 7): only the decoder notices; libpng complains on stderr."""
    img = np.random.default_rng(0).integers(0, 255, (20, 20, 3), np.uint8)
    data = cv2.imencode(".png", img)[1].tobytes()
    raw = b"".join(bytes([7]) + img[i].tobytes() for i in range(20))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    path.write_bytes(data[:33] + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def bad_folder(root: Path) -> Path:
    src = root / "raw"
    src.mkdir(parents=True)
    good = cv2.imencode(".png", np.full((64, 64, 3), 100, np.uint8))[1].tobytes()
    (src / "good.png").write_bytes(good)
    (src / "empty.png").write_bytes(b"")
    (src / "text.jpg").write_text("not an image\n")
    (src / "truncated.png").write_bytes(good[: len(good) // 2])
    corrupt = bytearray(good)
    corrupt[60:70] = bytes(b ^ 0xFF for b in corrupt[60:70])  # inside IDAT: its CRC no longer matches
    (src / "corrupt.png").write_bytes(bytes(corrupt))
    _png_with_bad_filter(src / "badfilter.png")
    os.symlink("loop_b.png", src / "loop_a.png")
    os.symlink("loop_a.png", src / "loop_b.png")
    os.symlink("gone.png", src / "dangling.png")
    return src


EXPECTED = {
    "good.png": ("ok", None),
    "empty.png": ("unreadable", "empty file (0 bytes)"),
    "loop_a.png": ("unreadable", "symbolic link loop (too many levels of symbolic links)"),
    "loop_b.png": ("unreadable", "symbolic link loop (too many levels of symbolic links)"),
    "dangling.png": ("missing", "broken symbolic link (its target does not exist)"),
}


def test_align_and_predict_report_bad_files_alike(runner, workspace: Path, capfd):
    src = bad_folder(workspace)
    res = runner.invoke(app, ["align", str(src), "aligned", "--detector", "none", "--size", "64", "--json"])
    assert res.exit_code == 0, res.output
    m = pd.read_parquet(workspace / "aligned" / "manifest.parquet")
    via_align = {r.src_path: (r.status, r.reason if isinstance(r.reason, str) else None) for r in m.itertuples()}

    res = runner.invoke(app, ["predict", str(src), "--no-detect", "--model", str(BUNDLED_MODEL), "--json"])
    assert res.exit_code == 1
    via_predict = {Path(r["input"]).name: (r["status"], r["reason"]) for r in json.loads(res.stdout)}

    assert via_align == via_predict
    for name, expected in EXPECTED.items():
        assert via_align[name] == expected, name
    assert via_align["text.jpg"] == ("unreadable", "not an image (unrecognised file format)")
    assert via_align["truncated.png"][0] == "unreadable" and via_align["truncated.png"][1].startswith("truncated PNG")
    assert via_align["corrupt.png"] == ("unreadable", "corrupt PNG file (bad header checksum in IDAT)")
    assert via_align["badfilter.png"][0] == "unreadable" and "bad adaptive filter" in via_align["badfilter.png"][1]
    from fercli.imagestatus import STATUSES

    assert {s for s, _ in via_align.values()} <= set(STATUSES)
    # The C decoders said nothing on the real stderr: the reasons carry it.
    err = capfd.readouterr().err
    assert "libpng" not in err and "Corrupt JPEG" not in err


def test_predict_csv_has_the_reason(runner, workspace: Path):
    src = bad_folder(workspace)
    res = runner.invoke(app, ["predict", str(src / "dangling.png"), str(src / "loop_a.png"), str(src / "good.png"),
                              "nothing_here.png", "--no-detect", "--model", str(BUNDLED_MODEL), "--csv"])
    assert res.exit_code == 1
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    got = [(Path(r["input"]).name, r["status"], r["reason"]) for r in rows]
    assert got == [("dangling.png", "missing", "broken symbolic link (its target does not exist)"),
                   ("loop_a.png", "unreadable", "symbolic link loop (too many levels of symbolic links)"),
                   ("good.png", "ok", ""),
                   ("nothing_here.png", "missing", "file not found")]
    assert rows[2]["score"] == "-"  # --no-detect: no detector score


def test_path_problem(tmp_path: Path):
    from fercli.imagestatus import path_problem

    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    assert path_problem(tmp_path / "a") == ("unreadable", "symbolic link loop (too many levels of symbolic links)")
    assert path_problem(tmp_path / "none.jpg") == ("missing", "file not found")
    assert path_problem(tmp_path) == ("unreadable", "is a directory, not an image")
    (tmp_path / "f.jpg").write_bytes(b"x")
    assert path_problem(tmp_path / "f.jpg") is None
    assert path_problem(tmp_path / "f.jpg" / "g.jpg") == ("missing", "file not found")


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root reads any file")
def test_permission_denied_is_unreadable(tmp_path: Path):
    from fercli.align.imageio import ImageProblem, load_image

    p = tmp_path / "secret.png"
    p.write_bytes(b"\x89PNG")
    p.chmod(0)
    with pytest.raises(ImageProblem) as info:
        load_image(p)
    assert (info.value.status, info.value.reason) == ("unreadable", "permission denied")
