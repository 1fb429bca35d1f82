"""Shared fixtures: the real data in ../shared (skipped when absent) and a fresh workspace."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

SHARED_ENV = "FER_SHARED"

# `make test` runs the suite on pytest-xdist workers (one per core). Their environment says COLUMNS=80
# (LINES=24), which would cut the CLI's tables to 80 columns, unlike the plain runs the tests describe; and
# torch on every core in every worker would oversubscribe the cores (OpenMP barrier stalls made a tiny
# training run 4x slower beside one busy process), so each worker's torch gets one thread unless told otherwise.
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _name in ("COLUMNS", "LINES"):
        os.environ.pop(_name, None)
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def shared_root() -> Path:
    """$FER_SHARED, else ../shared beside the checkout."""
    return Path(os.environ.get(SHARED_ENV) or Path(__file__).resolve().parents[2] / "shared")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    root = shared_root()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root} (set {SHARED_ENV} to the shared/ folder)")
    return root


@pytest.fixture(scope="session")
def ferplus_dir(shared_dir: Path) -> Path:
    path = shared_dir / "datasets" / "ferplus"
    if not (path / "FER2013Train" / "label.csv").is_file():
        pytest.skip(f"FERPlus not found under {path}")
    return path


@pytest.fixture(scope="session")
def mobilenet_weights(shared_dir: Path) -> Path:
    """RetinaFace MobileNet-0.25 weights from shared/ (skipped when absent)."""
    path = shared_dir / "weights" / "retinaface" / "mobilenet0.25_Final.pth"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty workspace directory, also the current directory and $FER_WORKSPACE."""
    ws = tmp_path / "ws"
    ws.mkdir()
    monkeypatch.chdir(ws)
    monkeypatch.setenv("FER_WORKSPACE", str(ws))
    return ws


@pytest.fixture(scope="module")
def one_thread():
    """Torch on one intra-op thread for a module of many tiny forward passes: when other processes
    share the cores, OpenMP barrier stalls (a descheduled worker holds up every op) dominate."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache: $TORCH_HOME points at a temp dir (and no earlier set_dir overrides it),
    so nothing (detector weights, ImageNet weights) is found there."""
    import torch

    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return home / "hub"


# A small learnable image folder (class k is a bright block at grid position k), imported as the
# workspace's dataset: what the training-engine tests train on.
@pytest.fixture(scope="module")
def pattern_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from _fab import make_pattern_folder

    from fercli.classes import CLASSES_7

    return make_pattern_folder(tmp_path_factory.mktemp("pattern"), CLASSES_7, {"train": 12, "valid": 4})


@pytest.fixture
def ws(tmp_path: Path, pattern_root: Path):
    from fercli.importers import ImportConfig, run_import
    from fercli.workspace import Workspace

    ws = Workspace(tmp_path / "ws")
    run_import(ImportConfig(format="folder", src=pattern_root), ws)
    return ws
