"""Bounded concurrency for the blocking engine: N worker threads plus a bounded wait queue.

A request is admitted only while fewer than `workers + queue_size` are running or waiting; past that it is
refused at once with 429 and a Retry-After estimated from recent job times, instead of piling up. Each
admitted request has a deadline (waiting included): past it the client gets 504. A job still waiting when
its deadline passes never starts; a running streamed job stops at its next token; a running plain job
cannot be interrupted (torch has no cancel), so it keeps its worker until done and stays counted, which
keeps admission honest about the load.

The engine runs in threads so the event loop stays free: /healthz answers while a request computes.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from serve.errors import Overloaded, RequestTimedOut, ServiceError, error_body

_DONE = object()
DISCONNECT_POLL_S = 0.5


class ClientGone(ServiceError):
    """The client disconnected before its answer was ready (the 499 reaches no one; it is for the metrics)."""

    http_status = 499


class WorkQueue:
    def __init__(self, workers: int, queue_size: int, timeout_s: float):
        if workers < 1 or queue_size < 0 or timeout_s <= 0:
            raise ValueError(f"WorkQueue needs workers >= 1, queue_size >= 0, timeout_s > 0; got {workers}, {queue_size}, {timeout_s}")
        self.workers, self.queue_size, self.timeout_s = workers, queue_size, timeout_s
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="vidsieve-worker")
        self._lock = threading.Lock()
        self._admitted = 0  # running + waiting
        self._running = 0
        self._avg_job_s = 1.0  # running mean of job durations, for Retry-After

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return max(0, self._admitted - self._running)

    @property
    def full(self) -> bool:
        return self._admitted >= self.workers + self.queue_size

    def retry_after_s(self) -> int:
        """Seconds until a slot is likely free: one queue's worth of recent job times, at least 1."""
        return max(1, math.ceil(self._avg_job_s * (self.queue_size + self.workers) / self.workers))

    async def run(self, fn: Callable[[], Any], gone: Callable[[], Awaitable[bool]] | None = None) -> Any:
        """Run `fn()` on a worker; 429 when full, 504 past the deadline.

        gone: polled while the job waits; when it answers True (the client hung up) a job that has not
        started yet is dropped, so abandoned requests do not keep the queue busy under overload.
        """
        cancelled = threading.Event()
        future = self._submit(lambda: None if cancelled.is_set() else fn())
        result = asyncio.shield(asyncio.wrap_future(future))
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        try:
            while True:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    raise RequestTimedOut(f"request took longer than the server's limit of {self.timeout_s:g} s")
                done, _ = await asyncio.wait({result}, timeout=min(left, DISCONNECT_POLL_S) if gone else left)
                if done:
                    return result.result()
                if gone is not None and await gone():
                    raise ClientGone("client closed the connection before the answer was ready")
        except BaseException:
            cancelled.set()
            future.cancel()  # succeeds only if it has not started
            raise

    def stream(self, make_iter: Callable[[], Iterator[Any]]) -> AsyncIterator[Any]:
        """Start iterating `make_iter()` on a worker now (429 here when full); items arrive through the result.

        Admission happens in this call, before any response is sent, so a full queue is a plain 429.
        The worker stops between items once the consumer is gone (client disconnected) or the deadline passed.
        """
        loop = asyncio.get_running_loop()
        items: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def put(item, error=None):
            loop.call_soon_threadsafe(items.put_nowait, (item, error))

        def pump():
            if stop.is_set():
                return
            iterator = make_iter()
            try:
                for item in iterator:
                    put(item)
                    if stop.is_set():
                        break
            except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
                put(_DONE, e)
                return
            finally:
                close = getattr(iterator, "close", None)
                if close is not None:
                    close()
            put(_DONE)

        future = self._submit(pump)
        return self._consume(items, stop, future, loop.time() + self.timeout_s)

    async def _consume(self, items: asyncio.Queue, stop: threading.Event, future, deadline: float) -> AsyncIterator[Any]:
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    item, error = await asyncio.wait_for(items.get(), max(0.0, deadline - loop.time()))
                except asyncio.TimeoutError:
                    raise RequestTimedOut(f"request took longer than the server's limit of {self.timeout_s:g} s") from None
                if error is not None:
                    raise error
                if item is _DONE:
                    return
                yield item
        finally:
            stop.set()
            future.cancel()

    def _submit(self, job: Callable[[], Any]):
        with self._lock:
            if self.full:
                raise Overloaded(
                    f"server is busy ({self._running} running, {self.waiting} waiting, queue size {self.queue_size}); retry later",
                    self.retry_after_s(),
                )
            self._admitted += 1
        future = self._executor.submit(self._timed, job)
        future.add_done_callback(self._release)
        return future

    def _timed(self, job: Callable[[], Any]) -> Any:
        with self._lock:
            self._running += 1
        start = time.perf_counter()
        try:
            return job()
        finally:
            elapsed = time.perf_counter() - start
            with self._lock:
                self._running -= 1
                self._avg_job_s = 0.8 * self._avg_job_s + 0.2 * elapsed

    def _release(self, _future) -> None:
        with self._lock:
            self._admitted -= 1

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class RefuseWhenFull:
    """ASGI middleware: answer 429 on the compute routes while the queue is full, before reading the body.

    The queue's own admission check stays the authority (a slot may fill between this check and the
    submit); this only spares the server from receiving and spooling uploads it would refuse anyway.
    """

    def __init__(self, app, queue_of, paths: tuple[str, ...]):
        self.app = app
        self.queue_of = queue_of  # scope -> WorkQueue
        self.paths = paths

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.paths:
            queue: WorkQueue = self.queue_of(scope)
            if queue.full:
                body = json.dumps(error_body(429, f"server is busy ({queue.running} running, {queue.waiting} waiting); retry later")).encode()
                await send({"type": "http.response.start", "status": 429,
                            "headers": [(b"content-type", b"application/json"), (b"retry-after", str(queue.retry_after_s()).encode()),
                                        (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)
