"""Per-camera ingest counters: Prometheus metrics (`vigil_ingest_*`, label `camera` = camera id,
never the URL) plus plain counts behind a `CameraStats` snapshot the CLI prints."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

_COUNTERS = {
    "read": "Frames decoded from the source",
    "sampled": "Frames chosen by the fps sampler",
    "motion_skipped": "Sampled frames not sent because nothing moved",
    "published": "Frames acknowledged by Kafka",
    "dropped": "Frames dropped because the publish queue was full (Kafka slow or away) or they were too old to send",
    "reconnects": "Times the source was reopened after a failure",
    "frame_errors": "Frames OpenCV or the motion detector could not process (the stream is reopened)",
    "delivery_failures": "Frames Kafka did not accept after the producer's retries",
}


class IngestMetrics:
    """The metric families of one registry. Create one per process (or per test registry)."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        self.counters = {
            name: Counter(f"vigil_ingest_frames_{name}" if name in ("read", "sampled", "published", "dropped")
                          else f"vigil_ingest_{name}", help_, ["camera"], registry=registry)
            for name, help_ in _COUNTERS.items()
        }  # fmt: skip
        self.last_frame_age = Gauge(
            "vigil_ingest_last_frame_age_seconds",
            "Seconds since the last frame was read",
            ["camera"],
            registry=registry,
        )
        self.up = Gauge("vigil_ingest_camera_up", "1 while the camera delivers frames", ["camera"], registry=registry)


_default: IngestMetrics | None = None
_default_lock = threading.Lock()


def default_metrics() -> IngestMetrics:
    """The process-wide metrics in prometheus_client's default registry (created on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = IngestMetrics()
        return _default


@dataclass(frozen=True)
class CameraStats:
    camera_id: str
    state: str
    read: int
    sampled: int
    motion_skipped: int
    published: int
    dropped: int
    reconnects: int
    frame_errors: int
    delivery_failures: int
    last_frame_age_s: float | None
    last_error: str | None

    def line(self) -> str:
        age = f"{self.last_frame_age_s:.1f}s" if self.last_frame_age_s is not None else "-"
        text = (
            f"{self.camera_id}: {self.state}, read {self.read}, sampled {self.sampled}, "
            f"motion-skipped {self.motion_skipped}, published {self.published}, dropped {self.dropped}, "
            f"reconnects {self.reconnects}, frame errors {self.frame_errors}, "
            f"delivery failures {self.delivery_failures}, last frame {age} ago"
        )
        return text + (f" (last error: {self.last_error})" if self.last_error and self.state != "streaming" else "")


class CameraCounters:
    """Counts for one camera, thread-safe (capture and publish threads both write)."""

    def __init__(self, camera_id: str, metrics: IngestMetrics | None = None) -> None:
        self.camera_id = camera_id
        self._metrics = metrics
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(_COUNTERS, 0)
        self._last_frame_mono: float | None = None
        self.state = "starting"
        self.last_error: str | None = None

    def inc(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount
        if self._metrics is not None and amount:
            self._metrics.counters[name].labels(camera=self.camera_id).inc(amount)

    def get(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def frame_read(self) -> None:
        self.inc("read")
        self._last_frame_mono = time.monotonic()
        if self._metrics is not None:
            self._metrics.last_frame_age.labels(camera=self.camera_id).set(0.0)

    def set_state(self, state: str) -> None:
        self.state = state
        if self._metrics is not None:
            self._metrics.up.labels(camera=self.camera_id).set(1.0 if state == "streaming" else 0.0)

    def refresh_age(self) -> float | None:
        age = None if self._last_frame_mono is None else time.monotonic() - self._last_frame_mono
        if self._metrics is not None and age is not None:
            self._metrics.last_frame_age.labels(camera=self.camera_id).set(age)
        return age

    def snapshot(self) -> CameraStats:
        age = self.refresh_age()
        with self._lock:
            counts = dict(self._counts)
        return CameraStats(
            camera_id=self.camera_id,
            state=self.state,
            last_frame_age_s=age,
            last_error=self.last_error,
            **counts,
        )
