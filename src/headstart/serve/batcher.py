"""Micro-batching: concurrent requests are run through the model together.

Requests queue their preprocessed images; one worker takes the first waiting request, then
gathers more for up to ``max_wait_ms`` or until ``max_batch`` images, runs the engine once
in a worker thread (so the event loop keeps accepting requests), and hands each request its
rows back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

import numpy as np

from headstart.runtime.onnx import Engine


@dataclass
class _Job:
    images: np.ndarray
    future: asyncio.Future


@dataclass
class BatchStats:
    """Counts for /health: how well batching is working."""

    batches: int = 0
    images: int = 0
    largest: int = 0
    busy_seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)


class MicroBatcher:
    """``await batcher.submit(images)`` -> logits per task for those images."""

    def __init__(self, engine: Engine, max_batch: int = 32, max_wait_ms: float = 5.0) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self.stats = BatchStats()
        self._worker: asyncio.Task | None = None

    def start(self) -> None:
        """Start the worker on the running event loop."""
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop the worker."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    async def submit(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """Queue a request's images and wait for their logits."""
        job = _Job(images, asyncio.get_running_loop().create_future())
        await self.queue.put(job)
        return await job.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self.queue.get()]
            size = len(jobs[0].images)
            deadline = loop.time() + self.max_wait
            while size < self.max_batch:
                try:
                    job = await asyncio.wait_for(self.queue.get(), deadline - loop.time())
                except (asyncio.TimeoutError, ValueError):
                    break
                jobs.append(job)
                size += len(job.images)
            batch = np.concatenate([j.images for j in jobs])
            t0 = time.perf_counter()
            try:
                logits = await asyncio.to_thread(self.engine.logits, batch)
            except Exception as e:  # a model failure fails these requests, not the server
                for j in jobs:
                    if not j.future.done():
                        j.future.set_exception(e)
                continue
            self.stats.busy_seconds += time.perf_counter() - t0
            self.stats.batches += 1
            self.stats.images += len(batch)
            self.stats.largest = max(self.stats.largest, len(batch))
            start = 0
            for j in jobs:
                n = len(j.images)
                if not j.future.done():
                    j.future.set_result({t: v[start : start + n] for t, v in logits.items()})
                start += n
