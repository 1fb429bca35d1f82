"""Carry FERPlus to a GPU machine that cannot see ../shared: pack it here, unpack it there.

    python experiments/gpu/pack.py pack ../shared/datasets/ferplus .gpu      # here: .gpu/ (git-ignored)
    python3 experiments/gpu/pack.py unpack .gpu /tmp/shared/datasets/ferplus   # there

The 32,137 grayscale 48x48 images travel as one lzma-compressed uint8 array (57 MB, under the
device tool's 64 MiB) with their names, plus the two label.csv files; unpacking writes the exact
FERPlus layout back (lossless PNG), so `fer data import ferplus` reads it as usual. Never commit .gpu/.
"""

from __future__ import annotations

import json
import lzma
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np


def pack(src: Path, dest: Path) -> None:
    files = sorted(src.glob("*/*.png"))
    arr = np.stack([cv2.imread(str(f), cv2.IMREAD_UNCHANGED) for f in files])
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "ferplus_names.json").write_text(json.dumps({"names": [f.relative_to(src).as_posix() for f in files],
                                                          "shape": list(arr.shape)}))
    (dest / "ferplus.u8.xz").write_bytes(lzma.compress(arr.tobytes(), preset=6))
    for split in ("Train", "Valid"):
        shutil.copyfile(src / f"FER2013{split}" / "label.csv", dest / f"{split.lower()}_label.csv")


def unpack(src: Path, dest: Path) -> None:
    meta = json.loads((src / "ferplus_names.json").read_text())
    arr = np.frombuffer(lzma.decompress((src / "ferplus.u8.xz").read_bytes()), dtype=np.uint8).reshape(meta["shape"])
    for split in ("Train", "Valid"):
        (dest / f"FER2013{split}").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / f"{split.lower()}_label.csv", dest / f"FER2013{split}" / "label.csv")
    for name, img in zip(meta["names"], arr):
        cv2.imwrite(str(dest / name), img)
    print(f"unpacked {len(arr):,} images into {dest}")


if __name__ == "__main__":
    verb, a, b = sys.argv[1:4]
    (pack if verb == "pack" else unpack)(Path(a), Path(b))
