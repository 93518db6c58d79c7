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
from typing import Any

from vigil.redact import redact_text


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
