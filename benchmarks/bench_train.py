"""Training throughput: `fer train`'s loop against a bare loop over pre-loaded tensors.

Both run in this process on the same images, model, loss, batch size and thread count, alternating
(bare, engine, bare, engine, ...) so that load from other processes affects both alike; the report
gives the median images/s of each and their ratio. The engine's figure is its own per-epoch
``images_per_s`` (the training loop only: data from the decoded cache, augmentation, normalisation,
forward, loss, backward, step, progress), the bare loop's is forward/loss/backward/step on slices of
one pre-normalised tensor.

    .venv/bin/python benchmarks/bench_train.py [--size 112] [--images 512] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _fab import make_pattern_folder  # noqa: E402

from fercli.classes import CLASSES_7  # noqa: E402
from fercli.data import normalize  # noqa: E402
from fercli.importers import ImportConfig, run_import  # noqa: E402
from fercli.losses import LFERLoss, LossConfig  # noqa: E402
from fercli.models import create_model  # noqa: E402
from fercli.training import TrainConfig, run_train, prepare_data  # noqa: E402
from fercli.transforms import Preprocess  # noqa: E402
from fercli.workspace import Workspace  # noqa: E402


def bare_loop(x: torch.Tensor, y: torch.Tensor, arch: str, batch: int, lr: float) -> float:
    torch.manual_seed(0)
    model = create_model(arch, len(CLASSES_7)).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    crit = LFERLoss(LossConfig())
    steps = len(x) // batch
    t0 = time.perf_counter()
    for s in range(steps):
        xb, yb = x[s * batch:(s + 1) * batch], y[s * batch:(s + 1) * batch]
        loss, _ = crit(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return steps * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="lfer")
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--images", type=int, default=512, help="images per class x 7 is rounded to this")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    tmp = Path(tempfile.mkdtemp(prefix="bench_train_"))
    per_class = max(args.images // 7, 2)
    root = make_pattern_folder(tmp / "data", CLASSES_7, {"train": per_class, "valid": 2}, size=args.size)
    ws = Workspace(tmp / "ws")
    run_import(ImportConfig(format="folder", src=root), ws)
    cfg = dict(arch=args.arch, input_size=args.size, epochs=1, batch_size=args.batch, workers=0, threads=args.threads,
               targets="none", checkpoint_every=0, overwrite=True, out=tmp / "run")
    data = prepare_data(TrainConfig(**cfg), ws)  # builds the decoded cache once, as `fer train` does
    pre = Preprocess("train", args.size)
    arr = data.train.dataset.array  # type: ignore[attr-defined]
    x = normalize(torch.from_numpy(np.array(arr)).permute(0, 3, 1, 2), pre, torch.device("cpu"))
    y = data.train.labels

    bare_loop(x[: args.batch * 2], y[: args.batch * 2], args.arch, args.batch, 0.01)  # warm-up, discarded
    bare, engine = [], []
    for _ in range(args.repeats):
        bare.append(bare_loop(x, y, args.arch, args.batch, 0.01))
        engine.append(run_train(TrainConfig(**cfg), ws).history[-1]["images_per_s"])
    result = {
        "arch": args.arch, "size": args.size, "images": len(y), "batch": args.batch, "threads": args.threads,
        "torch": str(torch.__version__), "bare_images_per_s": bare, "engine_images_per_s": engine,
        "bare_median": statistics.median(bare), "engine_median": statistics.median(engine),
    }
    result["ratio"] = result["engine_median"] / result["bare_median"]
    print(f"{args.arch} {args.size}x{args.size}, batch {args.batch}, {len(y)} images, {args.threads} threads, "
          f"{args.repeats} alternating repeats")
    print(f"  bare loop over pre-loaded tensors: median {result['bare_median']:.1f} img/s  {np.round(bare, 1).tolist()}")
    print(f"  fer train loop:                    median {result['engine_median']:.1f} img/s  {np.round(engine, 1).tolist()}")
    print(f"  ratio engine / bare: {result['ratio']:.3f}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
