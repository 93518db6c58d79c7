"""Contract of the status topic (schema version 1, see docs/messages.md): every process's heartbeat.

Key = process name (`<stage>@<host>:<pid>`), value = JSON (`StatusRecord`). Decoding never trusts
its input: anything malformed raises `ContractError` naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from vigil.contracts import SCHEMA_VERSION, _dumps, _get, _load_json
from vigil.errors import ContractError

CameraStateName = Literal["starting", "streaming", "reconnecting", "offline", "ended", "failed"]
CAMERA_STATES: tuple[str, ...] = ("starting", "streaming", "reconnecting", "offline", "ended", "failed")
Stage = Literal["ingest", "detect", "alerts", "web"]
STAGES: tuple[str, ...] = ("ingest", "detect", "alerts", "web")


@dataclass(frozen=True)
class CameraState:
    """What ingest knows of one camera: `state` since `since_ns` (wall clock), the rate it publishes
    at, the capture time of its newest published frame, the reconnect try while reconnecting, and
    the last error (credentials already masked by ingest)."""

    camera_id: str
    state: CameraStateName
    since_ns: int
    fps: float = 0.0
    last_frame_ns: int | None = None
    attempt: int = 0
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "camera": self.camera_id,
            "state": self.state,
            "since_ns": self.since_ns,
            "fps": round(self.fps, 3),
            "last_frame_ns": self.last_frame_ns,
            "attempt": self.attempt,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, obj: Any) -> CameraState:
        if not isinstance(obj, dict):
            raise ContractError("field 'cameras[]' must be an object")
        state = _get(obj, "state", str, "cameras[].")
        if state not in CAMERA_STATES:
            raise ContractError(f"field 'cameras[].state' must be one of {CAMERA_STATES}, got {state!r}")
        last = obj.get("last_frame_ns")
        attempt = obj.get("attempt", 0)
        return cls(
            camera_id=_get(obj, "camera", str, "cameras[]."),
            state=state,  # checked above
            since_ns=_get(obj, "since_ns", int, "cameras[]."),
            fps=float(_get(obj, "fps", (int, float), "cameras[].")),
            last_frame_ns=last if isinstance(last, int) and not isinstance(last, bool) else None,
            attempt=attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else 0,
            detail=str(obj.get("detail") or "")[:500],
        )


@dataclass(frozen=True)
class ComponentState:
    """One part of a process as its `Health` registry reports it (see vigil/health.py)."""

    name: str
    ok: bool
    detail: str
    since_ns: int


@dataclass(frozen=True)
class StatusRecord:
    """A process's heartbeat on the status topic, sent every `interval_s` and on every camera state
    change. Readers take a process as gone when no heartbeat came for 3 x `interval_s`.

    `stats` carries a stage's headline figures as running totals, each with its `<name>_per_s`
    rate (ingest: `published`; detect: `frames_detected`, `inference_ms`, `batches`; alerts:
    `alerts_fired`, `delivered`; docs/messages.md lists them all), `components` its readiness
    parts, `cameras` (ingest only) the state of each camera."""

    process: str
    stage: Stage
    host: str
    pid: int
    started_ns: int
    time_ns: int
    interval_s: float
    ready: bool
    components: tuple[ComponentState, ...] = ()
    cameras: tuple[CameraState, ...] = ()
    stats: Mapping[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "process": self.process,
            "stage": self.stage,
            "host": self.host,
            "pid": self.pid,
            "started_ns": self.started_ns,
            "time_ns": self.time_ns,
            "interval_s": self.interval_s,
            "ready": self.ready,
            "components": [
                {"name": c.name, "ok": c.ok, "detail": c.detail, "since_ns": c.since_ns} for c in self.components
            ],
            "cameras": [c.to_json() for c in self.cameras],
            "stats": {k: float(v) for k, v in self.stats.items() if math.isfinite(v)},
        }

    def to_bytes(self) -> bytes:
        return _dumps(self.to_json())

    @classmethod
    def from_bytes(cls, value: bytes | None) -> StatusRecord:
        obj = _load_json(value, "status")
        stage = _get(obj, "stage", str)
        if stage not in STAGES:
            raise ContractError(f"field 'stage' must be one of {STAGES}, got {stage!r}")
        components = []
        for item in _get(obj, "components", list):
            if not isinstance(item, dict):
                raise ContractError("field 'components[]' must be an object")
            components.append(
                ComponentState(
                    name=_get(item, "name", str, "components[]."),
                    ok=_get(item, "ok", bool, "components[]."),
                    detail=str(item.get("detail") or "")[:500],
                    since_ns=_get(item, "since_ns", int, "components[]."),
                )
            )
        stats = _get(obj, "stats", dict)
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in stats.values()):
            raise ContractError("field 'stats' must map names to numbers")
        interval = float(_get(obj, "interval_s", (int, float)))
        if not 0 < interval <= 3600:
            raise ContractError(f"field 'interval_s' must be in (0, 3600], got {interval}")
        return cls(
            process=_get(obj, "process", str),
            stage=stage,  # checked above
            host=_get(obj, "host", str),
            pid=_get(obj, "pid", int),
            started_ns=_get(obj, "started_ns", int),
            time_ns=_get(obj, "time_ns", int),
            interval_s=interval,
            ready=_get(obj, "ready", bool),
            components=tuple(components),
            cameras=tuple(CameraState.from_json(c) for c in _get(obj, "cameras", list)),
            stats={str(k): float(v) for k, v in stats.items()},
        )
