"""Runs many cameras in one process: per camera a capture thread (`CameraWorker`), a bounded
queue and a publish thread (`FramePublisher`), all sharing one Kafka producer."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ingest.camera import CameraWorker
from ingest.metrics import CameraCounters, CameraStats, IngestMetrics
from ingest.publisher import DropOldestQueue, FramePublisher, OutgoingFrame
from ingest.sources import FrameSource
from vigil.config import CameraConfig
from vigil.kafka import KafkaError
from vigil.status import CameraState

log = logging.getLogger(__name__)


@dataclass
class _Camera:
    worker: CameraWorker
    queue: DropOldestQueue[OutgoingFrame]
    publisher: FramePublisher
    counters: CameraCounters


class IngestRunner:
    """`start()`, then `stop()` (or `wait()` for recordings to end). `stats()` any time.

    `lossless=True` (replay) makes each queue block the reader instead of dropping, so every
    frame of a recording is published however slow Kafka is; cameras that are recordings with
    `replay.realtime: false` are always lossless. `freshness_s` (live cameras only) bounds the
    frames in flight to the camera's `queue_size` and drops those older than it when their turn
    comes (see `ingest.publisher`).
    """

    def __init__(
        self,
        cameras: Sequence[CameraConfig],
        producer: Any,
        topic: str,
        metrics: IngestMetrics | None = None,
        *,
        lossless: bool = False,
        sample_fps: float | None | bool = True,
        sources: dict[str, FrameSource] | None = None,
        freshness_s: float | None = None,
    ) -> None:
        self.producer = producer
        self.stop_event = threading.Event()
        self._cameras: list[_Camera] = []
        for camera in cameras:
            counters = CameraCounters(camera.id, metrics)
            # A recording read as fast as possible is for evaluation: it must lose nothing. Paced
            # replays stand in for live cameras and drop the oldest frame like them.
            fast_replay = camera.kind == "replay" and not camera.replay.realtime
            keep_all = lossless or fast_replay
            queue: DropOldestQueue[OutgoingFrame] = DropOldestQueue(camera.queue_size, block_when_full=keep_all)
            worker = CameraWorker.from_config(
                camera, queue, counters, self.stop_event,
                source=(sources or {}).get(camera.id), sample_fps=sample_fps,
            )  # fmt: skip
            live = not keep_all and freshness_s is not None
            publisher = FramePublisher(
                producer, topic, queue, counters,
                max_in_flight=camera.queue_size if live else None, max_age_s=freshness_s if live else None,
            )  # fmt: skip
            self._cameras.append(_Camera(worker, queue, publisher, counters))

    @property
    def workers(self) -> list[CameraWorker]:
        return [c.worker for c in self._cameras]

    def start(self) -> None:
        for camera in self._cameras:
            camera.publisher.start()
            camera.worker.start()

    def running(self) -> bool:
        return any(c.worker.is_alive() for c in self._cameras)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every camera's source ended (recordings); True if they all did."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for camera in self._cameras:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            camera.worker.join(remaining)
        return not self.running()

    def stop(self, flush_timeout_s: float = 30.0) -> list[CameraStats]:
        """Stop reading, publish what is queued, flush the producer; returns the final stats."""
        self.stop_event.set()
        for camera in self._cameras:
            camera.worker.join(timeout=15.0)
            camera.queue.close()
        for camera in self._cameras:
            camera.publisher.join(timeout=flush_timeout_s)
        try:
            self.producer.flush(timeout=flush_timeout_s)
        except KafkaError as exc:  # a timeout here must not stop the shutdown
            log.warning("producer flush did not complete: %s: %s", type(exc).__name__, exc)
        return self.stats()

    def stats(self) -> list[CameraStats]:
        return [c.counters.snapshot() for c in self._cameras]

    def camera_states(self) -> list[CameraState]:
        """Each camera's state for the status topic (see `CameraCounters.camera_state`)."""
        return [c.counters.camera_state() for c in self._cameras]

    def totals(self) -> dict[str, float]:
        """Running totals over every camera, for the heartbeat (which adds the rates)."""
        names = ("read", "published", "dropped", "reconnects", "delivery_failures")
        return {name: float(sum(c.counters.get(name) for c in self._cameras)) for name in names}
