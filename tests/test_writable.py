"""Output paths are checked before any work: one line, exit code 1, nothing left behind."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from fercli import fileio
from fercli.cli import app
from fercli.errors import FerError
from fercli.inference import BUNDLED_MODEL

needs_proc = pytest.mark.skipif(not sys.platform.startswith("linux") or not Path("/proc/self").exists(),
                                reason="needs Linux /proc (a folder nobody can write in)")


def test_check_writable_dir(tmp_path: Path):
    fileio.check_writable_dir(tmp_path / "new" / "deeper", "--annotate")
    assert not (tmp_path / "new").exists()  # the probe leaves no trace
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "file.mp4").write_bytes(b"x")
    with pytest.raises(FerError, match=r"^--annotate .*file.mp4: exists and is not a folder"):
        fileio.check_writable_dir(tmp_path / "file.mp4", "--annotate")
    with pytest.raises(FerError, match=r"file.mp4 is not a folder"):
        fileio.check_writable_dir(tmp_path / "file.mp4" / "sub", "DST")
    with pytest.raises(FerError, match=r"is a folder; pass a file name"):
        fileio.check_writable_file(tmp_path, "--out")
    fileio.check_writable_file(tmp_path / "a" / "model.onnx", "--out")
    assert not (tmp_path / "a").exists()


@needs_proc
def test_check_writable_dir_in_proc():
    with pytest.raises(FerError, match=r"^DST /proc/nope: cannot create the folder /proc/nope"):
        fileio.check_writable_dir("/proc/nope", "DST")


@needs_proc
def test_align_into_proc_is_one_line(runner, workspace: Path):
    import cv2
    import numpy as np

    (workspace / "raw").mkdir()
    cv2.imwrite(str(workspace / "raw" / "a.png"), np.zeros((64, 64, 3), np.uint8))
    res = runner.invoke(app, ["align", "raw", "/proc/nope", "--detector", "none"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.stderr.strip() == ("error: DST /proc/nope: cannot create the folder /proc/nope "
                                  "(the file system does not allow it); choose a writable location")


@needs_proc
def test_export_into_proc_is_one_line(runner, workspace: Path):
    res = runner.invoke(app, ["export", str(BUNDLED_MODEL), "-o", "/proc/nope/x.onnx"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.stderr.strip().startswith("error: --out /proc/nope/x.onnx: cannot create the folder /proc/nope")
