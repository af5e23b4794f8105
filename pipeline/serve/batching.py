"""Dynamic batching: concurrent requests' images go through the model together.

Each request submits its images and gets a future; one worker thread takes the first waiting request, then
keeps taking requests for up to ``max_wait`` seconds (or until ``max_batch`` images), runs ``fn`` once on all
their images and hands each request its rows. Under load the service runs at the pipeline's batch throughput,
not its batch-1 latency; a lone request waits at most ``max_wait`` more than it would alone.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import numpy as np

log = logging.getLogger(__name__)


class DynamicBatcher:
    """Runs ``fn`` (list of n items -> dict of arrays with n rows each) on the items of concurrent
    :meth:`submit` calls, at most ``max_batch`` items a call (a request larger than that runs alone), after
    waiting up to ``max_wait`` seconds for more requests once the first arrives. ``calls`` and ``batch_sizes``
    count the model calls made (for tests and the bench)."""

    def __init__(self, fn: Callable[[list], dict[str, np.ndarray]], max_batch: int = 32, max_wait: float = 0.005):
        self.fn, self.max_batch, self.max_wait = fn, max(1, int(max_batch)), float(max_wait)
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._carry = None
        self.calls = 0
        self.batch_sizes: list[int] = []
        self._thread = threading.Thread(target=self._run, name="pamtri-batcher", daemon=True)
        self._thread.start()

    def submit(self, items: Sequence) -> Future:
        """A future of ``fn``'s dict for ``items`` alone (their rows of the batch they ran in)."""
        future: Future = Future()
        if self._closed:
            future.set_exception(RuntimeError("the batcher is closed"))
        elif not items:
            future.set_exception(ValueError("no items to run"))
        else:
            self._queue.put((list(items), future))
        return future

    def __call__(self, items: Sequence) -> dict[str, np.ndarray]:
        """:meth:`submit` and wait for the result."""
        return self.submit(items).result()

    def close(self) -> None:
        """Stop the worker after the requests already queued."""
        self._closed = True
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _take(self) -> list | None:
        """The requests of the next batch (None: closed): the first one waited for, then more for max_wait."""
        first, self._carry = self._carry or self._queue.get(), None
        if first is None:
            return None
        batch, size = [first], len(first[0])
        deadline = time.perf_counter() + self.max_wait
        while size < self.max_batch:
            try:
                nxt = self._queue.get(timeout=max(0.0, deadline - time.perf_counter()))
            except queue.Empty:
                break
            if nxt is None:
                self._queue.put(None)  # close after this batch
                break
            if size + len(nxt[0]) > self.max_batch:
                self._carry = nxt  # first of the next batch
                break
            batch.append(nxt)
            size += len(nxt[0])
        return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            live = [(items, f) for items, f in batch if f.set_running_or_notify_cancel()]
            if not live:
                continue
            items = [x for its, _ in live for x in its]
            try:
                out = self.fn(items)
            except BaseException as exc:  # noqa: BLE001 - every waiting request gets the error
                for _, f in live:
                    f.set_exception(exc)
                continue
            self.calls += 1
            self.batch_sizes.append(len(items))
            start = 0
            for its, f in live:
                f.set_result({k: v[start:start + len(its)] for k, v in out.items()})
                start += len(its)
