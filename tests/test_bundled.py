"""The bundled FERPlus model: what `fer predict` and `fer eval` use when nothing else is given."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fercli.checkpoint import make_checkpoint, save_checkpoint
from fercli.classes import CLASSES_7, CLASSES_8
from fercli.cli import app
from fercli.inference import BUNDLED_ENV, BUNDLED_MODEL, resolve_model
from fercli.models import create_model, model_args
from fercli.workspace import Workspace

pytestmark = pytest.mark.usefixtures("one_thread")


def _checkpoint(path: Path) -> Path:
    torch.manual_seed(0)
    model = create_model("shufflenet_v2", 7).eval()
    return save_checkpoint(path, make_checkpoint(model, "shufflenet_v2", model_args("shufflenet_v2", 7), CLASSES_7, 48))


def test_resolution_order_given_then_workspace_then_bundled(workspace: Path, tmp_path: Path, monkeypatch):
    bundled = _checkpoint(tmp_path / "bundled.pt")
    monkeypatch.setenv(BUNDLED_ENV, str(bundled))
    ws = Workspace(workspace)
    art = resolve_model(ws)
    assert art.path == bundled and art.bundled and art.origin == "bundled"
    own = _checkpoint(workspace / "student" / "best.pt")
    assert resolve_model(ws).path == own and resolve_model(ws).origin == "workspace"
    other = _checkpoint(tmp_path / "other.pt")
    assert resolve_model(ws, other).path == other and resolve_model(ws, other).origin == "given"


def test_predict_falls_back_to_the_bundled_model_and_says_so(runner, workspace: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setenv(BUNDLED_ENV, str(_checkpoint(tmp_path / "bundled.pt")))
    cv2.imwrite(str(workspace / "face.png"), np.full((48, 48, 3), 128, np.uint8))
    res = runner.invoke(app, ["predict", "face.png", "--no-detect", "--json"])
    assert res.exit_code == 0, res.output
    assert "using student (bundled)" in res.stderr
    monkeypatch.setenv(BUNDLED_ENV, "none")
    res = runner.invoke(app, ["predict", "face.png", "--no-detect"])
    assert res.exit_code == 1 and "no bundled model either" in res.stderr


# ---- the model shipped in the package ---------------------------------------------------------
# the recipe study's bundle (experiments/bundle_recipe.py); experiments/results/bundled.json is the first model's
CARD = Path(__file__).resolve().parents[1] / "experiments" / "results" / "recipe" / "bundled.json"


def _card() -> dict:
    return json.loads(CARD.read_text())


@pytest.fixture
def shipped(monkeypatch) -> Path:
    """The shipped model; it must exist whenever its card (experiments/results/bundled.json) does."""
    monkeypatch.delenv(BUNDLED_ENV, raising=False)
    if not CARD.is_file():
        assert not BUNDLED_MODEL.is_file(), f"{BUNDLED_MODEL} ships without its card {CARD}"
        pytest.skip(f"no bundled model yet ({CARD} absent; experiments/bundle_recipe.py makes both)")
    assert BUNDLED_MODEL.is_file(), f"{CARD} describes {BUNDLED_MODEL}, which is missing from the package"
    return BUNDLED_MODEL


def test_shipped_model_is_small_safe_and_self_describing(shipped: Path):
    assert shipped.stat().st_size < 3_000_000
    ckpt = torch.load(shipped, map_location="cpu", weights_only=True)
    assert ckpt["arch"] == "lfer" and ckpt["classes"] == list(CLASSES_8) and ckpt["weights_dtype"] == "float16"
    card = _card()  # what docs/MODEL_CARD.md quotes describes exactly this file
    assert ckpt["config"]["arch"] == "lfer" and ckpt["config"]["targets"] == card["recipe"]["targets"]
    assert card["sha256"] == hashlib.sha256(shipped.read_bytes()).hexdigest()
    assert {k: ckpt["config"][k] for k in card["recipe"]} == card["recipe"]  # the card's schedule is the file's
    assert card["ferplus_valid_8"]["images"] == 3191 and 0.5 < card["ferplus_valid_8"]["accuracy"] <= 1


@pytest.mark.shared
def test_shipped_model_predicts_ferplus_faces_without_model_option(runner, workspace: Path, ferplus_dir: Path,
                                                                   shipped: Path):
    from fercli.importers import ImportConfig, load_dataset

    df = load_dataset(ImportConfig(format="ferplus", src=ferplus_dir)).df
    happy = df[(df["split"] == "valid") & (df["dist_happiness"] == 1.0)]["path"].head(20)  # all ten voters agree
    res = runner.invoke(app, ["predict", *(str(ferplus_dir / p) for p in happy), "--no-detect", "--json"])
    assert res.exit_code == 0, res.output
    assert "using student (bundled)" in res.stderr
    labels = [row["faces"][0]["label"] for row in json.loads(res.stdout)]
    assert len(labels) == 20 and labels.count("happiness") >= 18, labels


@pytest.mark.shared
def test_shipped_model_card_accuracy_is_reproduced_by_fer_eval(runner, workspace: Path, ferplus_dir: Path,
                                                               shipped: Path):
    card = _card()
    res = runner.invoke(app, ["data", "import", "ferplus", str(ferplus_dir)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["eval", "--split", "valid", "--json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert "using student (bundled)" in res.stderr
    assert report["images"] == card["ferplus_valid_8"]["images"]
    assert report["accuracy"] == pytest.approx(card["ferplus_valid_8"]["accuracy"], abs=1e-4)


@pytest.mark.shared
def test_shipped_model_predicts_a_photo_offline_with_no_options(runner, workspace: Path, shared_dir: Path,
                                                                shipped: Path, hub: Path):
    # hub: no detector weights cached, so `auto` picks haar
    res = runner.invoke(app, ["predict", str(shared_dir / "faces" / "single_face.jpg"), "--json"])
    assert res.exit_code == 0, res.output
    assert "using student (bundled)" in res.stderr and "detector: haar" in res.stderr
    (row,) = json.loads(res.stdout)
    assert len(row["faces"]) == 1 and set(row["faces"][0]["probs"]) == set(CLASSES_8)


def test_made_date_is_the_checkpoints_own_not_the_files_time(runner, workspace: Path, tmp_path: Path, monkeypatch):
    """A fresh clone gives every file the clone's time: "made ..." must come from the recorded provenance."""
    import os
    import shutil

    from fercli.artifact import format_time
    from fercli.schema.files import read_artifact_meta

    copy = Path(shutil.copy(BUNDLED_MODEL, tmp_path / "bundled.pt"))
    os.utime(copy, (946_684_800, 946_684_800))  # 2000-01-01: as if cloned then
    monkeypatch.setenv(BUNDLED_ENV, str(copy))
    made = format_time(read_artifact_meta(copy)["provenance"]["created"])
    assert made.startswith("20") and not made.startswith("2000-01-01")
    blank = workspace / "blank.png"
    cv2.imwrite(str(blank), np.full((64, 64, 3), 128, np.uint8))
    res = runner.invoke(app, ["predict", str(blank), "--no-detect"], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert f"using student (bundled): {copy} (made {made};" in res.stderr.replace("\n", " ")
