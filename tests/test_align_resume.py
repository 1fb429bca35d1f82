"""Interrupted `fer align` runs (Ctrl-C, SIGTERM, SIGKILL) lose nothing and resume with every image once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from fercli.align import AlignConfig, run_align
from fercli.align.journal import JOURNAL_NAME
from fercli.schema import read_manifest, read_parquet_meta

REPO = Path(__file__).resolve().parents[1]


def _make_photos(folder: Path, n: int, size: int = 64, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    names = []
    for i in range(n):
        sub = folder / ("a" if i % 2 else "b")
        sub.mkdir(parents=True, exist_ok=True)
        img = cv2.GaussianBlur(rng.integers(0, 255, (size, size, 3), dtype=np.uint8), (5, 5), 0)
        cv2.imwrite(str(sub / f"img{i:04d}.jpg"), img)
        names.append(f"{sub.name}/img{i:04d}.jpg")
    return sorted(names)


def _crop_files(dst: Path) -> set[str]:
    """Visible image files under DST (temporary files are hidden dot-files)."""
    return {p.relative_to(dst).as_posix() for p in dst.rglob("*")
            if p.is_file() and not p.name.startswith(".") and p.suffix != ".parquet"}


def _assert_complete(dst: Path, names: list[str]) -> pd.DataFrame:
    m = read_manifest(dst / "manifest.parquet")
    df = m.df
    assert sorted(df["src_path"]) == names  # every image exactly once
    assert (df["status"] == "ok").all()
    assert set(df["path"]) == _crop_files(dst)  # every crop in the manifest, nothing extra
    assert m.meta["align"]["complete"] is True
    for p in df["path"][:5]:
        assert cv2.imread(str(dst / p)).shape == (32, 32, 3)
    return df


def test_ctrl_c_part_way_then_rerun_completes(tmp_path: Path) -> None:
    names = _make_photos(tmp_path / "src", 40)
    cfg = AlignConfig(detector="none", size=32, batch_size=4, workers=0)

    def interrupt_after(batches: int):
        def track(iterable, description="", total=None):
            for i, item in enumerate(iterable):
                if i == batches:
                    raise KeyboardInterrupt
                yield item
        return track

    with pytest.raises(KeyboardInterrupt):
        run_align(cfg, tmp_path / "src", tmp_path / "dst", track=interrupt_after(3))
    partial = read_manifest(tmp_path / "dst" / "manifest.parquet")
    assert len(partial.df) == 12 and partial.meta["align"]["complete"] is False
    assert partial.meta["provenance"]["summary"]["pending"] == 28
    assert set(partial.df["path"]) == _crop_files(tmp_path / "dst")

    result = run_align(cfg, tmp_path / "src", tmp_path / "dst")
    assert (result.processed, result.skipped) == (28, 12)
    _assert_complete(tmp_path / "dst", names)


def _journal_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _start_cli(src: Path, dst: Path, ws: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "fercli", "-q", "align", str(src), str(dst), "--detector", "none",
           "--size", "32", "--batch-size", "2", "--workers", "0", "--json"]
    env = {**os.environ, "FER_WORKSPACE": str(ws), "PYTHONPATH": str(REPO)}
    return subprocess.Popen(cmd, cwd=ws, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_killed_run_resumes_with_every_image_once(tmp_path: Path, sig: signal.Signals) -> None:
    names = _make_photos(tmp_path / "src", 500, size=160)
    ws, dst = tmp_path / "ws", tmp_path / "dst"
    ws.mkdir()
    journal = dst / JOURNAL_NAME
    proc = _start_cli(tmp_path / "src", dst, ws)
    deadline = time.monotonic() + 120
    while _journal_lines(journal) < 1 + 20 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    done = _journal_lines(journal) - 1
    assert 20 <= done < len(names), "the run must be stopped part way"
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:  # SIGTERM is handled like Ctrl-C: the manifest of finished images is written, exit 130
        assert proc.returncode == 130, err.decode()
        assert b"rerun the same command to resume" in err
        meta = read_parquet_meta(dst / "manifest.parquet")
        assert meta["align"]["complete"] is False and meta["align"]["images"] == done
    # every journaled image has its crop on disk
    entries = [json.loads(line) for line in journal.read_text().splitlines()[1:] if line.strip()]
    for e in entries:
        assert all((dst / r["path"]).is_file() for r in e["rows"])

    proc = _start_cli(tmp_path / "src", dst, ws)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    summary = json.loads(out)
    assert summary["skipped_done_before"] >= done and summary["processed"] + summary["skipped_done_before"] == len(names)
    df = _assert_complete(dst, names)
    assert len(df) == len(names)
    meta = read_parquet_meta(dst / "manifest.parquet")
    assert meta["provenance"]["summary"]["images"] == len(names)
