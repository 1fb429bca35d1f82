"""The training recipe: augmentation presets, schedules, EMA, rare-class options, mixing, calibration, validation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from _fab import make_ferplus
from typer.testing import CliRunner

from fercli.augment import AUGMENT_PRESETS, RandomGaussianNoise, augment_batch, build_augment, mix_batch
from fercli.checkpoint import load_checkpoint
from fercli.classes import CLASSES_7
from fercli.cli import app
from fercli.config import build_config
from fercli.data import epoch_order
from fercli.errors import FerError
from fercli.importers import ImportConfig, run_import
from fercli.losses import LFERLoss, LossConfig
from fercli.schema import read_manifest
from fercli.training import RECIPES, TrainConfig, build_scheduler, run_train, prepare_data, validate_train_config
from fercli.workspace import Workspace

TINY = dict(input_size=32, batch_size=16, workers=0, threads=1)


# -- augmentation --------------------------------------------------------------------------------------

@pytest.mark.parametrize("preset", AUGMENT_PRESETS)
def test_each_face_of_a_batch_gets_its_own_draw(preset: str):
    face = torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8)
    x = face.expand(8, 3, 32, 32).clone()  # eight copies of one face
    tf = build_augment(preset, 32, flip=0.5, shift=0.1, auto="trivialwide")
    y = augment_batch(x, tf, seed=5)
    assert y.shape == x.shape and y.dtype == torch.uint8
    distinct = {bytes(img.numpy()) for img in y}
    assert len(distinct) >= 4, f"{preset}: faces of one batch were transformed alike"
    assert torch.equal(y, augment_batch(x, tf, seed=5))  # the seed decides everything
    assert not torch.equal(y, augment_batch(x, tf, seed=6))
    state = torch.get_rng_state()
    augment_batch(x, tf, seed=7)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone


def test_strong_preset_erases_and_changes_geometry():
    x = torch.full((64, 3, 32, 32), 200, dtype=torch.uint8)
    y = augment_batch(x, build_augment("strong", 32, flip=0.0), seed=1)
    assert (y == 0).flatten(1).any(1).float().mean() > 0.2  # random erasing (and rotation corners) black out pixels


def test_sensor_noise_keeps_a_gray_face_gray_and_draws_its_strength_per_face():
    gray = torch.full((3, 32, 32), 128, dtype=torch.uint8)
    colour = torch.stack([torch.full((32, 32), v, dtype=torch.uint8) for v in (60, 128, 200)])
    noise = RandomGaussianNoise((0.02, 0.2))
    torch.manual_seed(0)
    outs = [noise(gray) for _ in range(16)]
    for y in outs:
        assert y.dtype == torch.uint8 and torch.equal(y[0], y[1]) and torch.equal(y[1], y[2])  # one plane
        assert (y != 128).any()
    spreads = sorted(float(y[0].float().std()) for y in outs)
    assert spreads[-1] > 2 * spreads[0]  # sigma differs from face to face, within the range
    assert 0.02 * 255 * 0.7 < spreads[0] and spreads[-1] < 0.2 * 255 * 1.1
    y = noise(colour)
    assert not torch.equal(y[0] - 60, y[2] - 200)  # a colour face gets noise per channel


def test_robust_preset_adds_noise_blur_and_occlusion():
    x = torch.full((64, 3, 32, 32), 150, dtype=torch.uint8)
    y = augment_batch(x, build_augment("robust", 32, flip=0.0), seed=1)
    # the affine's fill blackens corners and edges only; in the centre, black is erasing
    centre = y[:, 0, 8:24, 8:24].float().flatten(1)
    erased = (centre == 0).any(1)
    # noise: a spread far beyond what jitter, blur or JPEG make of a flat face
    noisy = torch.stack([c[c > 0].std() if (c > 0).sum() > 10 else torch.tensor(0.0) for c in centre]) > 4
    assert 0.05 < erased.float().mean() < 0.4 and 0.15 < noisy.float().mean() < 0.5
    assert all(torch.equal(img[0], img[1]) for img in y)  # gray stays gray


def test_mixup_matrix_describes_the_mixed_images():
    x = torch.randn(6, 3, 8, 8)
    mixed = x.clone()
    m = mix_batch(mixed, "mixup", 0.4, seed=3)
    assert m.shape == (6, 6) and torch.allclose(m.sum(1), torch.ones(6))
    assert torch.allclose(mixed.flatten(1), m @ x.flatten(1), atol=1e-5)  # targets mix exactly as images did
    x2 = torch.randn(6, 3, 8, 8)
    cut = x2.clone()
    m2 = mix_batch(cut, "cutmix", 1.0, seed=3)
    assert torch.allclose(m2.sum(1), torch.ones(6)) and not torch.equal(cut, x2)
    with pytest.raises(FerError, match="unknown --mix"):
        mix_batch(x.clone(), "blend", 0.2, seed=0)


# -- optimisation --------------------------------------------------------------------------------------

def _lrs(cfg: TrainConfig, spe: int) -> list[float]:
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = build_scheduler(opt, cfg, spe)
    out = []
    for _ in range(cfg.epochs * spe):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_cosine_with_warmup_and_step_schedules():
    lrs = _lrs(TrainConfig(lr=0.1, epochs=10, sched="cosine", warmup_epochs=2), spe=5)
    assert lrs[0] == pytest.approx(0.001)  # warm-up starts at 1% of --lr
    assert lrs[10] == pytest.approx(0.1)  # ... and reaches it after 2 epochs
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # then decays monotonically
    assert lrs[-1] < 0.001
    step = _lrs(TrainConfig(lr=0.1, epochs=6, sched="step", lr_step=2, lr_gamma=0.1), spe=4)
    assert step[7] == pytest.approx(0.1) and step[8] == pytest.approx(0.01) and step[16] == pytest.approx(0.001)


def test_label_smoothing_and_logit_adjustment():
    logits = torch.randn(5, 7)
    y = torch.tensor([0, 1, 2, 3, 4])
    smooth = LFERLoss(LossConfig(loss="ce", label_smoothing=0.1))(logits, y)[0]
    assert smooth.item() == pytest.approx(F.cross_entropy(logits, y, label_smoothing=0.1).item(), rel=1e-6)
    prior = torch.tensor([50.0, 20, 10, 10, 5, 3, 2])
    adjusted = LFERLoss(LossConfig(loss="ce", tau=0.5), prior)(logits, y)[0]
    expect = F.cross_entropy(logits + 0.5 * torch.log(prior / prior.sum()), y)
    assert adjusted.item() == pytest.approx(expect.item(), rel=1e-6)
    assert LFERLoss(LossConfig(loss="ce", tau=0.0), prior)(logits, y)[0].item() == pytest.approx(
        F.cross_entropy(logits, y).item(), rel=1e-6)  # tau 0: no adjustment
    soft = torch.nn.functional.one_hot(y, 7).float()
    for loss in ("ce", "combo"):  # soft one-hot rows (MixUp) give the same loss as the indices they encode
        c = LFERLoss(LossConfig(loss=loss))
        assert c(logits, soft)[0].item() == pytest.approx(c(logits, y)[0].item(), rel=1e-5)


def test_sqrt_sampling_draws_classes_by_the_square_root_of_their_counts():
    labels = torch.tensor([0] * 900 + [1] * 100)
    share = [torch.bincount(labels[epoch_order(len(labels), e, 0, labels, balanced=True, power=p)], minlength=2)[1]
             .item() / len(labels) for p in (0.5, 1.0) for e in range(5)]
    sqrt_share, even_share = sum(share[:5]) / 5, sum(share[5:]) / 5
    assert abs(sqrt_share - 0.25) < 0.02  # sqrt(100) / (sqrt(900) + sqrt(100))
    assert abs(even_share - 0.5) < 0.02


def test_balance_sqrt_trains_on_square_root_draws():
    from fercli.training.optim import sample_order

    labels = torch.tensor([0] * 900 + [1] * 100)
    cfg = TrainConfig(balance="sqrt", seed=3)
    assert sample_order(cfg, len(labels), 2, labels, 0, 1) == epoch_order(len(labels), 2, 3, labels, True, power=0.5)
    none = TrainConfig(balance="none", seed=3)
    assert sample_order(none, len(labels), 2, labels, 0, 1) == epoch_order(len(labels), 2, 3, labels)
    validate_train_config(cfg)


def test_balanced_sampler_draws_classes_evenly():
    labels = torch.tensor([0] * 90 + [1] * 9 + [2] * 1)
    order = epoch_order(len(labels), 0, 0, labels, balanced=True)
    counts = torch.bincount(labels[order], minlength=3).float()
    assert counts.min() > 15  # the class with one image is drawn about a third of the time


# -- runs ----------------------------------------------------------------------------------------------

STRONG = dict(augment="strong", auto_augment="trivialwide", mix="both", sched="cosine", warmup_epochs=0.5,
              ema=0.9, label_smoothing=0.1, nesterov=True, balance="logit-adjust", tau=0.5)


def test_resume_is_bit_exact_with_the_strong_recipe(ws: Workspace, tmp_path: Path):
    base = dict(arch="shufflenet_v2", epochs=2, deterministic=True, checkpoint_every=0, targets="none", **STRONG, **TINY)
    full = run_train(TrainConfig(out=tmp_path / "full", **base), ws)
    part = run_train(TrainConfig(out=tmp_path / "part", max_steps=3, **base), ws)
    assert part.stopped_at_step == 3
    resumed = run_train(TrainConfig(out=tmp_path / "part", resume=True, **base), ws)
    a, b = load_checkpoint(full.last), load_checkpoint(resumed.last)
    for key in ("state_dict",):
        assert all(torch.equal(a[key][k], b[key][k]) for k in a[key])
    ta, tb = a["train_state"], b["train_state"]
    assert all(torch.equal(ta["model"][k], tb["model"][k]) for k in ta["model"])
    assert [r["val_acc"] for r in full.history] == [r["val_acc"] for r in resumed.history]
    # a resume in worker processes augments the same batches identically
    wk = run_train(TrainConfig(out=tmp_path / "workers", **{**base, "workers": 2}), ws)
    c = load_checkpoint(wk.last)
    assert all(torch.equal(a["state_dict"][k], c["state_dict"][k]) for k in a["state_dict"])


def test_ema_weights_are_validated_and_saved(ws: Workspace, tmp_path: Path):
    r = run_train(TrainConfig(out=tmp_path / "ema", arch="shufflenet_v2", epochs=2, targets="none", ema=0.5,
                        checkpoint_every=0, **TINY), ws)
    last = load_checkpoint(r.last)
    raw, saved = last["train_state"]["model"], last["state_dict"]
    assert any(not torch.equal(raw[k], saved[k]) for k in raw if raw[k].is_floating_point())
    ema = last["train_state"]["ema"]
    assert all(torch.equal(ema[f"module.{k}"], saved[k]) for k in saved)  # what is saved is the EMA


def test_per_class_recall_selection_and_calibration(ws: Workspace, tmp_path: Path):
    r = run_train(TrainConfig(out=tmp_path / "sel", arch="shufflenet_v2", epochs=3, targets="none", lr=0.05,
                        select="mean-class", calibrate=True, checkpoint_every=0, **TINY), ws)
    for row in r.history:
        recalls = [row[f"recall_{c}"] for c in CLASSES_7]
        assert all(0 <= v <= 1 for v in recalls)
        assert row["val_mean_class_acc"] == pytest.approx(np.mean(recalls))
    best = max(r.history, key=lambda row: row["val_mean_class_acc"])
    assert r.best_row["epoch"] == best["epoch"]
    assert "recall_anger" in (tmp_path / "sel" / "metrics.csv").read_text().splitlines()[0]
    ckpt = load_checkpoint(r.best)
    cal = ckpt["metrics"]["calibration"]
    assert ckpt["temperature"] == pytest.approx(cal["temperature"]) and ckpt["temperature"] > 0
    assert cal["nll_after"] <= cal["nll_before"] + 1e-9
    assert any("calibrated on the holdout" in n for n in r.notes)


def test_mixed_targets_combine_votes_and_teacher(tmp_path: Path):
    rows = [(f"fer{i:07d}.png", [6, 2, 0, 0, 2, 0, 0, 0, 0, 0] if i % 2 else [1, 7, 2, 0, 0, 0, 0, 0, 0, 0])
            for i in range(12)]
    root = make_ferplus(tmp_path / "fp", {"FER2013Train": rows, "FER2013Valid": rows[:4]})
    ws = Workspace(tmp_path / "ws")
    run_import(ImportConfig(format="ferplus", src=root), ws)
    m = read_manifest(ws.current_path("dataset"))
    from fercli.schema import dist_columns, write_labels

    df = m.labelled()
    df = df[df["split"] == "train"][["path", "split", "label"]].copy()
    for i, c in enumerate(dist_columns(m.classes)):
        df[c] = 1.0 if i == 3 else 0.0  # a "teacher" that always says sadness
    write_labels(df, m.classes, tmp_path / "labels.parquet", {})
    data = prepare_data(TrainConfig(targets="mix", target_mix=0.25, labels=tmp_path / "labels.parquet", **TINY), ws)
    votes = m.labelled()
    votes = votes[votes["split"] == "train"][m.dist_columns].to_numpy(np.float32)
    teacher = np.zeros_like(votes)
    teacher[:, 3] = 1
    assert np.allclose(data.train.targets.numpy(), 0.25 * votes + 0.75 * teacher, atol=1e-6)
    assert any("0.25 x crowd votes" in n for n in data.notes)


# -- validation ----------------------------------------------------------------------------------------

BAD = [("augment", "wild"), ("auto_augment", "magic"), ("balance", "some"), ("sched", "linear"), ("mix", "blend"),
       ("ema", 1.0), ("ema", 0.0), ("ema", -0.5), ("label_smoothing", -0.1), ("label_smoothing", 1.0),
       ("warmup_epochs", 5.0), ("warmup_epochs", -1.0), ("beta", 5.0), ("beta", -1.0), ("beta", float("nan")),
       ("alpha", 2.0), ("loss", "foo"), ("kl_reduction", "foo"), ("kl_weight", -1.0), ("tau", -1.0),
       ("select", "f1"), ("targets", "crowd"), ("target_mix", 1.5), ("mix_alpha", 0.0), ("lr", float("inf")),
       ("momentum", 1.0), ("weight_decay", -1.0), ("lr_gamma", 0.0), ("recipe", "nope"), ("arch", "vgg")]


@pytest.mark.parametrize("name,value", BAD)
def test_out_of_range_options_are_refused_up_front(name: str, value):
    with pytest.raises(FerError) as exc:
        validate_train_config(TrainConfig(epochs=5, **{name: value}))
    assert "\n" not in str(exc.value)
    flag = "--" + name.replace("_", "-")
    assert flag in str(exc.value)


@pytest.mark.parametrize("args", [["--beta", "5"], ["--beta", "nan"], ["--augment", "wild"], ["--ema", "1.5"],
                                  ["--kl-weight", "-1"], ["--warmup-epochs", "3", "--epochs", "2"],
                                  ["--label-smoothing", "-0.1"], ["--balance", "x"], ["--loss", "foo"]])
def test_cli_refuses_bad_training_flags_before_touching_data(ws: Workspace, args: list[str]):
    flag = args[0]
    res = CliRunner().invoke(app, ["-w", str(ws.root), "train", "--targets", "none", *args])
    assert res.exit_code != 0 and "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len([line for line in lines if line.startswith("error")]) == 1, res.output
    assert flag in res.output
    assert not (ws.root / ".fer" / "cache").exists()  # nothing decoded
    assert not (ws.root / "student").exists()  # nothing written


def test_ferplus_cpu_recipe_is_a_preset():
    cfg = build_config(TrainConfig, "train", {"recipe": "ferplus-cpu"}, base=RECIPES["ferplus-cpu"])
    assert cfg.augment == "strong" and cfg.sched == "cosine" and cfg.ema and cfg.calibrate
    validate_train_config(cfg)
    cfg = build_config(TrainConfig, "train", {"recipe": "ferplus-cpu", "epochs": 5}, base=RECIPES["ferplus-cpu"])
    assert cfg.epochs == 5 and not math.isnan(cfg.lr)  # flags sit above the preset
