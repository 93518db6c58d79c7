"""Hand-off from capture to Kafka: a bounded queue per camera and a thread that publishes it.

Capture must never wait for Kafka: a live camera that is not read falls behind and FFmpeg's
buffers fill with stale frames. So a live camera's queue is small and drops its *oldest* frame
when full (the newest is the one worth detecting), counting the drop. A replay must be
lossless instead, so its queue blocks the reader (`block_when_full=True`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ingest.metrics import CameraCounters
from vigil.contracts import FrameMeta
from vigil.kafka import KafkaError
from vigil.logs import REPEATS, log_repeated

log = logging.getLogger(__name__)
T = TypeVar("T")


class QueueClosed(Exception):  # a signal, like queue.Empty, not an error
    """The queue was closed and is empty."""


class DropOldestQueue(Generic[T]):
    """Bounded FIFO. `put` on a full queue drops the oldest item (returns how many were
    dropped: 0 or 1), or with `block_when_full` waits for room. `close()` lets `get` drain what
    is left and then raise `QueueClosed`."""

    def __init__(self, maxsize: int, block_when_full: bool = False) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self.maxsize = maxsize
        self.block_when_full = block_when_full
        self._items: deque[T] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self.dropped = 0

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)

    def put(self, item: T) -> int:
        with self._cond:
            dropped = 0
            if self.block_when_full:
                while len(self._items) >= self.maxsize and not self._closed:
                    self._cond.wait()
            elif len(self._items) >= self.maxsize:
                self._items.popleft()
                dropped = 1
                self.dropped += 1
            if self._closed:
                raise QueueClosed("queue is closed")
            self._items.append(item)
            self._cond.notify_all()
            return dropped

    def get(self, timeout: float | None = None) -> T | None:
        """The oldest item; None when `timeout` passes first; `QueueClosed` when closed and empty."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._items:
                if self._closed:
                    raise QueueClosed("queue is closed")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


@dataclass(frozen=True, eq=False)
class OutgoingFrame:
    """An encoded frame waiting to be published."""

    meta: FrameMeta
    jpeg: bytes


class FramePublisher:
    """Publishes one camera's queue to the frames topic, keyed by camera id (so one camera's
    frames stay in order on one partition). Delivery outcome arrives in the producer's I/O
    thread: success counts as published, failure (after the producer's own retries) is counted
    and logged, never fatal."""

    def __init__(
        self,
        producer: Any,  # kafka.KafkaProducer; Any keeps kafka-python out of the type surface
        topic: str,
        queue: DropOldestQueue[OutgoingFrame],
        counters: CameraCounters,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._queue = queue
        self._counters = counters
        self._key = counters.camera_id.encode()
        self._thread: threading.Thread | None = None
        self._failure_logged = False
        self.pending = 0
        self._pending_lock = threading.Lock()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"publish-{self._counters.camera_id}", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=1.0)
            except QueueClosed:
                return
            if item is not None:
                self.send(item)

    def send(self, item: OutgoingFrame) -> None:
        with self._pending_lock:
            self.pending += 1
        try:
            future = self._producer.send(self._topic, key=self._key, value=item.jpeg, headers=item.meta.to_headers())
        except KafkaError as exc:  # buffer full past max_block_ms, producer closed: a failed delivery, not fatal
            self._on_error(exc)
            return
        future.add_callback(self._on_ok, item.meta.capture_ns)
        future.add_errback(self._on_error)

    def _done(self) -> None:
        with self._pending_lock:
            self.pending -= 1

    def _on_ok(self, capture_ns: int, _metadata: Any) -> None:
        self._done()
        self._counters.published(capture_ns)
        if self._failure_logged:
            self._failure_logged = False
            REPEATS.forget(self._counters.camera_id, log)
            log.info("camera %s: Kafka accepts frames again", self._counters.camera_id)

    def _on_error(self, exc: BaseException) -> None:
        self._done()
        self._counters.inc("delivery_failures")
        # Once per outage and then a count per minute: a broker outage must not flood the log.
        self._failure_logged = True
        log_repeated(
            log, logging.WARNING, "delivery_failed", self._counters.camera_id,
            "camera %s: frame not delivered to %s after retries (%s: %s); counting further failures",
            self._counters.camera_id, self._topic, type(exc).__name__, exc,
        )  # fmt: skip
