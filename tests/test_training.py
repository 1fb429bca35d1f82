"""Training engine, gen-labels and the teacher -> labels -> student sequence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from _fab import ferplus_subset
from typer.testing import CliRunner

from fercli.checkpoint import load_checkpoint, make_checkpoint, model_from_checkpoint, save_checkpoint
from fercli.classes import CLASSES_7, CLASSES_8
from fercli.cli import app
from fercli.augment import augment_batch, build_augment
from fercli.errors import FerError
from fercli.gen_labels import GenLabelsConfig, run_gen_labels
from fercli.losses import LFERLoss
from fercli.models import create_model, model_args
from fercli.schema import dist_columns, read_labels, read_manifest, write_labels, write_manifest
from fercli.training import TeacherConfig, TrainConfig, run_train
from fercli.workspace import Workspace

TINY = dict(input_size=32, batch_size=16, workers=0, threads=1)


def test_teacher_labels_student_sequence(ws: Workspace):
    t = run_train(TeacherConfig(arch="resnet18", epochs=2, **TINY), ws, kind="teacher")
    assert t.best == ws.root / "teacher" / "best.pt" and ws.current_path("teacher") == t.best
    assert (ws.root / "teacher" / "metrics.csv").is_file() and (ws.root / "teacher" / "curves.png").is_file()
    assert len(t.history) == 2 and t.best_row is not None

    res = run_gen_labels(GenLabelsConfig(workers=0, flip=True), ws)
    df, meta = read_labels(res.out)
    assert len(df) == 7 * 12 and set(df["split"]) == {"train"}
    assert np.allclose(df[dist_columns(CLASSES_7)].sum(axis=1), 1.0, atol=1e-5)
    assert meta["classes"] == list(CLASSES_7) and meta["teacher_sha256"] == ws.sha256(t.best)
    assert meta["provenance"]["inputs"]["teacher"]["sha256"] == ws.sha256(t.best)

    s = run_train(TrainConfig(arch="lfer", epochs=2, beta=0.2, **TINY), ws, kind="student")
    assert s.targets == "teacher" and set(s.inputs) == {"dataset", "labels"}
    model, ckpt = model_from_checkpoint(s.best)
    assert ckpt["arch"] == "lfer" and ckpt["classes"] == list(CLASSES_7) and ckpt["input_size"] == 32
    assert ckpt["config"]["beta"] == 0.2 and ckpt["provenance"]["inputs"]["labels"]["path"] == "labels/labels.parquet"
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 7)

    # a new teacher makes the labels stale: the student refuses them, naming the command
    run_train(TeacherConfig(arch="resnet18", epochs=1, seed=1, overwrite=True, **TINY), ws, kind="teacher")
    with pytest.raises(FerError, match="rerun `fer gen-labels`"):
        run_train(TrainConfig(arch="lfer", epochs=1, overwrite=True, **TINY), ws)


def test_gen_labels_ensemble_is_the_mean_of_its_teachers(ws: Workspace, tmp_path: Path, runner: CliRunner):
    """--ensemble averages the teachers' softmax, each teacher at its own input size; a repeat is refused."""
    def teacher(name: str, seed: int, size: int) -> Path:  # untrained weights: only the averaging is under test
        torch.manual_seed(seed)
        model = create_model("shufflenet_v2", 7).eval()
        return save_checkpoint(tmp_path / f"{name}.pt", make_checkpoint(model, "shufflenet_v2",
                                                                            model_args("shufflenet_v2", 7), CLASSES_7, size))

    a, b = teacher("a", 0, 32), teacher("b", 1, 48)
    one = {t: read_labels(run_gen_labels(GenLabelsConfig(teacher=t, out=tmp_path / f"{t.stem}.parquet",
                                                         workers=0, flip=True), ws).out)[0] for t in (a, b)}
    res = run_gen_labels(GenLabelsConfig(teacher=a, ensemble=(b,), out=tmp_path / "ens.parquet", workers=0,
                                         flip=True), ws)
    df, meta = read_labels(res.out)
    cols = dist_columns(CLASSES_7)
    mean = (one[a][cols].to_numpy(np.float64) + one[b][cols].to_numpy(np.float64)) / 2
    assert np.allclose(df[cols].to_numpy(np.float64), mean, atol=1e-6)
    assert not np.allclose(one[a][cols].to_numpy(), one[b][cols].to_numpy(), atol=1e-3)  # the mean is not either one
    assert [m["input_size"] for m in meta["ensemble"]] == [32, 48] and meta["teacher_sha256"] == ws.sha256(a)
    assert meta["provenance"]["inputs"]["teacher_2"]["sha256"] == ws.sha256(b)
    assert [m["file"] for m in res.summary["ensemble"]] == [f"{tmp_path.name}/a.pt", f"{tmp_path.name}/b.pt"]
    eight = save_checkpoint(tmp_path / "eight.pt", make_checkpoint(create_model("shufflenet_v2", 8).eval(),
                                                                   "shufflenet_v2", model_args("shufflenet_v2", 8),
                                                                   CLASSES_8, 32))
    with pytest.raises(FerError, match="eight.pt"):  # another class list: refused, naming the file
        run_gen_labels(GenLabelsConfig(teacher=a, ensemble=(eight,), out=tmp_path / "x.parquet", workers=0), ws)
    (tmp_path / "run_b").mkdir()
    (tmp_path / "run_b" / "best.pt").write_bytes(b.read_bytes())  # a run folder stands for its best.pt
    folder = run_gen_labels(GenLabelsConfig(teacher=a, ensemble=(tmp_path / "run_b",), out=tmp_path / "f.parquet",
                                            workers=0, flip=True), ws)
    assert np.allclose(read_labels(folder.out)[0][cols].to_numpy(), df[cols].to_numpy())
    with pytest.raises(FerError, match="this teacher is given twice"):
        run_gen_labels(GenLabelsConfig(teacher=a, ensemble=(b, a), out=tmp_path / "x.parquet", workers=0), ws)
    assert not (tmp_path / "x.parquet").exists()
    res = runner.invoke(app, ["-w", str(ws.root), "gen-labels", "--teacher", str(a), "--ensemble", str(b), "--out",
                              str(tmp_path / "cli.parquet"), "--workers", "0"])
    assert res.exit_code == 0, res.output
    assert f"teacher {tmp_path.name}/b.pt (shufflenet_v2, 48 px) argmax = label" in res.output.replace("\n", "") and "ensemble argmax = label" in res.output


def test_gen_labels_refuses_test_split_and_bad_distributions(ws: Workspace, tmp_path: Path):
    run_train(TeacherConfig(arch="shufflenet_v2", epochs=1, **TINY), ws, kind="teacher")
    with pytest.raises(FerError, match="refusing to label the test split"):
        run_gen_labels(GenLabelsConfig(splits=("train", "test"), workers=0), ws)
    df = pd.DataFrame({"path": ["a", "b"], "split": "train", "label": [0, 1]})
    for i, c in enumerate(dist_columns(CLASSES_7)):
        df[c] = [0.5 if i < 2 else 0.0, 0.2 if i == 0 else 0.0]
    with pytest.raises(FerError, match=r"\(row 1\): distribution .* is not a probability distribution"):
        write_labels(df, CLASSES_7, tmp_path / "l.parquet", {})
    assert not (tmp_path / "l.parquet").exists()


def test_resume_is_exact_under_deterministic(ws: Workspace, tmp_path: Path):
    # with --shift too: the translation draws from the per-step generator, so a resume replays it
    base = dict(arch="shufflenet_v2", epochs=2, deterministic=True, checkpoint_every=0, targets="none", shift=0.1, **TINY)
    full = run_train(TrainConfig(out=tmp_path / "full", **base), ws)
    part = run_train(TrainConfig(out=tmp_path / "part", max_steps=3, **base), ws)  # stops mid-epoch 1
    assert part.stopped_at_step == 3 and not part.best.exists()
    resumed = run_train(TrainConfig(out=tmp_path / "part", resume=True, **base), ws)
    assert "resumed" in resumed.notes[-1]
    a, b = load_checkpoint(full.last)["state_dict"], load_checkpoint(resumed.last)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [r["val_acc"] for r in full.history] == [r["val_acc"] for r in resumed.history]


def test_augment_shift_translates_within_the_frame():
    x = torch.zeros(4, 3, 20, 20, dtype=torch.uint8)
    x[:, :, 8:12, 8:12] = 200  # a bright square in the middle
    assert torch.equal(augment_batch(x, build_augment("paper", 20, flip=0.0, shift=0.0), 3), x)
    tf = build_augment("paper", 20, flip=0.0, shift=0.1)  # up to 2 px each way
    y = augment_batch(x, tf, 3)
    assert y.shape == x.shape and y.dtype == torch.uint8
    assert torch.equal(y, augment_batch(x, tf, 3))  # the seed decides everything
    for img in y:  # the square moved by at most 2 px and kept its size
        rows, cols = torch.nonzero(img[0] == 200, as_tuple=True)
        assert len(rows) == 16 and 6 <= int(rows.min()) <= 10 and 6 <= int(cols.min()) <= 10
    assert any(not torch.equal(a, x[0]) for a in y)


def test_bad_inputs(ws: Workspace, tmp_path: Path, monkeypatch):
    cfg = dict(arch="shufflenet_v2", epochs=1, targets="none", **TINY)
    with pytest.raises(FerError, match="needs label distributions: run `fer gen-labels`"):
        run_train(TrainConfig(**{**cfg, "targets": "teacher"}), ws)
    with pytest.raises(FerError, match="--targets votes needs distribution columns"):
        run_train(TrainConfig(**{**cfg, "targets": "votes"}), ws)
    # no valid split: say how to make one
    m = read_manifest(ws.current_path("dataset"))
    only_train = tmp_path / "train_only.parquet"
    write_manifest(m.df[m.df["split"] == "train"], m.classes, m.root, only_train)
    with pytest.raises(FerError, match="no labelled 'valid' split .* --val-fraction 0.1"):
        run_train(TrainConfig(manifest=only_train, **cfg), ws)
    r = run_train(TrainConfig(manifest=only_train, val_fraction=0.25, out=tmp_path / "vf", **cfg), ws)
    assert "held out" in r.notes[0]
    # an existing run is not overwritten without --resume/--overwrite
    with pytest.raises(FerError, match="a training run is already here; pass --resume"):
        run_train(TrainConfig(manifest=only_train, val_fraction=0.25, out=tmp_path / "vf", **cfg), ws)
    # a missing image is named, also when decoded in a worker process
    victim = m.root / m.df["path"].iloc[0]
    victim.rename(victim.with_suffix(".bak"))
    try:
        with pytest.raises(FerError, match=rf"^{victim}: cannot decode \(the file is missing\)"):
            run_train(TrainConfig(manifest=ws.current_path("dataset"), out=tmp_path / "missing", **{**cfg, "workers": 1}),
                Workspace(tmp_path / "fresh"))
    finally:
        victim.with_suffix(".bak").rename(victim)
    # NaN loss: stop with the batch and the last good checkpoint named; nothing overwritten
    run_train(TrainConfig(out=tmp_path / "nan", max_steps=2, **cfg), ws)
    before = (tmp_path / "nan" / "last.pt").read_bytes()
    real_forward = LFERLoss.forward

    def nan_loss(self, logits, labels, target=None):
        total, parts = real_forward(self, logits, labels, target)
        return total * float("nan"), parts

    monkeypatch.setattr(LFERLoss, "forward", nan_loss)
    with pytest.raises(FerError, match=r"loss became nan at epoch 1, step 2 \(images train/.*last good checkpoint: .*nan/last.pt"):
        run_train(TrainConfig(out=tmp_path / "nan", resume=True, **cfg), ws)
    assert (tmp_path / "nan" / "last.pt").read_bytes() == before

@pytest.mark.shared
def test_ferplus_short_run_learns(ferplus_dir: Path, tmp_path: Path):
    """Real data: a short run lowers the training loss and beats the majority-class rate on valid."""
    ws, sub = ferplus_subset(ferplus_dir, tmp_path, 2000, 400, seed=0)
    r = run_train(TrainConfig(arch="lfer", input_size=48, epochs=4, batch_size=32, lr=0.05,
                        loss="ce", targets="none", workers=0, threads=1), ws)
    majority = (sub[sub.split == "valid"]["label"] == sub[sub.split == "train"]["label"].mode()[0]).mean()
    assert r.history[-1]["train_loss"] < r.history[0]["train_loss"]
    assert r.best_row["val_acc"] > majority + 0.02, (r.best_row, majority)  # 4 short epochs: a few points of noise


def test_torchrun_two_processes(ws: Workspace, tmp_path: Path):
    """DDP on CPU through torchrun: one short epoch, a valid checkpoint."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "fercli",
           "-w", str(ws.root), "-q", "train", "--arch", "shufflenet_v2", "--targets", "none", "--epochs", "1",
           "--input-size", "32", "--batch-size", "8", "--workers", "0", "--threads", "1", "--out", str(out), "--json"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "terminate called" not in proc.stderr
    model, ckpt = model_from_checkpoint(out / "best.pt")
    assert ckpt["arch"] == "shufflenet_v2" and len(ckpt["metrics"]["best"]) > 0
    summary = json.loads(proc.stdout)  # only rank 0 reports
    assert summary["epochs_run"] == 1 and summary["best_epoch"] == 1


@pytest.mark.shared
def test_ferplus_teacher_labels_student_end_to_end(ferplus_dir: Path, tmp_path: Path):
    """pretrain-teacher -> gen-labels -> train -> checkpoint on a few hundred real FERPlus images."""
    ws, _ = ferplus_subset(ferplus_dir, tmp_path, 300, 100, seed=2)
    small = dict(input_size=48, epochs=1, batch_size=32, workers=0, threads=1)
    teacher = run_train(TeacherConfig(arch="resnet18", **small), ws, kind="teacher")
    labels = run_gen_labels(GenLabelsConfig(workers=0), ws)
    assert labels.summary["rows"] == 300 and "kl_votes" in labels.summary  # FERPlus votes vs the teacher
    student = run_train(TrainConfig(arch="lfer", beta=0.2, **small), ws)
    ckpt = load_checkpoint(student.best)
    assert student.targets == "teacher" and ckpt["classes"] == list(CLASSES_8)
    assert ckpt["provenance"]["inputs"]["labels"]["sha256"] == ws.sha256(labels.out)
    assert load_checkpoint(teacher.best)["arch"] == "resnet18"


def test_resume_keeps_the_runs_settings_and_epoch_totals(ws: Workspace, tmp_path: Path):
    base = dict(arch="shufflenet_v2", deterministic=True, checkpoint_every=0, targets="none", **TINY)
    full = run_train(TrainConfig(out=tmp_path / "full", epochs=2, **{**base, "batch_size": 8}), ws)
    run_train(TrainConfig(out=tmp_path / "part", epochs=2, max_steps=4, **{**base, "batch_size": 8}), ws)
    # resumed with the default batch size typed: the run's own batch size 8 is kept, and said so
    resumed = run_train(TrainConfig(out=tmp_path / "part", epochs=2, resume=True, **base), ws)
    assert any("batch_size=8" in n for n in resumed.notes)
    a, b = load_checkpoint(full.last)["state_dict"], load_checkpoint(resumed.last)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    for x, y in zip(full.history, resumed.history):  # the interrupted epoch's totals survive the resume
        assert x["train_loss"] == pytest.approx(y["train_loss"]) and x["train_acc"] == y["train_acc"]
