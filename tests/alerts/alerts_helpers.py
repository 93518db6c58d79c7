"""Builders for detections records and configs used by the alerts tests (no broker needed)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from vigil.config import AlertsConfig, CameraConfig, RuleConfig, TrackerConfig, ZoneConfig
from vigil.contracts import AlertRecord, DetectionsRecord, FrameRef, ModelRef
from vigil.detections import Detections

NS = 1_000_000_000
T0 = 1_700_000_000 * NS
Box = tuple[float, float, float, float]


def dets(
    boxes: Sequence[Box], scores: Sequence[float] | None = None, classes: Sequence[int] | None = None
) -> Detections:
    n = len(boxes)
    return Detections(
        xyxy=np.asarray(boxes, np.float32).reshape(-1, 4),
        confidence=np.asarray(scores if scores is not None else [0.9] * n, np.float32),
        class_id=np.asarray(classes if classes is not None else [0] * n, np.int32),
    )


def record(
    seq: int,
    boxes: Sequence[Box],
    *,
    camera: str = "cam1",
    fps: float = 5.0,
    scores: Sequence[float] | None = None,
    names: Sequence[str] | None = None,
    topic: str = "frames",
    width: int = 640,
    height: int = 480,
) -> DetectionsRecord:
    names = list(names) if names is not None else ["person"] * len(boxes)
    coco = {"person": 0, "car": 2, "dog": 16}
    d = dets(boxes, scores, [coco.get(n, 0) for n in names])
    return DetectionsRecord(
        camera_id=camera,
        seq=seq,
        capture_ns=T0 + int(seq * NS / fps),
        frame=FrameRef(topic, 0, seq),
        model=ModelRef("test", "1"),
        width=width,
        height=height,
        detections=d,
        class_names=tuple(names),
    )


IN_DOOR: Box = (280, 260, 320, 390)  # feet at (300, 390): inside ZONE
ZONE = ZoneConfig(name="door", polygon=[(200, 200), (400, 200), (400, 400), (200, 400)])


def camera(camera_id: str = "cam1", zones: Sequence[ZoneConfig] = (ZONE,)) -> CameraConfig:
    return CameraConfig(id=camera_id, url="rtsp://cam/stream", zones=list(zones))


def alerts_config(**rule: object) -> AlertsConfig:
    fields: dict[str, object] = {"name": "door", "zone": "door", "min_frames": 3, "end_after_s": 1.0, "cooldown_s": 5.0}
    fields.update(rule)
    return AlertsConfig(
        tracker=TrackerConfig(min_hits=2, lost_after_s=1.0),
        rules=[RuleConfig.model_validate(fields)],
        rate_limit_per_minute=100,
    )


def walk(x0: float, x1: float, frames: int, y: float = 250.0, w: float = 40.0, h: float = 100.0) -> list[Box]:
    """Boxes of a person walking horizontally from x0 to x1 (feet at y + h)."""
    return [(x, y, x + w, y + h) for x in np.linspace(x0, x1, frames).tolist()]


def alert(n: int, event: str = "started") -> AlertRecord:
    """An alert event as the aggregator publishes it (for the deliverer tests)."""
    return AlertRecord(
        alert_id=f"al_{n:04d}",
        event=event,  # type: ignore[arg-type]
        camera_id="cam1",
        rule="door",
        zone="door",
        class_name="person",
        class_id=0,
        track_id=n,
        confidence=0.9,
        box=(1.0, 2.0, 3.0, 4.0),
        first_seen_ns=time.time_ns(),
        last_seen_ns=time.time_ns(),
        frame=FrameRef("frames", 0, n),
        latency_ms=12.5,
    )
