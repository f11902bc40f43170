"""`Prefetch`: run an iterator one step ahead in a background thread.

    for chunk in Prefetch(sample_frame_chunks(path, 16), depth=1):
        encode(chunk)            # meanwhile the next chunk is being decoded

At most `depth` items wait in the queue, so with a consumer that drops each item the memory held is
bounded by depth + 2 items (one being produced, `depth` waiting, one being consumed). The source's
exceptions are re-raised in the consumer, at the point its item would have arrived. Closing the
Prefetch (or leaving the `with` block / a `for` loop by an exception) tells the producer to stop
after its current item. `busy_ms` is the time the producer spent inside the source (work that
overlapped the consumer's) and `wait_ms` the time the consumer spent waiting for items.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator

_DONE = object()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


class Prefetch:
    def __init__(self, source: Iterable, depth: int = 1, name: str = "vidsieve-prefetch"):
        if depth < 1:
            raise ValueError(f"Prefetch depth must be >= 1, got {depth}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self.busy_ms = 0.0
        self.wait_ms = 0.0
        self._thread = threading.Thread(target=self._run, args=(iter(source),), name=name, daemon=True)
        self._thread.start()

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, it: Iterator) -> None:
        try:
            while not self._stop.is_set():
                t = time.perf_counter()
                try:
                    item = next(it)
                except StopIteration:
                    break
                finally:
                    self.busy_ms += (time.perf_counter() - t) * 1e3
                if not self._put(item):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            self._put(_Failed(e))
            return
        finally:
            close = getattr(it, "close", None)
            if close is not None and self._stop.is_set():
                close()
        self._put(_DONE)

    def __iter__(self) -> Iterator:
        try:
            while True:
                t = time.perf_counter()
                item = self._queue.get()
                self.wait_ms += (time.perf_counter() - t) * 1e3
                if item is _DONE:
                    return
                if isinstance(item, _Failed):
                    raise item.error
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """Stop the producer after its current item (it does not block on a full queue)."""
        self._stop.set()

    def __enter__(self) -> "Prefetch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
