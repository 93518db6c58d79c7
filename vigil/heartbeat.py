"""Heartbeats on the status topic: how the review service, `vigil status` and dashboards learn what
every process is doing without reaching into it.

Each process publishes a `StatusRecord` (keyed by its process name) every `interval_s` and whenever
`beat()` is called (ingest calls it on every camera state change, so "reconnecting" shows at once).
Figures are passed as running totals; the heartbeat adds a `<name>_per_s` rate for each, measured
between two beats, so no stage keeps rate arithmetic of its own.

    heartbeat = Heartbeat(producer, config.topics.status.name, "detect", health, totals=worker.totals)
    heartbeat.start()
    ...
    heartbeat.stop()    # sends a last beat, so readers see the process go not-ready at once

Sends never block the stage: a failed send is logged once per outage and the next beat retries.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from vigil.health import Health
from vigil.status import CameraState, ComponentState, Stage, StatusRecord

log = logging.getLogger(__name__)
NS = 1_000_000_000


def process_name(stage: str) -> str:
    return f"{stage}@{socket.gethostname()}:{os.getpid()}"


class Heartbeat:
    def __init__(
        self,
        producer: Any,
        topic: str,
        stage: Stage,
        health: Health,
        *,
        totals: Callable[[], Mapping[str, float]] | None = None,
        cameras: Callable[[], Sequence[CameraState]] | None = None,
        interval_s: float = 5.0,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.stage: Stage = stage
        self.health = health
        self.totals = totals
        self.cameras = cameras
        self.interval_s = interval_s
        self.clock = clock
        self.process = process_name(stage)
        self.started_ns = clock()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._last: tuple[int, dict[str, float]] | None = None
        self._failing = False
        self.sent = 0

    def record(self) -> StatusRecord:
        """This process's status now (rates against the previous call)."""
        now = self.clock()
        report = self.health.ready()
        stats: dict[str, float] = {}
        if self.totals is not None:
            totals = {k: float(v) for k, v in self.totals().items()}
            stats.update(totals)
            if self._last is not None and now > self._last[0]:
                dt = (now - self._last[0]) / NS
                for name, value in totals.items():
                    if name in self._last[1]:
                        stats[f"{name}_per_s"] = max(0.0, (value - self._last[1][name]) / dt)
            self._last = (now, totals)
        return StatusRecord(
            process=self.process,
            stage=self.stage,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_ns=self.started_ns,
            time_ns=now,
            interval_s=self.interval_s,
            ready=report.ready,
            components=tuple(ComponentState(c.name, c.ok, c.detail, int(c.since * NS)) for c in report.components),
            cameras=tuple(self.cameras()) if self.cameras is not None else (),
            stats=stats,
        )

    def beat(self) -> None:
        """Publish the status now (asynchronously; never raises on a broker outage)."""
        from vigil.kafka import KafkaError

        with self._lock:
            record = self.record()
            try:
                future = self.producer.send(self.topic, key=self.process.encode(), value=record.to_bytes())
            except KafkaError as exc:
                self._failed(exc)
                return
        future.add_callback(self._sent)
        future.add_errback(self._failed)

    def _sent(self, _metadata: Any) -> None:
        self.sent += 1
        if self._failing:
            self._failing = False
            log.info("heartbeat: status topic %s reachable again", self.topic)

    def _failed(self, exc: BaseException) -> None:
        if not self._failing:
            self._failing = True
            log.warning("heartbeat: cannot publish to %s (%s); retrying every %.0fs", self.topic, exc, self.interval_s)

    def start(self) -> Heartbeat:
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{self.stage}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.beat()
            self._stop.wait(self.interval_s)

    def stop(self) -> None:
        """Stop beating; a last beat reports the process as it is now (not ready, typically)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self.health.set("stopping", False, "process is stopping")
        self.beat()
