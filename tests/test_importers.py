"""Every importer on small fabricated copies of its real layout, including the bad-input cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _fab import make_affectnet, make_fer2013, make_ferplus, make_rafdb, write_image

from fercli.classes import CLASSES_7, CLASSES_8
from fercli.errors import FerError
from fercli.importers import ImportConfig, detect_format, load_dataset, run_import
from fercli.importers.affectnet import five_points
from fercli.importers.ferplus import majority_labels
from fercli.schema import read_manifest
from fercli.workspace import Workspace


def load(fmt: str, src: Path, **kw):
    return load_dataset(ImportConfig(format=fmt, src=src, **kw))


# ---- FERPlus ---------------------------------------------------------------------------------
V = {  # votes in label.csv order: neutral happiness surprise sadness anger disgust fear contempt unknown NF
    "neutral": [6, 0, 1, 1, 0, 0, 0, 0, 2, 0],
    "tie": [4, 0, 0, 1, 3, 2, 0, 0, 0, 0],
    "happy": [0, 9, 0, 0, 0, 0, 0, 0, 1, 0],
    "unknown": [1, 0, 0, 0, 0, 0, 0, 0, 7, 2],
    "contempt": [2, 0, 0, 0, 0, 0, 0, 8, 0, 0],
    "singles": [1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
}


def test_ferplus_majority_rule_by_hand():
    votes = np.array([V[k] for k in ("neutral", "tie", "happy", "unknown", "contempt", "singles")])
    # neutral: singles dropped -> 6 of 8 > 50%; tie: 4 of 9 is not > 50%; unknown wins -> index 8.
    assert majority_labels(votes).tolist() == [0, -1, 1, 8, 7, -1]


@pytest.fixture
def ferplus(tmp_path: Path) -> Path:
    return make_ferplus(tmp_path / "ferplus", {
        "FER2013Train": [(f"fer{i:07d}.png", V[k]) for i, k in enumerate(["neutral", "tie", "happy", "unknown", "contempt"])],
        "FER2013Valid": [("fer0000010.png", V["happy"]), ("fer0000011.png", V["singles"])],
    })


def test_ferplus_import(ferplus: Path):
    imp = load("ferplus", ferplus)
    df = imp.df
    assert imp.classes == CLASSES_8 and len(df) == 7
    assert df["split"].tolist() == ["train"] * 5 + ["valid"] * 2
    assert df["label_name"].tolist()[:5] == ["neutral", None, "happiness", None, "contempt"]
    assert df["path"].iloc[0] == "FER2013Train/fer0000000.png"
    assert df["votes_unknown"].tolist()[:4] == [2, 0, 1, 7] and df["votes_nf"].iloc[3] == 2
    dist = df[[f"dist_{c}" for c in CLASSES_8]].to_numpy()
    assert np.allclose(dist[0], np.array([6, 0, 1, 1, 0, 0, 0, 0]) / 8)
    assert np.allclose(np.nansum(dist, axis=1)[:3], 1.0)
    assert df["box_w"].iloc[0] == 48


def test_ferplus_seven_classes_leaves_contempt_unlabelled(ferplus: Path):
    imp = load("ferplus", ferplus, classes=7)
    assert imp.classes == CLASSES_7
    assert imp.df["label"].iloc[4] == -1 and len(imp.df) == 7
    assert "dist_contempt" not in imp.df.columns


def test_ferplus_rename_split_keeps_valid_for_the_final_report(ferplus: Path):
    df = load("ferplus", ferplus, rename_splits="valid=test").df
    assert df["split"].tolist() == ["train"] * 5 + ["test"] * 2
    swapped = load("ferplus", ferplus, rename_splits="valid=train, train=valid").df  # renames apply at once
    assert swapped["split"].tolist() == ["valid"] * 5 + ["train"] * 2


@pytest.mark.parametrize("spec, message", [
    ("valid", "expected OLD=NEW"), ("valid=holdout", "expected OLD=NEW"),
    ("valid=test,valid=train", "renamed twice"), ("test=valid", "has no 'test' split"),
])
def test_ferplus_rename_split_errors(ferplus: Path, spec: str, message: str):
    with pytest.raises(FerError, match=message):
        load("ferplus", ferplus, rename_splits=spec)


@pytest.mark.parametrize("line, message", [
    ('fer0000000.png,"(0, 0, 48, 48)",1,2,3', "expected 12 fields"),
    ('fer0000000.png,"(0, 0, 48, 48)",a,0,0,0,0,0,0,0,0,0', "must be integers"),
    ('fer0000000.png,"(0, 0, 48)",1,0,0,0,0,0,0,0,0,0', "face box"),
    ('../evil.png,"(0, 0, 48, 48)",9,0,0,0,0,0,0,0,0,0', "escapes the dataset root"),
])
def test_ferplus_malformed_rows(tmp_path: Path, line: str, message: str):
    d = tmp_path / "FER2013Train"
    write_image(d / "fer0000000.png")
    (d / "label.csv").write_text(f'fer0000001.png,"(0, 0, 48, 48)",9,0,0,0,0,0,0,0,0,0\n{line}\n')
    write_image(d / "fer0000001.png")
    with pytest.raises(FerError, match=rf"label\.csv:2: .*{message}"):
        load("ferplus", tmp_path)


def test_ferplus_missing_label_file(tmp_path: Path):
    with pytest.raises(FerError, match="no FER2013Train/label.csv"):
        load("ferplus", tmp_path)


def test_ferplus_empty_label_file(tmp_path: Path):
    (tmp_path / "FER2013Train").mkdir()
    (tmp_path / "FER2013Train" / "label.csv").write_text("")
    with pytest.raises(FerError, match="empty label file"):
        load("ferplus", tmp_path)


def test_ferplus_duplicate_rows(tmp_path: Path):
    make_ferplus(tmp_path, {"FER2013Train": [("a.png", V["happy"]), ("b.png", V["happy"]), ("a.png", V["neutral"])]})
    with pytest.raises(FerError, match=r"label\.csv:3: duplicate entry for 'FER2013Train/a.png' \(first at line 1\)"):
        load("ferplus", tmp_path)


def test_ferplus_listed_but_absent(tmp_path: Path):
    make_ferplus(tmp_path, {"FER2013Train": [("a.png", V["happy"]), ("b.png", V["happy"])]})
    (tmp_path / "FER2013Train" / "b.png").unlink()
    with pytest.raises(FerError, match=r"label\.csv:2: image 'FER2013Train/b.png' is listed but absent.*--allow-missing"):
        load("ferplus", tmp_path)
    imp = load("ferplus", tmp_path, allow_missing=True)
    assert len(imp.df) == 1 and imp.dropped == {"missing image": 1}


@pytest.mark.shared
def test_ferplus_real_counts(ferplus_dir: Path, tmp_path: Path):
    """Acceptance: the FERPlus reference majority counts on the real label files."""
    res = run_import(ImportConfig(format="ferplus", src=ferplus_dir, out=tmp_path / "m.parquet"), Workspace(tmp_path))
    df = read_manifest(res.out).df
    train, valid = df[df.split == "train"], df[df.split == "valid"]
    assert len(train) == 28_558 and len(valid) == 3_579
    assert train["label_name"].value_counts().to_dict() == {
        "neutral": 8733, "happiness": 7284, "surprise": 3136, "sadness": 3022,
        "anger": 2098, "fear": 536, "disgust": 116, "contempt": 120,
    }
    assert (train["label"] < 0).sum() == 3513
    assert (valid["label"] >= 0).sum() == 3191
    assert valid["label_name"].value_counts().to_dict() == {
        "neutral": 1180, "happiness": 862, "surprise": 411, "sadness": 348,
        "anger": 289, "fear": 60, "disgust": 25, "contempt": 16,
    }


# ---- RAF-DB ----------------------------------------------------------------------------------
RAF = [("train_00001.jpg", 5), ("train_00002.jpg", 1), ("test_0001.jpg", 7)]


def test_rafdb_aligned(tmp_path: Path):
    imp = load("rafdb", make_rafdb(tmp_path, RAF))
    assert imp.classes == CLASSES_7
    assert imp.df["path"].tolist()[0] == "Image/aligned/train_00001_aligned.jpg"
    assert imp.df["label_name"].tolist() == ["sadness", "surprise", "neutral"]
    assert imp.df["split"].tolist() == ["train", "train", "test"]
    assert "lm0_x" not in imp.df.columns  # landmarks are in original-image pixels


def test_rafdb_original_with_landmarks(tmp_path: Path):
    imp = load("rafdb", make_rafdb(tmp_path, RAF, aligned=False, original=True, landmarks=True))
    row = imp.df.iloc[0]
    assert row["path"] == "Image/original/train_00001.jpg"
    assert (row["lm0_x"], row["lm0_y"], row["lm4_x"]) == (60.5, 70.25, 100.5)
    assert (row["box_x"], row["box_w"]) == (40.0, 100.0)


@pytest.mark.parametrize("content, message", [
    ("train_00001.jpg 9\n", r":1: unknown label code 9"),
    ("train_00001.jpg\n", r":1: expected '<image> <code>'"),
    ("train_00001.jpg x\n", r":1: label code 'x' is not an integer"),
    ("train_00001.jpg 1\n../x/train_00002.jpg 2\n", r":2: image path .* escapes the dataset root"),
    ("train_00001.jpg 1\ntrain_00001.jpg 2\n", r":2: duplicate entry .* \(first at line 1\)"),
    ("val_00001.jpg 1\n", r":1: cannot tell the split"),
    ("\n", r"empty label file"),
])
def test_rafdb_bad_label_file(tmp_path: Path, content: str, message: str):
    make_rafdb(tmp_path, [("train_00001.jpg", 1), ("train_00002.jpg", 2)])
    (tmp_path / "EmoLabel" / "list_patition_label.txt").write_text(content)
    with pytest.raises(FerError, match=message):
        load("rafdb", tmp_path)


def test_rafdb_missing_image_and_layout(tmp_path: Path):
    make_rafdb(tmp_path, RAF)
    (tmp_path / "Image" / "aligned" / "test_0001_aligned.jpg").unlink()
    with pytest.raises(FerError, match=r"list_patition_label\.txt:3: image 'Image/aligned/test_0001_aligned.jpg' is listed but absent"):
        load("rafdb", tmp_path)
    with pytest.raises(FerError, match="no EmoLabel/list_patition_label.txt"):
        load("rafdb", tmp_path / "Image")


# ---- AffectNet -------------------------------------------------------------------------------
AFF_TRAIN = [("1/a.jpg", 0), ("1/b.jpg", 7), ("2/c.jpg", 8), ("2/d.jpg", 10), ("2/e.jpg", 3)]
AFF_VAL = [("3/f.jpg", 1), ("3/g.jpg", 9)]


def test_affectnet_eight_classes(tmp_path: Path):
    imp = load("affectnet", make_affectnet(tmp_path, AFF_TRAIN, AFF_VAL))
    df = imp.df
    assert imp.classes == CLASSES_8
    assert df["path"].tolist() == ["1/a.jpg", "1/b.jpg", "2/e.jpg", "3/f.jpg"]
    assert df["label_name"].tolist() == ["neutral", "contempt", "surprise", "happiness"]
    assert df["split"].tolist() == ["train", "train", "train", "test"]
    assert sum(imp.dropped.values()) == 3
    assert (df["box_x"].iloc[0], df["box_h"].iloc[0]) == (10, 110)
    assert df["valence"].iloc[0] == pytest.approx(0.5)
    # points i are (i, 2i): left eye = mean of 36..41 = 38.5; nose = 30; mouth corners 48 and 54.
    assert (df["lm0_x"].iloc[0], df["lm0_y"].iloc[0]) == (38.5, 77.0)
    assert (df["lm2_x"].iloc[0], df["lm3_x"].iloc[0], df["lm4_x"].iloc[0]) == (30, 48, 54)


def test_affectnet_seven_classes_drops_contempt(tmp_path: Path):
    imp = load("affectnet", make_affectnet(tmp_path, AFF_TRAIN, AFF_VAL), classes=7)
    assert "contempt" not in imp.df["label_name"].tolist() and len(imp.df) == 3


def test_five_points_shape():
    pts = np.arange(68 * 2, dtype=np.float32).reshape(1, 68, 2)
    assert five_points(pts).shape == (1, 5, 2)


@pytest.mark.parametrize("row, message", [
    ('1/x.jpg,1,2,3,4,"{lm}",12,0,0', r"training\.csv:3: unknown expression code '12'"),
    ('1/x.jpg,1,2,3,4,"1;2;3",1,0,0', r"training\.csv:3: facial_landmarks must hold 68"),
    ('1/x.jpg,a,2,3,4,"{lm}",1,0,0', r"training\.csv:3: face_x 'a' is not a number"),
    ('../x.jpg,1,2,3,4,"{lm}",1,0,0', r"training\.csv:3: image path .* escapes"),
    ('1/a.jpg,1,2,3,4,"{lm}",1,0,0', r"training\.csv:3: duplicate entry for '1/a.jpg' \(first at line 2\)"),
])
def test_affectnet_bad_rows(tmp_path: Path, row: str, message: str):
    from _fab import landmarks68
    make_affectnet(tmp_path, [("1/a.jpg", 0)])
    write_image(tmp_path / "Manually_Annotated_Images" / "1" / "x.jpg")
    with open(tmp_path / "training.csv", "a") as fh:
        fh.write(row.replace("{lm}", landmarks68()) + "\n")
    with pytest.raises(FerError, match=message):
        load("affectnet", tmp_path)


def test_affectnet_missing_column_and_image(tmp_path: Path):
    make_affectnet(tmp_path, [("1/a.jpg", 0), ("1/b.jpg", 1)])
    (tmp_path / "Manually_Annotated_Images" / "1" / "b.jpg").unlink()
    with pytest.raises(FerError, match=r"training\.csv:3: image '1/b.jpg' is listed but absent"):
        load("affectnet", tmp_path)
    (tmp_path / "training.csv").write_text("subDirectory_filePath,expression\n1/a.jpg,0\n")
    with pytest.raises(FerError, match="missing column"):
        load("affectnet", tmp_path)


# ---- FER2013 ---------------------------------------------------------------------------------
def test_fer2013_writes_pngs_and_resumes(tmp_path: Path):
    csv = make_fer2013(tmp_path / "fer2013.csv", [(0, "Training"), (3, "PublicTest"), (6, "PrivateTest")])
    out = tmp_path / "png"
    imp = load("fer2013", csv, images_dir=out)
    assert imp.df["path"].tolist() == ["fer0000000.png", "fer0000001.png", "fer0000002.png"]
    assert imp.df["split"].tolist() == ["train", "valid", "test"]
    assert imp.df["label_name"].tolist() == ["anger", "happiness", "neutral"]
    import cv2
    img = cv2.imread(str(out / "fer0000001.png"), cv2.IMREAD_UNCHANGED)
    assert img.shape == (48, 48) and img[0, 1] == 8
    again = load("fer2013", tmp_path, images_dir=out)  # a folder holding fer2013.csv works too
    assert "0 PNG images" in again.notes[0] and "(3 already there)" in again.notes[0]


@pytest.mark.parametrize("code, pixels, usage, message", [
    ("7", None, "Training", r"fer2013\.csv:3: unknown emotion code '7'"),
    ("1", "1 2 3", "Training", r"fer2013\.csv:3: pixels must be 2304 values"),
    ("1", None, "Other", r"fer2013\.csv:3: Usage 'Other'"),
])
def test_fer2013_bad_rows_write_nothing(tmp_path: Path, code, pixels, usage, message):
    csv = make_fer2013(tmp_path / "fer2013.csv", [(0, "Training")])
    pix = pixels or " ".join(["0"] * 2304)
    with open(csv, "a") as fh:
        fh.write(f"{code},{pix},{usage}\n")
    with pytest.raises(FerError, match=message):
        load("fer2013", csv, images_dir=tmp_path / "png")
    assert not (tmp_path / "png").exists() or not any((tmp_path / "png").iterdir())


# ---- folder ----------------------------------------------------------------------------------
def test_folder_with_splits_and_synonyms(tmp_path: Path):
    for p in ["train/Happy/a.JPG", "train/angry/b.png", "train/angry/sub/c.webp", "test/neutral/d.jpeg"]:
        write_image(tmp_path / p)
    (tmp_path / "train" / "angry" / "notes.txt").write_text("not an image")
    imp = load("folder", tmp_path)
    assert imp.classes == CLASSES_7
    assert sorted(zip(imp.df["path"], imp.df["split"], imp.df["label_name"])) == [
        ("test/neutral/d.jpeg", "test", "neutral"),
        ("train/Happy/a.JPG", "train", "happiness"),
        ("train/angry/b.png", "train", "anger"),
        ("train/angry/sub/c.webp", "train", "anger"),
    ]


def test_folder_contempt_gives_eight_classes_and_can_be_dropped(tmp_path: Path):
    for p in ["contempt/a.png", "sad/b.png"]:
        write_image(tmp_path / p)
    assert load("folder", tmp_path).classes == CLASSES_8
    imp7 = load("folder", tmp_path, classes=7)
    assert imp7.df["label_name"].tolist() == ["sadness"] and sum(imp7.dropped.values()) == 1


def test_folder_unlabelled_photos_and_errors(tmp_path: Path):
    write_image(tmp_path / "photos" / "2024" / "x.jpg")
    imp = load("folder", tmp_path / "photos")
    assert imp.df["label"].tolist() == [-1] and imp.df["split"].tolist() == ["train"]
    write_image(tmp_path / "mixed" / "happy" / "a.png")
    write_image(tmp_path / "mixed" / "holiday" / "b.png")
    with pytest.raises(FerError, match="holiday: folder name is not an expression class"):
        load("folder", tmp_path / "mixed")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FerError, match="no images found"):
        load("folder", tmp_path / "empty")


def test_detect_format(tmp_path: Path, ferplus: Path):
    assert detect_format(ferplus) == "ferplus"
    assert detect_format(make_rafdb(tmp_path / "raf", RAF)) == "rafdb"
    assert detect_format(make_affectnet(tmp_path / "aff", AFF_TRAIN)) == "affectnet"
    assert detect_format(make_fer2013(tmp_path / "f13" / "fer2013.csv", [(0, "Training")])) == "fer2013"
    assert detect_format(tmp_path / "f13") == "fer2013"
    write_image(tmp_path / "imgs" / "a.png")
    assert detect_format(tmp_path / "imgs") == "folder"
    assert detect_format(tmp_path / "nope") is None
    with pytest.raises(FerError, match="unknown dataset format"):
        load("nonsense", tmp_path / "imgs")


@pytest.mark.parametrize("fmt, setup, message", [
    ("affectnet", lambda d: None, "no training.csv or validation.csv"),
    ("affectnet", lambda d: (d / "training.csv").write_text(""), "empty file"),
    ("affectnet", lambda d: (d / "training.csv").write_text(
        "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression\n"), "no rows"),
    ("fer2013", lambda d: None, "no fer2013.csv"),
    ("fer2013", lambda d: (d / "fer2013.csv").write_text("emotion,pixels,Usage\n"), "no rows"),
    ("fer2013", lambda d: (d / "fer2013.csv").write_text("emotion,Usage\n0,Training\n"), "missing column"),
])
def test_missing_or_empty_sources(tmp_path: Path, fmt, setup, message):
    setup(tmp_path)
    with pytest.raises(FerError, match=message):
        load(fmt, tmp_path)


def test_affectnet_line_numbers_survive_blank_lines(tmp_path: Path):
    from _fab import landmarks68
    make_affectnet(tmp_path, [("1/a.jpg", 0)])
    with open(tmp_path / "training.csv", "a") as fh:
        fh.write("\n" + f'1/x.jpg,1,2,3,4,"{landmarks68()}",12,0,0\n')
    with pytest.raises(FerError, match=r"training\.csv:4: unknown expression code '12'"):
        load("affectnet", tmp_path)
