"""Live state for the console: the newest frames of every camera with their detections, camera
states (from ingest's heartbeats on the status topic, else from frame arrival), process status,
dead letters per reason, and the events that tell the console when any of it changes.

Fed by `web.follow.LiveFollower` (frames, detections, status and dead-letter topics) and by the
alert follower (which alerts are active); read by the HTTP handlers. Everything is bounded: a few
frames per camera, a capped number of cameras, processes and reasons.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from vigil.config import CameraConfig, VigilConfig
from vigil.contracts import DetectionsRecord, FrameMeta
from vigil.status import CameraState, StatusRecord

NS = 1_000_000_000
MAX_CAMERAS = 1000
MAX_PROCESSES = 500
MAX_REASONS = 200
REFRESH_S = 10.0


def iso(ns: int | None) -> str | None:
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / NS, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class HeldFrame:
    meta: FrameMeta
    jpeg: bytes
    partition: int
    offset: int
    arrived: float
    detections: DetectionsRecord | None = None


@dataclass
class CameraView:
    frames: deque[HeldFrame]
    state: str = "unknown"
    since_ns: int = 0
    detail: str = ""
    last_detections: float = 0.0
    emitted_seq: int = -1
    last_event: dict[str, Any] | None = None
    last_event_at: float = 0.0


def boxes_json(record: DetectionsRecord | None) -> list[dict[str, Any]]:
    if record is None:
        return []
    d = record.detections
    return [
        {"box": [round(float(v), 2) for v in d.xyxy[i]], "class_name": record.class_names[i],
         "class_id": int(d.class_id[i]), "score": round(float(d.confidence[i]), 4)}
        for i in range(len(d))
    ]  # fmt: skip


def zone_json(camera: CameraConfig | None, width: int, height: int) -> list[dict[str, Any]]:
    if camera is None:
        return []
    zones = []
    for zone in camera.zones:
        scale = (width, height) if zone.units == "fraction" else (1, 1)
        zones.append(
            {
                "name": zone.name,
                "units": zone.units,
                "polygon": [list(p) for p in zone.polygon],
                "polygon_px": [[round(x * scale[0], 1), round(y * scale[1], 1)] for x, y in zone.polygon],
            }
        )
    return zones


class LiveState:
    def __init__(self, config: VigilConfig, publish: Callable[[str, dict[str, Any], str | None], None]) -> None:
        self.config = config
        self.publish = publish
        self.configured = {c.id: c for c in config.cameras}
        self._lock = threading.Lock()
        self._cameras: OrderedDict[str, CameraView] = OrderedDict()
        self._pending: OrderedDict[tuple[int, int], DetectionsRecord] = OrderedDict()
        self._status: OrderedDict[str, tuple[StatusRecord, float]] = OrderedDict()
        self._active: dict[str, set[str]] = {}
        self._dead: dict[str, int] = {}
        self._detect_times: deque[tuple[float, float]] = deque(maxlen=2000)  # (arrival, infer_ms)
        self.frames_seen = 0
        for camera_id in self.configured:
            self._view(camera_id)

    def _view(self, camera_id: str) -> CameraView:
        view = self._cameras.get(camera_id)
        if view is None:
            view = CameraView(deque(maxlen=self.config.web.live_frames))
            self._cameras[camera_id] = view
            while len(self._cameras) > MAX_CAMERAS:
                oldest = next(c for c in self._cameras if c not in self.configured)
                del self._cameras[oldest]
        return view

    # ------------------------------------------------------------------------------------ feeds

    def on_frame(self, meta: FrameMeta, jpeg: bytes, partition: int, offset: int) -> None:
        now = time.monotonic()
        held = HeldFrame(meta, jpeg, partition, offset, now)
        with self._lock:
            self.frames_seen += 1
            view = self._view(meta.camera_id)
            view.frames.append(held)
            held.detections = self._pending.pop((partition, offset), None)
            if held.detections is not None:
                view.last_detections = now
            # Without a detection worker keeping up, the live view still moves (boxes missing).
            emit = held.detections is not None or now - view.last_detections > 3.0
        if emit:
            self._emit_frame(meta.camera_id, held)

    def on_detections(self, record: DetectionsRecord) -> None:
        key = (record.frame.partition, record.frame.offset)
        now = time.monotonic()
        with self._lock:
            self._detect_times.append((now, record.timings.infer_ms))
            view = self._view(record.camera_id)
            held = next((f for f in reversed(view.frames) if (f.partition, f.offset) == key), None)
            if held is None:
                # Early (its frame is on the way) or late (its frame already left memory): a detector
                # that lags by more than the frames held must not stop the live view, so only a
                # record that meets its frame counts as detections arriving.
                self._pending[key] = record
                while len(self._pending) > 256:
                    self._pending.popitem(last=False)
                return
            view.last_detections = now
            held.detections = record
        self._emit_frame(record.camera_id, held)

    def on_status(self, record: StatusRecord) -> None:
        with self._lock:
            self._status.pop(record.process, None)
            self._status[record.process] = (record, time.time())
            while len(self._status) > MAX_PROCESSES:
                self._status.popitem(last=False)
        if record.cameras:
            self.tick(force=False)

    def on_dead_letter(self, stage: str, reason: str) -> None:
        # Numbers (offsets, sizes) vary per record; the reason without them is what groups.
        key = f"{stage}: {re.sub(r'[0-9]+', 'N', reason)[:120]}"
        with self._lock:
            if key in self._dead or len(self._dead) < MAX_REASONS:
                self._dead[key] = self._dead.get(key, 0) + 1

    def set_active(self, camera: str, alert_id: str, active: bool) -> None:
        with self._lock:
            ids = self._active.setdefault(camera, set())
            changed = (alert_id in ids) != active
            (ids.add if active else ids.discard)(alert_id)
        if changed:
            self.tick(force=False)

    # ------------------------------------------------------------------------------------ reads

    def _emit_frame(self, camera_id: str, held: HeldFrame) -> None:
        with self._lock:
            view = self._cameras.get(camera_id)
            if view is None or held.meta.seq <= view.emitted_seq and held.detections is None:
                return
            view.emitted_seq = max(view.emitted_seq, held.meta.seq)
        self.publish("frame", frame_json(held), camera_id)

    def latest(self, camera_id: str, seq: int | None = None) -> HeldFrame | None:
        with self._lock:
            view = self._cameras.get(camera_id)
            if view is None or not view.frames:
                return None
            if seq is not None:
                for held in reversed(view.frames):
                    if held.meta.seq == seq:
                        return held
            return view.frames[-1]

    def known(self, camera_id: str) -> bool:
        with self._lock:
            return camera_id in self._cameras

    def _heartbeat_state(self, camera_id: str, now: float) -> tuple[CameraState, StatusRecord, float] | None:
        best = None
        for record, received in self._status.values():
            if record.stage != "ingest":
                continue
            for camera in record.cameras:
                if camera.camera_id == camera_id and (best is None or record.time_ns > best[1].time_ns):
                    best = (camera, record, received)
        return best

    def _derive(self, camera_id: str, view: CameraView, now: float) -> tuple[str, int, str]:
        beat = self._heartbeat_state(camera_id, now)
        newest = view.frames[-1] if view.frames else None
        if beat is not None:
            camera, record, received = beat
            silent = now - received
            if silent > 3 * record.interval_s and camera.state not in ("ended", "failed"):
                return (
                    "offline",
                    int((received + 3 * record.interval_s) * NS),
                    (f"no heartbeat from {record.process} for {silent:.0f} s"),
                )
            return camera.state, camera.since_ns, camera.detail
        if newest is None:
            return "unknown", view.since_ns or time.time_ns(), "no heartbeat from ingest and no frame yet"
        configured = self.configured.get(camera_id)
        expected = 1.0 / configured.fps if configured else 1.0
        age = time.monotonic() - newest.arrived
        if age <= max(5.0, 3 * expected):
            return "streaming", view.since_ns, "from frame arrival (no ingest heartbeat yet)"
        return "offline", view.since_ns, f"no frame for {age:.0f} s (no ingest heartbeat)"

    def camera_json(self, camera_id: str) -> dict[str, Any] | None:
        with self._lock:
            view = self._cameras.get(camera_id)
            if view is None:
                return None
            return self._camera_locked(camera_id, view, time.time())

    def _camera_locked(self, camera_id: str, view: CameraView, now: float) -> dict[str, Any]:
        state, since, detail = self._derive(camera_id, view, now)
        if state != view.state:
            view.state, view.since_ns = state, since or time.time_ns()
        since = since or view.since_ns
        frames = list(view.frames)
        newest = frames[-1] if frames else None
        fps = 0.0
        if len(frames) >= 2 and frames[-1].meta.capture_ns > frames[0].meta.capture_ns:
            fps = (len(frames) - 1) * NS / (frames[-1].meta.capture_ns - frames[0].meta.capture_ns)
        configured = self.configured.get(camera_id)
        width = newest.meta.width if newest else 0
        height = newest.meta.height if newest else 0
        return {
            "id": camera_id,
            "state": state,
            "state_since_ns": since,
            "state_since_at": iso(since),
            "detail": detail,
            "fps": round(fps, 2),
            "configured_fps": configured.fps if configured else None,
            "last_frame_age_s": round(max(0.0, now - newest.meta.capture_ns / NS), 3) if newest else None,
            "width": width or None,
            "height": height or None,
            "motion_active": bool(newest and newest.meta.motion and time.monotonic() - newest.arrived < 2.0),
            "alert_active": bool(self._active.get(camera_id)),
            "zones": zone_json(configured, width, height) if newest else zone_json(configured, 1, 1),
            "latest": None
            if newest is None
            else {
                "seq": newest.meta.seq,
                "capture_ns": newest.meta.capture_ns,
                "image_url": f"/api/cameras/{camera_id}/latest.jpg?seq={newest.meta.seq}",
            },
        }

    def cameras(self) -> list[dict[str, Any]]:
        now = time.time()
        with self._lock:
            return [self._camera_locked(cid, view, now) for cid, view in self._cameras.items()]

    def tick(self, force: bool = False) -> None:
        """Publish `camera` events for cameras whose state changed (and all every REFRESH_S)."""
        now = time.time()
        events = []
        with self._lock:
            for camera_id, view in self._cameras.items():
                data = self._camera_locked(camera_id, view, now)
                key = {k: data[k] for k in ("state", "detail", "motion_active", "alert_active")}
                previous = view.last_event
                if force or previous != key or time.monotonic() - view.last_event_at >= REFRESH_S:
                    view.last_event, view.last_event_at = key, time.monotonic()
                    events.append((camera_id, data))
        for camera_id, data in events:
            self.publish("camera", data, camera_id)

    def processes(self) -> list[dict[str, Any]]:
        """Every process's newest heartbeat, but not a gone one that a restart replaced (a process
        of the same stage on the same host that started after the gone one's last beat). Gone: no
        beat for 3 × its interval, or its last beat said it was stopping."""
        now = time.time()
        with self._lock:
            items = list(self._status.values())

        def gone(record: StatusRecord, received: float) -> bool:
            stopped = any(c.name == "stopping" and not c.ok for c in record.components)
            return stopped or now - received > 3 * record.interval_s

        rows = [(r, gone(r, received)) for r, received in items]
        alive = [r for r, is_gone in rows if not is_gone]
        shown = [
            (r, is_gone)
            for r, is_gone in rows
            if not is_gone
            or not any(a.stage == r.stage and a.host == r.host and a.started_ns > r.time_ns for a in alive)
        ]
        return [
            {
                "process": r.process,
                "stage": r.stage,
                "ready": r.ready and not is_gone,
                "age_s": round(now - r.time_ns / NS, 2),
                "gone": is_gone,
                "components": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in r.components],
                "stats": dict(r.stats),
            }
            for r, is_gone in sorted(shown, key=lambda item: item[0].process)
        ]

    def detect_figures(self) -> dict[str, float]:
        now = time.monotonic()
        with self._lock:
            recent = [(t, ms) for t, ms in self._detect_times if now - t <= 10.0]
        if not recent:
            return {"fps": 0.0, "infer_ms": 0.0}
        span = max(1.0, now - recent[0][0])
        return {"fps": round(len(recent) / span, 2), "infer_ms": round(sum(ms for _, ms in recent) / len(recent), 2)}

    def dead_letters(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._dead.items()))


def frame_json(held: HeldFrame) -> dict[str, Any]:
    meta = held.meta
    return {
        "camera": meta.camera_id,
        "seq": meta.seq,
        "capture_ns": meta.capture_ns,
        "width": meta.width,
        "height": meta.height,
        "image_url": f"/api/cameras/{meta.camera_id}/latest.jpg?seq={meta.seq}",
        "detected": held.detections is not None,
        "detections": boxes_json(held.detections),
        "motion": [list(b) for b in meta.motion or ()],
    }
