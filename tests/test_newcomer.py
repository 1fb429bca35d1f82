"""A newcomer's path through fercli (issue 14): a photo folder with class subfolders and nothing
else, the documented sequence typed twice, every option's bad values, and the rough edges found
on the way (a broken student, offline detection, slow start-up, small messages)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from fercli.cli import app
from fercli.schema import read_labels, read_manifest
from fercli.workspace import Workspace

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[1]


def photo_folder(root: Path, per_class: int = 5, seed: int = 0) -> Path:
    """``root/<class>/*.jpg``: drawn faces (fercli.synthetic), already aligned, no split folders."""
    from fercli.synthetic import EXPRESSIONS, draw_face

    rng = np.random.default_rng(seed)
    for name in EXPRESSIONS:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img, _ = draw_face(name, rng)
            assert cv2.imwrite(str(root / name / f"{name}_{i:02d}.jpg"), cv2.resize(img, (64, 64)))
    return root


# Budgets only: the commands are typed as the README says, plus detector flags.
BUDGETS = """
[align]
size = 32

[pretrain-teacher]
arch = "resnet18"
input_size = 32
epochs = 1
batch_size = 8
workers = 0

[gen-labels]
workers = 0

[train]
input_size = 32
epochs = 2
batch_size = 8
workers = 0

[eval]
workers = 0
"""

SEQUENCE = [
    ["align", "raw/", "aligned/", "--detector", "none"],  # the drawn faces are aligned crops
    ["pretrain-teacher"],
    ["gen-labels"],
    ["train", "--beta", "0.2"],
    ["eval"],
    ["predict", "img.jpg", "--no-detect"],
]
ARTIFACTS = ("aligned/manifest.parquet", "teacher/best.pt", "labels/labels.parquet", "student/best.pt")


def _status(runner: CliRunner) -> dict[str, Any]:
    res = runner.invoke(app, ["status", "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def test_photo_folder_sequence_typed_twice(runner: CliRunner, workspace: Path):
    photo_folder(workspace / "raw")
    from fercli.synthetic import draw_face

    cv2.imwrite(str(workspace / "img.jpg"), draw_face("happiness", np.random.default_rng(9))[0])
    (workspace / "fer.toml").write_text(BUDGETS)

    for attempt in (1, 2):
        mtimes = {a: (workspace / a).stat().st_mtime_ns for a in ARTIFACTS if (workspace / a).exists()}
        for args in SEQUENCE:
            res = runner.invoke(app, args)
            assert res.exit_code == 0, f"run {attempt}: fer {' '.join(args)}\n{res.output}"
            if args[0] == "align":
                assert "split 35 labelled images 80/10/10" in res.stderr  # announced, one line
                if attempt == 1:
                    assert _status(runner)["next"] == "fer pretrain-teacher"
        if attempt == 2:  # the second run rewrote nothing and invalidated nothing
            assert {a: (workspace / a).stat().st_mtime_ns for a in ARTIFACTS} == mtimes
            assert "is up to date" in runner.invoke(app, ["train", "--beta", "0.2"]).stdout

    st = _status(runner)
    states = {r["kind"]: r["state"] for r in st["artifacts"]}
    assert states == {"dataset": "ok", "teacher": "ok", "labels": "ok", "student": "ok", "eval": "ok",
                      "export": "missing"}
    assert st["next"] == "fer export"
    student = next(r for r in st["artifacts"] if r["kind"] == "student")
    assert student["summary"]["epochs_run"] == 2
    # `fer status` of the trained workspace, as its own process: read from the state, without torch
    code = ("import sys; from fercli.cli import app\ntry: app(['status'])\nexcept SystemExit: pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO TORCH', file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=workspace,
                         env={**os.environ, "COLUMNS": "200"})
    assert "next: fer export" in out.stdout and out.stderr.strip().endswith("NO TORCH"), out.stderr

    # Every stage agreed on the split, and fer eval scored images no stage trained on.
    df = read_manifest(workspace / "aligned" / "manifest.parquet").df
    by_split = {s: set(df.loc[df["split"] == s, "path"]) for s in ("train", "valid", "test")}
    assert [len(by_split[s]) for s in ("train", "valid", "test")] == [21, 7, 7]
    labels, _ = read_labels(workspace / "labels" / "labels.parquet")
    assert set(labels["path"]) == by_split["train"]
    report = json.loads((workspace / "eval" / "report.json").read_text())
    assert report["manifest"]["split"] == "test" and report["images"] == 7
    predictions = (workspace / "eval" / "predictions.csv").read_text()
    assert all(Path(p).name in predictions for p in by_split["test"])
    assert not any(Path(p).name in predictions for p in by_split["train"])


# ---- every option of every command, fed a value out of its range ------------------------------------

def _commands(group: Any = None, prefix: tuple[str, ...] = ()):
    group = group or typer.main.get_command(app)
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, prefix + (name,))
        else:
            yield prefix + (name,), cmd


# What each command needs to start (valid positional values, and options that keep a mistake cheap),
# so that the option under test is the only thing wrong.
BASE: dict[tuple[str, ...], tuple[dict[str, str], list[str]]] = {
    ("data", "import"): ({"format": "folder", "src": "raw"}, []),
    ("data", "info"): ({}, []),
    ("align",): ({"src": "raw", "dst": "aligned"}, ["--detector", "none"]),
    ("pretrain-teacher",): ({}, []),
    ("gen-labels",): ({}, []),
    ("train",): ({}, []),
    ("calibrate",): ({}, []),
    ("eval",): ({}, []),
    ("bench",): ({"models": "lfer"}, ["--no-latency"]),
    ("export",): ({}, []),
    ("predict",): ({"inputs": "img.png"}, ["--no-detect"]),
    ("serve",): ({}, []),  # every bad value is refused before the model loads or a port opens
    ("doctor",): ({}, []),
    ("status",): ({}, []),
    ("demo",): ({}, ["--out", "demo_out", "--tiny"]),
}
OUTPUTS = {"out", "dst", "annotate", "images_dir"}  # paths a command writes: bad = under an existing file
BAD_BY_NAME = {("bench", "size"): ["17", "bogus"], ("bench", "batch"): ["0", "bogus"]}
BAD_BY_TYPE = {int: ["-7"], float: ["-1", "nan"], str: ["bogus"]}


def _cases():
    for command, cmd in _commands():
        positional, _ = BASE[command]
        for p in cmd.params:
            if getattr(p, "is_flag", False) or p.name in ("json_out", "csv_out"):
                continue  # on/off switches have no out-of-range value
            if p.param_type_name == "argument" and (p.nargs == -1 or p.multiple):
                continue  # lists of inputs (predict's images, bench's models) are reported per input
            typ = p.type_descriptor.annotation
            if (command[-1], p.name) in BAD_BY_NAME:
                values = BAD_BY_NAME[(command[-1], p.name)]
            elif typ is Path or getattr(typ, "__name__", "") == "Path":
                values = ["afile/sub"] if p.name in OUTPUTS else ["missing/nope.file"]
            else:
                values = BAD_BY_TYPE.get(typ, ["bogus"])
            for value in values:
                yield pytest.param(command, p, value, id=f"{' '.join(command)} {p.opts[0] if p.opts else p.name} {value}")


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


@pytest.mark.parametrize("command, param, value", list(_cases()))
def test_every_option_refuses_a_bad_value_up_front(runner: CliRunner, workspace: Path, command, param, value):
    (workspace / "raw" / "happiness").mkdir(parents=True)
    cv2.imwrite(str(workspace / "raw" / "happiness" / "a.png"), np.full((48, 48, 3), 128, np.uint8))
    cv2.imwrite(str(workspace / "img.png"), np.full((48, 48, 3), 128, np.uint8))
    (workspace / "afile").write_text("a file where a folder would go\n")
    positional, options = BASE[command]
    args = list(command)
    cmd = dict(_commands())[command]
    for p in cmd.params:
        if p.param_type_name == "argument":
            if p.name == param.name:
                args.append(value)
            elif p.name in positional:
                args.append(positional[p.name])
    args += options
    if param.param_type_name == "option":
        args += [param.opts[0], value]
    before = _tree(workspace)
    res = runner.invoke(app, args)
    assert res.exit_code != 0, f"fer {' '.join(args)} was accepted:\n{res.output}"
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in res.output
    errors = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: "), res.output
    name = param.opts[0] if param.param_type_name == "option" else param.name.upper()
    assert name in errors[0] or value in errors[0], errors[0]
    assert _tree(workspace) == before, f"fer {' '.join(args)} wrote something"


def test_the_case_table_covers_every_command():
    assert {c for c, _ in _commands()} == set(BASE)
    covered = {(c[-1], p.name) for c, p, _ in (case.values for case in _cases())}
    assert {("predict", "min_score"), ("align", "min_score"), ("import", "split_fractions"), ("train", "beta"),
            ("eval", "split"), ("align", "src"), ("demo", "format")} <= covered


# ---- item 3: a photo folder without splits gets one --------------------------------------------------

def test_folder_import_splits_once_stratified_and_seeded(runner: CliRunner, workspace: Path):
    photo_folder(workspace / "raw", per_class=10)
    res = runner.invoke(app, ["data", "import", "folder", "raw", "--json"])
    assert res.exit_code == 0, res.output
    df = read_manifest(workspace / "data" / "manifest.parquet").df
    counts = df.groupby(["label_name", "split"]).size().unstack()
    assert (counts["train"] == 8).all() and (counts["valid"] == 1).all() and (counts["test"] == 1).all()
    assert any("80/10/10" in n for n in json.loads(res.stdout)["notes"])
    first = df.set_index("path")["split"].to_dict()
    # The same folder imported again: the same split, so nothing downstream goes stale.
    sha = Workspace(workspace).sha256(workspace / "data" / "manifest.parquet")
    assert runner.invoke(app, ["data", "import", "folder", "raw"]).exit_code == 0
    assert Workspace(workspace).sha256(workspace / "data" / "manifest.parquet") == sha
    assert read_manifest(workspace / "data" / "manifest.parquet").df.set_index("path")["split"].to_dict() == first

    res = runner.invoke(app, ["data", "import", "folder", "raw", "--split-fractions", "0.6,0.2,0.2", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["splits"] == {"test": 14, "train": 42, "valid": 14}
    res = runner.invoke(app, ["data", "import", "folder", "raw", "--no-split", "--json"])
    assert json.loads(res.stdout)["splits"] == {"train": 70}
    st = _status(runner)
    assert st["next"] == "fer pretrain-teacher --val-fraction 0.1" and "no labelled valid split" in st["note"]


def test_split_folders_and_unlabelled_folders_are_left_alone(runner: CliRunner, workspace: Path):
    from _fab import write_image

    for split in ("train", "test"):
        write_image(workspace / "ds" / split / "happy" / "a.png")
    write_image(workspace / "photos" / "x.png")
    res = runner.invoke(app, ["data", "import", "folder", "ds", "--json"])
    assert json.loads(res.stdout)["splits"] == {"test": 1, "train": 1}
    res = runner.invoke(app, ["data", "import", "folder", "photos", "--json"])
    assert json.loads(res.stdout)["splits"] == {"train": 1}
    st = _status(runner)
    assert st["next"].startswith("fer align") and "no labelled images" in st["note"]


def test_split_counts_keep_small_classes_in_every_split():
    from fercli.importers.folder import assign_splits, split_counts

    assert split_counts(3, (0.8, 0.1, 0.1)) == (1, 1, 1) and split_counts(2, (0.8, 0.1, 0.1)) == (2, 0, 0)
    assert split_counts(100, (0.7, 0.2, 0.1)) == (70, 20, 10)
    paths = [f"c/{i}.png" for i in range(20)]
    a = assign_splits(paths, [0] * 20, (0.8, 0.1, 0.1))
    # adding a photo moves at most one other image between splits
    b = assign_splits(paths + ["c/new.png"], [0] * 21, (0.8, 0.1, 0.1))[:20]
    assert sum(x != y for x, y in zip(a, b)) <= 1


# ---- item 4: a broken model file says what is wrong with it --------------------------------------------

def test_truncated_workspace_student_is_named(runner: CliRunner, workspace: Path):
    from fercli.inference import BUNDLED_MODEL

    (workspace / "student").mkdir()
    (workspace / "student" / "best.pt").write_bytes(BUNDLED_MODEL.read_bytes()[:2000])
    cv2.imwrite(str(workspace / "img.png"), np.full((48, 48, 3), 128, np.uint8))
    for args in (["predict", "img.png", "--no-detect"], ["eval"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 1 and "Traceback" not in res.output
        assert res.stderr.startswith("error: the workspace's student student/best.pt cannot be used: not a readable "
                                     "PyTorch file"), res.stderr
        assert "no model" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_refused_bundled_model_file_is_named(runner: CliRunner, workspace: Path, monkeypatch):
    import torch

    cv2.imwrite(str(workspace / "img.png"), np.full((48, 48, 3), 128, np.uint8))
    bad = {"garbage.pt": b"not a checkpoint at all", "plain.pt": None}
    (workspace / "garbage.pt").write_bytes(bad["garbage.pt"])
    torch.save({"weights": torch.zeros(2)}, workspace / "plain.pt")  # loads, but is not a fercli checkpoint
    for name, why in (("garbage.pt", "not a readable PyTorch file"), ("plain.pt", "not a fercli checkpoint")):
        monkeypatch.setenv("FER_BUNDLED_MODEL", name)
        res = runner.invoke(app, ["predict", "img.png", "--no-detect"])
        assert res.exit_code == 1 and "Traceback" not in res.output, res.output
        assert f"$FER_BUNDLED_MODEL names {name}, which cannot be used: {why}" in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1


# ---- item 5: fer align chooses its detector offline like fer predict --------------------------------

def test_align_auto_detector_offline_falls_back_to_haar(runner: CliRunner, workspace: Path, hub: Path,
                                                        shared_dir: Path):
    faces = workspace / "photos" / "happiness"
    faces.mkdir(parents=True)
    (faces / "one.jpg").write_bytes((shared_dir / "faces" / "single_face.jpg").read_bytes())
    res = runner.invoke(app, ["align", "photos", "aligned", "--size", "64", "--no-split"])
    assert res.exit_code == 0, res.output
    line = next(ln for ln in res.stderr.splitlines() if ln.startswith("detector:"))
    assert line.startswith("detector: haar (auto: no RetinaFace weights in torch's hub cache")
    df = read_manifest(workspace / "aligned" / "manifest.parquet").df
    assert list(df["status"]) == ["ok"] and cv2.imread(str(workspace / "aligned" / df["path"][0])).shape == (64, 64, 3)
    meta = json.loads(json.dumps(read_manifest(workspace / "aligned" / "manifest.parquet").meta["align"]))
    assert meta["settings"]["detector"] == "haar"


def test_auto_detector_prefers_cached_resnet_then_mobilenet(hub: Path, tmp_path: Path):
    from fercli.align.detectors import DETECTORS, auto_detector, hub_weights_path, weights_variant

    assert auto_detector()[0] == "haar"
    mobile = hub_weights_path(DETECTORS["retinaface-mobilenet"])
    mobile.parent.mkdir(parents=True)
    mobile.write_bytes(b"")
    assert auto_detector()[0] == "retinaface-mobilenet"
    hub_weights_path(DETECTORS["retinaface-resnet50"]).write_bytes(b"")
    assert auto_detector()[0] == "retinaface-resnet50"
    assert weights_variant(tmp_path / "mobilenet0.25_Final.pth") == "retinaface-mobilenet"


def test_explicit_mobilenet_weights_are_recognised_by_their_parameters(tmp_path: Path):
    import torch

    from fercli.align.detectors import auto_detector

    torch.save({"body.stage1.0.0.weight": torch.zeros(1)}, tmp_path / "renamed.pth")
    assert auto_detector(tmp_path / "renamed.pth")[0] == "retinaface-mobilenet"


def test_weights_missing_errors_name_the_alternatives(hub: Path, runner: CliRunner, workspace: Path):
    from fercli.align.detectors import DETECTORS, resolve_weights
    from fercli.errors import FerError

    with pytest.raises(FerError) as exc:
        resolve_weights(DETECTORS["retinaface-mobilenet"])
    assert "--detector haar" in str(exc.value)
    with pytest.raises(FerError) as exc:
        resolve_weights(DETECTORS["retinaface-mobilenet"], workspace / "nope.pth")
    assert "--detector haar" in str(exc.value)
    (workspace / "photos").mkdir()
    cv2.imwrite(str(workspace / "photos" / "a.png"), np.full((48, 48, 3), 128, np.uint8))
    res = runner.invoke(app, ["align", "photos", "out", "--detector-weights", "nope.pth"])
    assert res.exit_code == 1 and "--detector retinaface-mobilenet --detector-weights" in res.stderr
    assert "--detector haar" in res.stderr


# ---- item 11: start-up ------------------------------------------------------------------------------

def test_importing_the_cli_imports_no_heavy_library():
    code = ("import sys, fercli.cli; print(sorted(m for m in ('torch', 'torchvision', 'cv2', 'pandas', 'pyarrow', "
            "'numpy', 'onnx', 'onnxruntime', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]", out.stdout


def test_status_and_help_run_without_torch(tmp_path: Path):
    """`fer status` in a trained workspace reads what it shows from the state cache, not the checkpoints."""
    code = ("import sys; from fercli.cli import app\n"
            "for args in (['--help'], ['status'], ['align', '--help'], ['train', '--help'], ['data', 'info', '--help']):\n"
            "    try: app(args)\n"
            "    except SystemExit: pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO TORCH', file=sys.stderr)")
    env = {**os.environ, "FER_WORKSPACE": str(tmp_path), "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert out.stderr.strip().endswith("NO TORCH"), out.stderr


def test_names_spelled_out_for_help_agree_with_their_sources():
    from fercli.align.config import MODES
    from fercli.commands.bench import MODEL_NAMES
    from fercli.commands.data import FORMATS as HELP_FORMATS
    from fercli.commands.train import RECIPE_NAMES
    from fercli.config import DETECTOR_CHOICES
    from fercli.importers import FORMATS
    from fercli.models import list_models
    from fercli.training import RECIPES

    assert tuple(list_models()) == MODEL_NAMES and tuple(RECIPES) == RECIPE_NAMES
    assert FORMATS == HELP_FORMATS and set(MODES) == set(DETECTOR_CHOICES)


# ---- item 12: small ones --------------------------------------------------------------------------

def test_format_and_detector_errors_list_auto(runner: CliRunner, workspace: Path):
    (workspace / "raw").mkdir()
    for args in (["data", "import", "bogus", "raw"], ["align", "raw", "out", "--detector", "bogus"],
                 ["predict", "x.png", "--detector", "bogus"]):
        res = runner.invoke(app, args)
        assert res.exit_code == 1 and "auto" in res.stderr, res.output
    from fercli.align.detectors import load_detector
    from fercli.errors import FerError

    with pytest.raises(FerError, match="auto"):
        load_detector("bogus")


def test_a_folder_given_as_manifest(runner: CliRunner, workspace: Path):
    photo_folder(workspace / "raw", per_class=2)
    assert runner.invoke(app, ["align", "raw", "aligned", "--detector", "none", "--size", "32"]).exit_code == 0
    res = runner.invoke(app, ["data", "info", "aligned", "--json"])  # the folder holding the manifest: used
    assert res.exit_code == 0 and json.loads(res.stdout)["rows"] == 14, res.output
    res = runner.invoke(app, ["data", "info", "raw/happiness"])
    assert res.exit_code == 1 and "sidecar" not in res.stderr
    assert "raw/happiness: is a folder, not a dataset manifest (.parquet)" in res.stderr, res.stderr


def test_teacher_out_help_names_the_teacher_folder(runner: CliRunner):
    res = runner.invoke(app, ["pretrain-teacher", "--help"], env={"COLUMNS": "200"})
    assert "WORKSPACE/teacher" in res.stdout and "WORKSPACE/student" not in res.stdout
    res = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert "WORKSPACE/student" in res.stdout


def test_status_counts_the_epochs_run_not_those_at_the_best(tmp_path: Path):
    from fercli.workspace import run_summary

    run = tmp_path / "student"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch,val_acc\n1,0.5\n2,0.4\n")
    summary = {"arch": "lfer", "best_epoch": 1, "epochs_run": 1}  # what best.pt records at epoch 1
    assert run_summary("student", run / "best.pt", summary)["epochs_run"] == 2
    assert run_summary("dataset", run / "best.pt", summary)["epochs_run"] == 1


def test_tables_are_not_cut_at_80_columns(runner: CliRunner, workspace: Path):
    long = "a_rather_long_folder_name_that_a_user_might_really_have" * 2
    photo_folder(workspace / "raw", per_class=1)
    assert runner.invoke(app, ["align", "raw", long, "--detector", "none", "--size", "32"]).exit_code == 0
    res = runner.invoke(app, ["status"], env={"COLUMNS": ""})  # output that is not a terminal
    assert f"{long}/manifest.parquet" in res.stdout and "…" not in res.stdout
    res = runner.invoke(app, ["status"], env={"COLUMNS": "60"})  # a narrow terminal: folded, not cut
    assert "…" not in res.stdout
    assert long[:20] in res.stdout.replace("│", "").replace(" ", "").replace("\n", "")
