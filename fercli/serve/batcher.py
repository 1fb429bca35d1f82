"""Micro-batching: the faces of concurrent requests classified together, on one worker thread."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class _Job:
    crops: np.ndarray  # (n, S, S, 3) uint8 RGB
    tta: str
    future: asyncio.Future[np.ndarray]


@dataclass
class MicroBatcher:
    """Classifies the faces of concurrent requests together.

    :meth:`classify` queues a request's crops; one collector task takes queued jobs until they hold
    ``max_batch`` faces or ``max_wait_ms`` has passed since the first, then runs them as one pass on a
    single worker thread (a job larger than ``max_batch`` runs alone). While a pass runs, new jobs
    queue up, so under load passes fill without waiting. Jobs with different TTA run as separate
    passes of one round.
    """

    classify_fn: Callable[[np.ndarray, str], np.ndarray]
    max_batch: int = 16
    max_wait_ms: float = 5.0
    on_batch: Callable[[int, float], None] | None = None  # (faces, seconds) of each pass, for metrics
    _queue: asyncio.Queue[_Job] | None = None
    _carry: _Job | None = None  # the job that did not fit the last pass: first in the next
    _task: asyncio.Task[None] | None = None
    _executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="fer-classify"))

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def classify(self, crops: np.ndarray, tta: str) -> np.ndarray:
        """Probabilities (n, C) of ``crops``, classified in a shared pass."""
        if len(crops) == 0:
            return np.empty((0, 0))
        assert self._queue is not None, "MicroBatcher.start() was not called"
        fut: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(crops, tta, fut))
        return await fut

    async def _collect(self) -> list[_Job]:
        assert self._queue is not None
        jobs = [self._carry or await self._queue.get()]
        self._carry = None
        n = len(jobs[0].crops)
        deadline = time.monotonic() + self.max_wait_ms / 1000
        while n < self.max_batch:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    job = await asyncio.wait_for(self._queue.get(), left)
                except asyncio.TimeoutError:
                    break
            if n + len(job.crops) > self.max_batch:
                self._carry = job
                break
            jobs.append(job)
            n += len(job.crops)
        return jobs

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = await self._collect()
            jobs = [j for j in jobs if not j.future.done()]  # the request gave up (timeout, disconnect)
            for tta in dict.fromkeys(j.tta for j in jobs):
                group = [j for j in jobs if j.tta == tta]
                crops = np.concatenate([j.crops for j in group])
                t0 = time.perf_counter()
                try:
                    probs = await loop.run_in_executor(self._executor, self.classify_fn, crops, tta)
                except Exception as exc:  # one bad pass fails its requests, never the batcher
                    log.exception("classification failed")
                    for j in group:
                        if not j.future.done():
                            j.future.set_exception(exc)
                    continue
                if self.on_batch is not None:
                    self.on_batch(len(crops), time.perf_counter() - t0)
                k = 0
                for j in group:
                    if not j.future.done():
                        j.future.set_result(probs[k:k + len(j.crops)])
                    k += len(j.crops)
