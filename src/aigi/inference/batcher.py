"""Dynamic batching: one model call for the images of many concurrent requests.

A forward pass over 32 images costs far less than 32 passes over one, and a server gets
its images one request at a time. :class:`DynamicBatcher` runs a function over lists of
items in one background thread: callers ``submit`` their items, the thread takes the
first waiting job, gathers more until it holds ``max_batch`` items or ``max_wait_s`` has
passed (a few ms: under load the queue is already full by the time the thread looks, and
when idle a lone request waits only that long), makes one call, and hands every caller
its own slice of the results.

One thread is also what the model needs: a forward pass already uses every core it is
given, and torch modules are not meant to be called from several threads at once.

The queue is bounded (in items, not jobs): ``submit`` raises :class:`Overloaded`, with an
estimate of when to retry, instead of letting latency and memory grow without limit.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Generic, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Overloaded(Exception):
    """The queue is full; ``retry_after_s`` estimates when it will have room."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass
class _Job(Generic[T, R]):
    items: Sequence[T]
    future: Future = field(default_factory=Future)


class DynamicBatcher(Generic[T, R]):
    """Calls ``fn(items) -> results`` (one result per item, in order) on batches of submitted items."""

    def __init__(self, fn: Callable[[list[T]], list[R]], max_batch: int = 32, max_wait_s: float = 0.005,
                 max_queue: int = 256, name: str = "aigi-batcher") -> None:
        if max_batch < 1 or max_queue < 1:
            raise ValueError("max_batch and max_queue must be at least 1")
        self.fn, self.max_batch, self.max_wait_s, self.max_queue = fn, max_batch, max_wait_s, max_queue
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._queued = 0  # items submitted and not yet taken into a batch
        self._rate = 0.0  # items per second of recent batches (for Retry-After)
        self.batches = self.items_done = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    @property
    def queued(self) -> int:
        return self._queued

    def submit(self, items: Sequence[T]) -> Future:
        """Queue ``items``; the future gets their results. :class:`Overloaded` when the queue is full."""
        job: _Job[T, R] = _Job(list(items))
        if not job.items:
            job.future.set_result([])
            return job.future
        with self._lock:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            # A job larger than the whole queue is still taken when the queue is empty.
            if self._queued and self._queued + len(job.items) > self.max_queue:
                raise Overloaded(f"{self._queued} images are waiting for the model (limit {self.max_queue})",
                                 self._retry_after(self._queued))
            self._queued += len(job.items)
        self._queue.put(job)
        return job.future

    async def run(self, items: Sequence[T]) -> list[R]:
        """``submit`` for asyncio callers: awaits the results without blocking the event loop."""
        import asyncio

        return await asyncio.wrap_future(self.submit(items))

    def close(self, timeout: float | None = 10.0) -> None:
        """Finish the jobs already queued, then stop the thread."""
        with self._lock:
            self._closed = True
        self._queue.put(None)
        self._thread.join(timeout)

    def _retry_after(self, n_waiting: int) -> int:
        return max(1, math.ceil(n_waiting / self._rate)) if self._rate > 0 else 1

    def _gather(self, first: _Job) -> tuple[list[_Job], _Job | None, bool]:
        """``first`` and the jobs that arrive within ``max_wait_s``, up to ``max_batch`` items.
        Returns (batch, a job to start the next batch with, whether to stop after this batch)."""
        batch, n = [first], len(first.items)
        deadline = time.monotonic() + self.max_wait_s
        while n < self.max_batch:
            try:
                job = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                return batch, None, True
            if n + len(job.items) > self.max_batch:
                return batch, job, False
            batch.append(job)
            n += len(job.items)
        return batch, None, False

    def _run(self) -> None:
        carry: _Job | None = None
        stop = False
        while not stop:
            job = carry if carry is not None else self._queue.get()
            if job is None:
                break
            batch, carry, stop = self._gather(job)
            with self._lock:
                self._queued -= sum(len(j.items) for j in batch)
            # A caller that gave up (client gone, request cancelled) costs no model time.
            batch = [j for j in batch if j.future.set_running_or_notify_cancel()]
            if not batch:
                continue
            items = [x for j in batch for x in j.items]
            t0 = time.perf_counter()
            try:
                results = self.fn(items)
                if len(results) != len(items):
                    raise RuntimeError(f"the batch function returned {len(results)} results for {len(items)} items")
            except BaseException as e:  # every caller of the batch learns why
                for j in batch:
                    j.future.set_exception(e)
                continue
            elapsed = max(time.perf_counter() - t0, 1e-6)
            self._rate = len(items) / elapsed if not self._rate else 0.8 * self._rate + 0.2 * len(items) / elapsed
            self.batches += 1
            self.items_done += len(items)
            k = 0
            for j in batch:
                j.future.set_result(results[k:k + len(j.items)])
                k += len(j.items)


__all__ = ["DynamicBatcher", "Overloaded"]
