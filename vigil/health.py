"""Readiness of a vigil process, reported by its parts.

Each part of a stage reports whether it can do its work right now: `health.set("kafka", True)`,
`health.set("model", False, "loading yolox_nano")`, `health.set("camera:front", False, "reconnecting")`.
The process is ready when every registered part is ok and at least one part has reported (a process
that has not yet connected to anything is not ready). Liveness is simpler: a process whose metrics
server answers is alive; `/healthz` does not consult this registry, so a stage waiting for Kafka is
not restarted by its orchestrator, only taken out of service.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from vigil.redact import redact_text
from vigil.status import CameraState


@dataclass(frozen=True)
class ComponentStatus:
    """One part's last report. `since` is the wall-clock time (Unix seconds) its `ok` last changed."""

    name: str
    ok: bool
    detail: str
    since: float


@dataclass(frozen=True)
class HealthReport:
    """Snapshot of every part; `ready` is true when all are ok and at least one has reported."""

    ready: bool
    components: tuple[ComponentStatus, ...]

    @property
    def not_ready(self) -> list[str]:
        """Names of the parts that are not ok, or a note when nothing has reported yet."""
        if not self.components:
            return ["<no component has reported yet>"]
        return [c.name for c in self.components if not c.ok]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ready": self.ready,
            "not_ready": [] if self.ready else self.not_ready,
            "components": {
                c.name: {"ok": c.ok, "detail": c.detail, "since": round(c.since, 3)} for c in self.components
            },
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


class Health:
    """Thread-safe registry of part statuses. Stages share one instance with their metrics server."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: dict[str, ComponentStatus] = {}

    def set(self, name: str, ok: bool, detail: str = "") -> None:
        """Record a part's status. `detail` is served on /readyz, so URL credentials are masked here."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"health component name must be a non-empty string, got {name!r}")
        detail = redact_text(detail)
        with self._lock:
            previous = self._parts.get(name)
            since = previous.since if previous is not None and previous.ok == ok else time.time()
            self._parts[name] = ComponentStatus(name=name, ok=bool(ok), detail=detail, since=since)

    def remove(self, name: str) -> None:
        """Forget a part (e.g. a camera that was disabled); unknown names are ignored."""
        with self._lock:
            self._parts.pop(name, None)

    def ready(self) -> HealthReport:
        with self._lock:
            parts = tuple(sorted(self._parts.values(), key=lambda c: c.name))
        return HealthReport(ready=bool(parts) and all(c.ok for c in parts), components=parts)


# ---------------------------------------------------------------------------------------------- words
# One wording of a camera's state, used by ingest's /readyz detail (and so `vigil status`), the
# progress line of `vigil up` and whoever reads the status topic: a person sees the same words
# wherever they look.

LAST_ERROR = "; last error: "


def duration_words(seconds: float) -> str:
    """'42 s', '3 min', '2 h 5 min': precise while it matters, rounder as it grows."""
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    hours, minutes = divmod(int(seconds // 60), 60)
    return f"{hours} h {minutes} min"


def clock_words(time_ns: int, now_ns: int) -> str:
    """Local wall-clock time ('07:01:29'), with the date when it is not within the last day."""
    moment = datetime.fromtimestamp(time_ns / 1e9)
    if now_ns - time_ns < 86_400 * 10**9:
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%Y-%m-%d %H:%M")


def camera_words(camera: CameraState, now_ns: int | None = None) -> str:
    """'streaming at 5.0 fps', 'reconnecting for 12 s, try 4', 'offline since 07:01:29, try 31',
    'ended', 'failed', 'starting'."""
    now = time.time_ns() if now_ns is None else now_ns
    if camera.state == "streaming":
        return f"streaming at {camera.fps:.1f} fps"
    if camera.state == "reconnecting":
        return f"reconnecting for {duration_words((now - camera.since_ns) / 1e9)}, try {camera.attempt}"
    if camera.state == "offline":
        tries = f", try {camera.attempt}" if camera.attempt else ""
        return f"offline since {clock_words(camera.since_ns, now)}{tries}"
    return camera.state


def camera_detail(camera: CameraState, now_ns: int | None = None) -> str:
    """`camera_words`, and the last error while the camera is not streaming (credentials masked)."""
    words = camera_words(camera, now_ns)
    if camera.detail and camera.state not in ("streaming", "ended"):
        return f"{words}{LAST_ERROR}{redact_text(camera.detail)}"
    return words


def short_words(detail: str) -> str:
    """A component detail without its last error: what a one-line summary shows."""
    return detail.split(LAST_ERROR, 1)[0]
