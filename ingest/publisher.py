"""Hand-off from capture to Kafka: a bounded queue per camera and a thread that publishes it.

Capture must never wait for Kafka: a live camera that is not read falls behind and FFmpeg's
buffers fill with stale frames. So a live camera's queue is small and drops its *oldest* frame
when full (the newest is the one worth detecting), counting the drop. A replay must be
lossless instead, so its queue blocks the reader (`block_when_full=True`).

During a Kafka outage the producer would otherwise take every frame into its own buffer and
deliver the whole backlog when the broker is back, frames that every detection worker then skips
as older than `detect.max_age_s`. So a live camera keeps at most `max_in_flight` frames
unacknowledged (the rest wait in its queue, which drops the oldest), drops a frame that is already
too old when its turn comes, and its producer gives up on a frame it could not deliver while it
was fresh (`live_producer_options`): what reaches the frames topic is still worth detecting.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ingest.metrics import CameraCounters
from vigil.config import VigilConfig
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


def freshness_budget_s(config: VigilConfig) -> float:
    """How long a live frame may take from capture to Kafka's acknowledgement and still be detected:
    a third of `detect.max_age_s` to wait for its turn, a third to be delivered, a third left for
    the worker to fetch it."""
    return config.detect.max_age_s / 3


def frames_linger(config: VigilConfig) -> dict[str, Any]:
    """The `make_producer` override of every frames producer: its own linger, so that frames can trade
    latency for fewer produce requests (kafka-python spends ~1-2 ms of its I/O thread's CPU on each,
    whatever it carries) without delaying detections and alert events."""
    return {"linger_ms": config.kafka.producer.frames_linger_ms}


def live_producer_options(config: VigilConfig) -> dict[str, Any]:
    """`make_producer` overrides for live cameras: a frame not acknowledged within the freshness
    budget is given up (a delivery failure) instead of arriving later than any worker would detect
    it. Never longer than the configured timeouts; kafka-python needs delivery > linger + request.
    Lingers `frames_linger_ms`, as every frames producer does (`frames_linger`).

    Without idempotence: kafka-python 3.0's idempotent producer, once it expires a batch that was
    in flight when the broker died, resets its producer id and was seen never to send again after
    the broker came back. One request in flight keeps a camera's frames in order through retries;
    a retry after a lost acknowledgement can publish a frame twice, which costs one extra detection."""
    p, kafka = config.kafka.producer, config.kafka
    delivery = min(p.delivery_timeout_ms, max(2000, int(freshness_budget_s(config) * 1000)))
    request = min(kafka.request_timeout_ms, delivery - p.frames_linger_ms - 1)
    return frames_linger(config) | {
        "delivery_timeout_ms": delivery,
        "request_timeout_ms": request,
        "enable_idempotence": False,
        "max_in_flight_requests_per_connection": 1,
    }


class FramePublisher:
    """Publishes one camera's queue to the frames topic, keyed by camera id (so one camera's
    frames stay in order on one partition). Delivery outcome arrives in the producer's I/O
    thread: success counts as published, failure (after the producer's own retries) is counted
    and logged, never fatal.

    `max_in_flight` bounds the frames sent but not yet acknowledged (None: no bound) and
    `max_age_s` drops frames older than that when their turn comes (None: never); both are for
    live cameras (see the module docstring)."""

    def __init__(
        self,
        producer: Any,  # kafka.KafkaProducer; Any keeps kafka-python out of the type surface
        topic: str,
        queue: DropOldestQueue[OutgoingFrame],
        counters: CameraCounters,
        *,
        max_in_flight: int | None = None,
        max_age_s: float | None = None,
        clock_ns: Any = time.time_ns,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._queue = queue
        self._counters = counters
        self._key = counters.camera_id.encode()
        self._thread: threading.Thread | None = None
        self._failure_logged = False
        self._max_in_flight = max_in_flight
        self._max_age_ns = None if max_age_s is None else int(max_age_s * 1e9)
        self._clock_ns = clock_ns
        self.pending = 0
        self.stale = 0  # frames dropped as too old to be worth sending
        self._pending_cond = threading.Condition()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"publish-{self._counters.camera_id}", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        while True:
            self._await_room()
            try:
                item = self._queue.get(timeout=1.0)
            except QueueClosed:
                return
            if item is not None:
                self.send(item)

    def _await_room(self) -> None:
        """Wait while `max_in_flight` frames are unacknowledged: meanwhile the camera's queue fills
        and drops its oldest, so an outage costs the frames nobody would detect, not memory."""
        if self._max_in_flight is None:
            return
        with self._pending_cond:
            while self.pending >= self._max_in_flight:
                self._pending_cond.wait(0.5)

    def send(self, item: OutgoingFrame) -> None:
        if self._max_age_ns is not None and self._clock_ns() - item.meta.capture_ns > self._max_age_ns:
            self.stale += 1
            self._counters.inc("dropped")
            return
        with self._pending_cond:
            self.pending += 1
        try:
            future = self._producer.send(self._topic, key=self._key, value=item.jpeg, headers=item.meta.to_headers())
        except KafkaError as exc:  # buffer full past max_block_ms, producer closed: a failed delivery, not fatal
            self._on_error(exc)
            return
        future.add_callback(self._on_ok, item.meta.capture_ns)
        future.add_errback(self._on_error)

    def _done(self) -> None:
        with self._pending_cond:
            self.pending -= 1
            self._pending_cond.notify_all()

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
