"""Benchmark: `fer align --detector retinaface-mobilenet` against a naive per-image loop.

The naive loop works like retinaface-pytorch's ``Model.predict_jsons``: one image per forward pass,
anchors rebuilt for every image with ``retinaface.prior_box.priorbox``, decoding with
``retinaface.box_utils``; it then aligns and writes the crops with the same code as fer align, so
both produce the same output. Both run on the same images (``../shared/faces`` repeated to at least
200) in the same process, interleaved, with the same network, weights, detection size and
thresholds; the script reports the median images/s of each and checks that every image yields the
same faces with boxes within 1 px. Exit status 1 if fer align is not at least 1.5x faster or the
detections differ.

    .venv/bin/python benchmarks/bench_align.py [--shared ../shared] [--images 216] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch

from fercli.align import DETECTORS, AlignConfig, align_face, run_align
from fercli.align.detectors import read_state_dict
from fercli.align.imageio import write_image

REPO = Path(__file__).resolve().parents[1]


def naive_detect(net: torch.nn.Module, image: np.ndarray, spec, max_size: int, threshold: float, nms_threshold: float = 0.4):
    """retinaface-pytorch's predict_jsons, step for step (with the network's own input convention)."""
    from retinaface.box_utils import decode, decode_landm
    from retinaface.prior_box import priorbox
    from torchvision.ops import nms

    with torch.no_grad():
        h0, w0 = image.shape[:2]
        scale = max_size / max(h0, w0)  # albumentations LongestMaxSize
        img = cv2.resize(image, (int(round(w0 * scale)), int(round(h0 * scale))), interpolation=cv2.INTER_LINEAR)
        if spec.rgb:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        img = (img.astype(np.float32) - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
        th, tw = img.shape[:2]
        scale_landmarks = torch.from_numpy(np.tile((tw, th), 5))
        scale_bboxes = torch.from_numpy(np.tile((tw, th), 2))
        prior_box = priorbox(min_sizes=[[16, 32], [64, 128], [256, 512]], steps=[8, 16, 32], clip=False, image_size=(th, tw))
        tensor = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        loc, conf, land = net(tensor.unsqueeze(0))
        conf = torch.softmax(conf, dim=-1)
        boxes = decode(loc.data[0], prior_box, [0.1, 0.2]) * scale_bboxes
        scores = conf[0][:, 1]
        landmarks = decode_landm(land.data[0], prior_box, [0.1, 0.2]) * scale_landmarks
        valid = torch.where(scores > threshold)[0]
        boxes, landmarks, scores = boxes[valid], landmarks[valid], scores[valid]
        keep = nms(boxes, scores, nms_threshold)
        boxes_np = boxes[keep].numpy() * (h0 / th)
        lms_np = landmarks[keep].numpy().reshape(-1, 5, 2) * (h0 / th)
        out = []
        for b, lm, s in zip(boxes_np, lms_np, scores[keep].numpy()):
            b = b.copy()
            b[[0, 2]] = np.clip(b[[0, 2]], 0, w0)
            b[[1, 3]] = np.clip(b[[1, 3]], 0, h0)
            if b[2] - b[0] >= 1 and b[3] - b[1] >= 1:
                out.append((b, lm, float(s)))
        return out


def run_naive(files: list[Path], root: Path, dst: Path, net: torch.nn.Module, spec, cfg: AlignConfig) -> dict[str, list]:
    results = {}
    for f in files:
        image = cv2.imread(str(f), cv2.IMREAD_ANYCOLOR)
        faces = naive_detect(net, image, spec, cfg.detect_size, cfg.min_score)
        rel = f.relative_to(root).as_posix()
        for k, (box, lm, score) in enumerate(faces):
            name = rel if k == 0 else f"{Path(rel).stem}_face{k}{Path(rel).suffix}"
            write_image(dst / name, align_face(image, lm, cfg.size, cfg.margin))
        results[rel] = faces
    return results


def compare(naive: dict[str, list], manifest: Path) -> tuple[int, float, int]:
    """(images compared, max box difference in px, images whose face counts differ)."""
    df = pd.read_parquet(manifest)
    worst, mismatched = 0.0, 0
    for rel, faces in naive.items():
        rows = df[(df["src_path"] == rel) & (df["status"] == "ok")]
        ours = rows[["box_x", "box_y", "box_w", "box_h"]].to_numpy(np.float64)
        ours = np.c_[ours[:, 0], ours[:, 1], ours[:, 0] + ours[:, 2], ours[:, 1] + ours[:, 3]]
        theirs = np.array([b for b, _, _ in faces]).reshape(-1, 4)
        if len(ours) != len(theirs):
            mismatched += 1
            continue
        for b in theirs:  # match each naive box to the nearest of ours
            d = np.abs(ours - b).max(axis=1)
            worst = max(worst, float(d.min()))
    return len(naive), worst, mismatched


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=Path(os.environ.get("FER_SHARED") or REPO.parent / "shared"))
    ap.add_argument("--images", type=int, default=216)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--detect-size", type=int, default=640)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--min-score", type=float, default=0.8)
    ap.add_argument("--cli", action="store_true", help="also time one `fer align` subprocess (includes interpreter start-up)")
    args = ap.parse_args()

    faces_dir = args.shared / "faces"
    weights = args.shared / "weights" / "retinaface" / "mobilenet0.25_Final.pth"
    if not faces_dir.is_dir() or not weights.is_file():
        print(f"shared data not found under {args.shared} (set FER_SHARED)", file=sys.stderr)
        return 2
    originals = sorted(p for p in faces_dir.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    tmp = Path(tempfile.mkdtemp(prefix="bench_align_"))
    try:
        src = tmp / "src"
        src.mkdir()
        files = []
        for i in range(args.images):
            f = originals[i % len(originals)]
            dest = src / f"r{i // len(originals):03d}_{f.name}"
            shutil.copyfile(f, dest)
            files.append(dest)
        cfg = AlignConfig(
            detector="retinaface-mobilenet", detector_weights=weights, faces="all", min_score=args.min_score,
            detect_size=args.detect_size, device="cpu", batch_size=args.batch_size, workers=args.workers,
        )
        # The naive loop gets the network exactly as published (fer align folds batch norms and uses
        # channels-last memory; that is part of what is measured).
        spec = DETECTORS["retinaface-mobilenet"]
        plain = spec.build().eval()
        plain.load_state_dict(read_state_dict(weights))
        print(f"{len(files)} images ({len(originals)} photos from {faces_dir} repeated), detect size {args.detect_size}, "
              f"min score {args.min_score}, CPU threads {torch.get_num_threads()}, cores {os.cpu_count()}, "
              f"fer align batch {'auto' if args.batch_size is None else args.batch_size}, workers {'auto' if args.workers is None else args.workers}")
        # The naive loop runs with torch's default thread count and with one thread; the faster of
        # the two is the baseline (on a busy machine, spinning OpenMP threads can cripple either).
        default_threads = torch.get_num_threads()
        naive_variants = sorted({default_threads, 1}, reverse=True)
        naive_t: dict[int, list[float]] = {n: [] for n in naive_variants}
        fer_t: list[float] = []
        naive_res = None
        manifest = None
        print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        for r in range(args.rounds):
            line = [f"round {r + 1}:"]
            for n_threads in naive_variants:
                torch.set_num_threads(n_threads)
                out = tmp / f"naive{r}_{n_threads}"
                t = time.perf_counter()
                naive_res = run_naive(files, src, out, plain, spec, cfg)
                naive_t[n_threads].append(time.perf_counter() - t)
                shutil.rmtree(out)
                line.append(f"naive ({n_threads} thread{'s' if n_threads > 1 else ''}) {len(files) / naive_t[n_threads][-1]:6.1f} images/s")
            torch.set_num_threads(default_threads)
            out = tmp / f"fer{r}"
            t = time.perf_counter()
            result = run_align(cfg, src, out)
            fer_t.append(time.perf_counter() - t)
            manifest = result.manifest_path
            line.append(f"fer align {len(files) / fer_t[-1]:6.1f} images/s ({result.faces} faces)")
            print("   ".join(line), flush=True)
            if r < args.rounds - 1:
                shutil.rmtree(out)
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        n, worst, mismatched = compare(naive_res, manifest)
        medians = {k: len(files) / statistics.median(v) for k, v in naive_t.items()}
        best = max(medians, key=medians.get)
        naive_ips = medians[best]
        fer_ips = len(files) / statistics.median(fer_t)
        speedup = fer_ips / naive_ips
        print("median: " + ", ".join(f"naive loop ({k} thread{'s' if k > 1 else ''}) {v:.1f} images/s" for k, v in medians.items())
              + f"; fer align {fer_ips:.1f} images/s; speed-up over the faster naive loop {speedup:.2f}x")
        print(f"detections: {n} images compared, {mismatched} with a different number of faces, "
              f"largest box difference {worst:.3f} px")
        if args.cli:
            out = tmp / "cli"
            cmd = [str(Path(sys.executable).parent / "fer"), "-q", "align", str(src), str(out), "--detector", "retinaface-mobilenet",
                   "--detector-weights", str(weights), "--faces", "all", "--min-score", str(args.min_score),
                   "--detect-size", str(args.detect_size), "--device", "cpu", "--json"]
            t = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "FER_WORKSPACE": str(tmp)})
            dt = time.perf_counter() - t
            print(f"fer align CLI (subprocess, incl. start-up): {len(files) / dt:.1f} images/s ({dt:.2f}s)")
        ok = speedup >= 1.5 and mismatched == 0 and worst <= 1.0
        print("PASS" if ok else "FAIL", "(needs >= 1.5x and boxes within 1 px)")
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
