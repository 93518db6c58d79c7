"""Per-camera ingest counters: Prometheus metrics (`vigil_ingest_*`, label `camera` = camera id,
never the URL) plus plain counts behind a `CameraStats` snapshot the CLI prints, and the camera's
state as the status topic carries it (`CameraState`)."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from vigil.redact import redact_text
from vigil.status import CameraState, CameraStateName

# A live camera down this long is "offline" rather than "reconnecting" (it is still retried).
OFFLINE_AFTER_S = 60.0
FPS_WINDOW_S = 5.0  # the published rate is measured over this window
# ingest's own states -> the status topic's words (a camera ingest stopped is offline, not ended).
_STATE_NAMES: dict[str, CameraStateName] = {
    "starting": "starting",
    "streaming": "streaming",
    "reconnecting": "reconnecting",
    "finished": "ended",
    "failed": "failed",
    "stopped": "offline",
}

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
        self._published_mono: deque[float] = deque(maxlen=1024)
        self.state = "starting"
        self.state_since_ns = time.time_ns()
        self.last_error: str | None = None
        self.last_published_capture_ns: int | None = None
        # The current outage: when it began (wall clock, for the status topic) and tries so far.
        self.down_since_ns: int | None = None
        self.attempt = 0

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

    def published(self, capture_ns: int) -> None:
        """One frame acknowledged by Kafka (`capture_ns`: its capture time)."""
        self.inc("published")
        with self._lock:
            self._published_mono.append(time.monotonic())
            self.last_published_capture_ns = max(capture_ns, self.last_published_capture_ns or capture_ns)

    def published_fps(self, now_mono: float | None = None) -> float:
        """Frames acknowledged per second over the last `FPS_WINDOW_S` (or since streaming began)."""
        now = time.monotonic() if now_mono is None else now_mono
        with self._lock:
            recent = sum(1 for t in self._published_mono if now - t <= FPS_WINDOW_S)
        streaming_for = (time.time_ns() - self.state_since_ns) / 1e9 if self.state == "streaming" else FPS_WINDOW_S
        return recent / max(1.0, min(FPS_WINDOW_S, streaming_for))

    def set_state(self, state: str) -> None:
        if state != self.state:
            self.state_since_ns = time.time_ns()
        self.state = state
        if self._metrics is not None:
            self._metrics.up.labels(camera=self.camera_id).set(1.0 if state == "streaming" else 0.0)

    def refresh_age(self) -> float | None:
        age = None if self._last_frame_mono is None else time.monotonic() - self._last_frame_mono
        if self._metrics is not None and age is not None:
            self._metrics.last_frame_age.labels(camera=self.camera_id).set(age)
        return age

    def camera_state(self, now_ns: int | None = None) -> CameraState:
        """This camera as the status topic and /readyz describe it. A live camera down for
        `OFFLINE_AFTER_S` is offline (since it went down); a camera ingest stopped is offline too."""
        now = time.time_ns() if now_ns is None else now_ns
        name = _STATE_NAMES.get(self.state, "failed")
        since = self.state_since_ns
        if self.state == "reconnecting" and self.down_since_ns is not None:
            since = self.down_since_ns
            if now - since >= OFFLINE_AFTER_S * 1e9:
                name = "offline"
        detail = self.last_error or ("ingest stopped" if self.state == "stopped" else "")
        return CameraState(
            camera_id=self.camera_id,
            state=name,
            since_ns=since,
            fps=self.published_fps() if self.state == "streaming" else 0.0,
            last_frame_ns=self.last_published_capture_ns,
            attempt=self.attempt if self.state == "reconnecting" else 0,
            detail=redact_text(detail)[:500],
        )

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
