"""Training and evaluation data: labelled rows of a manifest, decoded at the model's input size.

Decoding and resizing every image every epoch is the usual bottleneck for small models, so images
can be decoded once into a **decoded cache**: a uint8 ``(N, S, S, 3)`` memory-mapped ``.npy`` file
keyed by the manifest's sha256, the input size and the row selection, built atomically and reused
while they are unchanged. Batches are assembled from it without worker processes.

Augmentation (:mod:`fercli.augment`) runs face by face on uint8 batches, in-process or in worker
processes, with randomness seeded by ``(seed, epoch, step)``: a batch's augmentation does not depend
on worker count or on where a run was resumed, which is what makes ``--resume`` exact.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from fercli.augment import augment_batch
from fercli.choices import LoaderOptions  # noqa: F401  (a config base class, declared light)
from fercli.errors import FerError
from fercli.fileio import atomic_path, atomic_write_json
from fercli.progress import Track, no_track
from fercli.transforms import Preprocess, decode_image

log = logging.getLogger(__name__)
T = TypeVar("T")


class DecodeDataset(torch.utils.data.Dataset):
    """Image files decoded to uint8 RGB ``(3, S, S)`` tensors (for DataLoader workers)."""

    def __init__(self, paths: Sequence[Path], size: int) -> None:
        self.paths = list(paths)
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(decode_image(self.paths[i], self.size)).permute(2, 0, 1)


class ArrayDataset(torch.utils.data.Dataset):
    """Rows of a decoded cache as uint8 ``(3, S, S)`` tensors."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.array[i])).permute(2, 0, 1)


def cache_key(manifest_sha: str, size: int, paths: Sequence[str]) -> str:
    h = hashlib.sha256(f"{manifest_sha}:{size}:".encode())
    for p in paths:
        h.update(p.encode() + b"\0")
    return h.hexdigest()[:20]


def _worker_errors(loader: Iterable[T]) -> Iterator[T]:
    """Re-raise a FerError from a DataLoader worker as the one-line error it was (torch wraps it in a traceback)."""
    try:
        yield from loader
    except FerError as exc:
        text = str(exc)
        raise FerError(text.rsplit("FerError: ", 1)[-1] if "Original Traceback" in text else text) from None


def build_cache(paths: Sequence[Path], size: int, dest: Path, workers: int = 0, track: Track = no_track) -> np.ndarray:
    """Decode ``paths`` at ``size`` into a uint8 memmap at ``dest`` (atomically); return it read-only."""
    loader = torch.utils.data.DataLoader(DecodeDataset(paths, size), batch_size=64, num_workers=workers)
    with atomic_path(dest) as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), size, size, 3))
        i = 0
        for batch in track(_worker_errors(loader), f"decoding {len(paths):,} images into the cache", len(loader)):
            arr[i:i + len(batch)] = batch.permute(0, 2, 3, 1).numpy()
            i += len(batch)
        arr.flush()
        del arr
    return np.load(dest, mmap_mode="r")


def load_or_build_cache(paths: Sequence[Path], rel_paths: Sequence[str], size: int, manifest_sha: str,
                        cache_dir: Path, workers: int = 0, track: Track = no_track) -> np.ndarray:
    """The decoded cache for these rows, built once and reused while the key matches."""
    # the manifest's identity is its content, not where the images sit: the absolute paths join the key
    key = cache_key(manifest_sha, size, [str(p) for p in paths])
    dest = cache_dir / f"{key}.npy"
    info = cache_dir / f"{key}.json"
    if dest.is_file() and info.is_file():
        try:
            arr = np.load(dest, mmap_mode="r")
            if arr.shape == (len(paths), size, size, 3):
                log.info("decoded cache: reusing %s", dest)
                return arr
        except (ValueError, OSError):
            pass  # damaged: rebuild below
    log.info("decoded cache: building %s (%d images at %dx%d)", dest, len(paths), size, size)
    arr = build_cache(paths, size, dest, workers, track)
    atomic_write_json(info, {"manifest_sha256": manifest_sha, "size": size, "rows": len(paths)})
    return arr


@dataclass
class Split:
    """The images of one split with their targets, ready to batch."""

    dataset: torch.utils.data.Dataset
    labels: torch.Tensor  # (N,) int64 class indices
    targets: torch.Tensor | None  # (N, C) float32 distributions, or None
    paths: list[str]
    cached: bool

    def __len__(self) -> int:
        return len(self.labels)


def make_split(root: Path, rel_paths: Sequence[str], labels: np.ndarray, targets: np.ndarray | None, size: int,
               cache_dir: Path | None, manifest_sha: str, workers: int, track: Track = no_track) -> Split:
    paths = [root / p for p in rel_paths]
    if cache_dir is not None:
        ds: torch.utils.data.Dataset = ArrayDataset(
            load_or_build_cache(paths, rel_paths, size, manifest_sha, cache_dir, workers, track))
    else:
        ds = DecodeDataset(paths, size)
    return Split(ds, torch.tensor(np.asarray(labels), dtype=torch.int64),
                 None if targets is None else torch.tensor(np.asarray(targets), dtype=torch.float32),
                 list(rel_paths), cache_dir is not None)


def epoch_order(n: int, epoch: int, seed: int, labels: torch.Tensor | None = None, balanced: bool = False,
                rank: int = 0, world: int = 1, power: float = 1.0) -> list[int]:
    """This rank's sample order for one epoch: a seeded permutation, or class-balanced draws.

    Balanced sampling draws N indices with replacement, image i of class c with weight
    ``count(c) ** -power``: with ``power`` 1 each class is equally likely; with 0.5 a class is drawn in
    proportion to the square root of its count (square-root sampling, Mahajan et al. 2018). With several
    processes the order is padded to a multiple of ``world`` and dealt out round-robin (as
    :class:`torch.utils.data.DistributedSampler` does), so every rank runs the same number of steps.
    """
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    if balanced:
        if labels is None:
            raise ValueError("balanced sampling needs labels")
        counts = torch.bincount(labels, minlength=int(labels.max()) + 1).float()
        weights = (1.0 / counts.clamp_min(1).pow(power))[labels]  # power 1: exactly the old 1 / count
        order = torch.multinomial(weights, n, replacement=True, generator=g).tolist()
    else:
        order = torch.randperm(n, generator=g).tolist()
    if world > 1:
        total = -(-n // world) * world
        order = (order + order[: total - n])[rank:total:world]
    return order


def batches(order: list[int], batch_size: int, drop_last: bool = False) -> list[list[int]]:
    out = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if drop_last and out and len(out[-1]) < batch_size and len(out) > 1:
        out.pop()
    return out


class _AugmentedBatches(torch.utils.data.Dataset):
    """Batch ``i`` of a decoded cache, augmented with its own seed (for DataLoader workers)."""

    def __init__(self, split: Split, index_batches: list[list[int]], transform: Callable, seeds: list[int]) -> None:
        self.split, self.index_batches, self.transform, self.seeds = split, index_batches, transform, seeds

    def __len__(self) -> int:
        return len(self.index_batches)

    def __getitem__(self, i: int) -> torch.Tensor:
        x = _read_cached(self.split, self.index_batches[i])
        return augment_batch(x, self.transform, self.seeds[i])


def _read_cached(split: Split, idx: list[int]) -> torch.Tensor:
    # Sorted reads from the memmap are sequential on disk; restore the batch's order after.
    order = np.argsort(idx)
    arr = split.dataset.array  # type: ignore[attr-defined]
    data = torch.from_numpy(np.ascontiguousarray(arr[np.asarray(idx)[order]])).permute(0, 3, 1, 2)
    return data[torch.from_numpy(np.argsort(order))]


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # workers run side by side; each with all cores' threads would oversubscribe


def load_batches(split: Split, index_batches: list[list[int]], workers: int, transform: Callable | None = None,
                 seeds: list[int] | None = None) -> Iterator[tuple[torch.Tensor, list[int]]]:
    """uint8 image batches ``(B, 3, S, S)`` with their indices, in the given order.

    With ``transform`` (see :mod:`fercli.augment`), batch ``i`` is augmented face by face with
    ``seeds[i]``; for a cached split and ``workers > 0`` that happens in worker processes, with the
    same result as in-process.
    """
    if transform is not None and (seeds is None or len(seeds) != len(index_batches)):
        raise ValueError("augmentation needs one seed per batch")
    if split.cached and transform is not None and workers > 0 and index_batches:
        loader = torch.utils.data.DataLoader(_AugmentedBatches(split, index_batches, transform, seeds or []),
                                             batch_size=None, num_workers=workers, worker_init_fn=_one_thread)
        yield from zip(loader, index_batches)
        return
    if split.cached or workers == 0:
        for i, idx in enumerate(index_batches):
            x = _read_cached(split, idx) if split.cached else torch.stack([split.dataset[j] for j in idx])
            if transform is not None:
                x = augment_batch(x, transform, seeds[i])  # type: ignore[index]
            yield x, idx
        return
    loader = torch.utils.data.DataLoader(split.dataset, batch_sampler=index_batches, num_workers=workers,
                                         persistent_workers=False)
    for i, (data, idx) in enumerate(zip(_worker_errors(loader), index_batches)):
        if transform is not None:
            data = augment_batch(data, transform, seeds[i])  # type: ignore[index]
        yield data, idx


def normalize(x: torch.Tensor, pre: Preprocess, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """uint8 ``(B, 3, S, S)`` -> normalised float32 on ``device``, with the preset's mean and std
    (:meth:`fercli.transforms.Preprocess.normalize`)."""
    return pre.normalize(x, device, channels_last)


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a seeded, per-class ``fraction`` of rows (at least one per class with >1 rows)."""
    if not 0 < fraction < 1:
        raise FerError(f"--val-fraction must be between 0 and 1, got {fraction}")
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = int(round(len(idx) * fraction))
        if len(idx) > 1:
            k = min(max(k, 1), len(idx) - 1)
            mask[rng.choice(idx, size=k, replace=False)] = True
    return mask


def cache_dir_for(workspace_root: Path) -> Path:
    return workspace_root / ".fer" / "cache"


__all__ = [
    "ArrayDataset", "DecodeDataset", "LoaderOptions", "Split", "batches", "build_cache", "cache_dir_for", "epoch_order",
    "load_batches", "load_or_build_cache", "make_split", "normalize", "stratified_holdout",
]
