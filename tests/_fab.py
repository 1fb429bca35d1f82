"""Fabricated copies of each dataset layout, small enough to build inside a test."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

RNG = np.random.default_rng(0)


def write_image(path: Path, size: tuple[int, int] = (48, 48), color: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size[1], size[0], 3) if color else (size[1], size[0])
    assert cv2.imwrite(str(path), RNG.integers(0, 256, shape, dtype=np.uint8))
    return path


def make_ferplus(root: Path, splits: dict[str, list[tuple[str, list[int]]]], images: bool = True) -> Path:
    """``splits`` maps FER2013Train/Valid/Test to (file name, 10 votes) rows."""
    for folder, rows in splits.items():
        d = root / folder
        d.mkdir(parents=True, exist_ok=True)
        lines = []
        for name, votes in rows:
            lines.append(f'{name},"(0, 0, 48, 48)",' + ",".join(str(v) for v in votes))
            if images:
                write_image(d / name)
        (d / "label.csv").write_text("\n".join(lines) + "\n")
    return root


def make_rafdb(root: Path, entries: list[tuple[str, int]], aligned: bool = True, original: bool = False,
               landmarks: bool = False) -> Path:
    (root / "EmoLabel").mkdir(parents=True, exist_ok=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("".join(f"{n} {c}\n" for n, c in entries))
    for name, _ in entries:
        stem = Path(name).stem
        if aligned:
            write_image(root / "Image" / "aligned" / f"{stem}_aligned.jpg", (100, 100), color=True)
        if original:
            write_image(root / "Image" / "original" / name, (200, 160), color=True)
        if landmarks:
            ann = root / "Annotation"
            (ann / "manual").mkdir(parents=True, exist_ok=True)
            (ann / "boundingbox").mkdir(parents=True, exist_ok=True)
            pts = "\n".join(f"{60 + 10 * i}.5\t{70 + 5 * i}.25" for i in range(5))
            (ann / "manual" / f"{stem}_manu_attri.txt").write_text(pts + "\n0\n2\n1\n")
            (ann / "boundingbox" / f"{stem}_boundingbox.txt").write_text("40.0 50.0 140.0 150.0\n")
    return root


def landmarks68(offset: float = 0.0) -> str:
    pts = [(float(i) + offset, float(2 * i) + offset) for i in range(68)]
    return ";".join(f"{x};{y}" for x, y in pts)


AFFECTNET_HEADER = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"


def make_affectnet(root: Path, training: list[tuple[str, int]], validation: list[tuple[str, int]] | None = None,
                   images: bool = True) -> Path:
    for fname, rows in (("training.csv", training), ("validation.csv", validation)):
        if rows is None:
            continue
        lines = [AFFECTNET_HEADER]
        for path, code in rows:
            lines.append(f'{path},10,12,100,110,"{landmarks68()}",{code},0.5,-0.25')
            if images:
                write_image(root / "Manually_Annotated_Images" / path, (128, 128), color=True)
        root.mkdir(parents=True, exist_ok=True)
        (root / fname).write_text("\n".join(lines) + "\n")
    return root


def make_fer2013(path: Path, rows: list[tuple[int, str]], pixels: list[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["emotion,pixels,Usage"]
    for i, (code, usage) in enumerate(rows):
        pix = pixels[i] if pixels else " ".join(str((i * 7 + k) % 256) for k in range(48 * 48))
        lines.append(f"{code},{pix},{usage}")
    path.write_text("\n".join(lines) + "\n")
    return path


def make_pattern_folder(root: Path, classes: tuple[str, ...], per_class: dict[str, int], size: int = 32,
                        seed: int = 0) -> Path:
    """A learnable image folder: ``root/<split>/<class>/*.png`` where class k is a bright block at
    position k of a grid, on noise. ``per_class`` maps split -> images per class."""
    rng = np.random.default_rng(seed)
    cell = size // 4
    for split, n in per_class.items():
        for k, name in enumerate(classes):
            r, c = divmod(k, 4)
            for i in range(n):
                img = rng.integers(0, 90, (size, size, 3), dtype=np.uint8)
                img[r * cell * 2:(r * 2 + 1) * cell, c * cell:(c + 1) * cell] = 230
                d = root / split / name
                d.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(d / f"{i:04d}.png"), img)
    return root


def ferplus_subset(ferplus_dir: Path, root: Path, n_train: int, n_valid: int, seed: int):
    """Import the real FERPlus into ``root`` and write ``root/sub.parquet``: a seeded sample of labelled
    train and valid rows, made the workspace's dataset. Returns (workspace, the sample's rows)."""
    import pandas as pd

    from fercli.importers import ImportConfig, run_import
    from fercli.schema import read_manifest, write_manifest
    from fercli.workspace import Workspace

    ws = Workspace(root)
    full = read_manifest(run_import(ImportConfig(format="ferplus", src=ferplus_dir, out=root / "all.parquet"), ws).out)
    df = full.df[full.df["label"] >= 0]
    sub = pd.concat([df[df.split == "train"].sample(n_train, random_state=seed),
                     df[df.split == "valid"].sample(n_valid, random_state=seed)])
    write_manifest(sub, full.classes, full.root, root / "sub.parquet")
    ws.record("dataset", root / "sub.parquet")
    return ws, sub
