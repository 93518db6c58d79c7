"""The live view under a detector that lags by more than the frames held in memory: its records
no longer meet their frames, and the frames must keep flowing to the console (without boxes)
instead of waiting for detections that can never be drawn."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from vigil.config import VigilConfig
from vigil.contracts import DetectionsRecord, FrameMeta, FrameRef, ModelRef
from vigil.detections import Detections
from web.live import LiveState


def record(offset: int, seq: int) -> DetectionsRecord:
    det = Detections(xyxy=np.array([[1, 2, 30, 40]], np.float32), confidence=np.array([0.9], np.float32),
                     class_id=np.array([0], np.int32))  # fmt: skip
    return DetectionsRecord("cam", seq, seq, FrameRef("f", 0, offset), ModelRef("m", "1"), 640, 480, det, ("person",))


def test_late_detections_do_not_stop_the_live_frames() -> None:
    config = VigilConfig.model_validate(
        {"cameras": [{"id": "cam", "kind": "replay", "url": "/dev/null", "fps": 5}], "web": {"live_frames": 2}}
    )
    events: list[tuple[str, dict[str, Any]]] = []
    live = LiveState(config, lambda kind, data, camera: events.append((kind, data)))
    frames = lambda: [d for k, d in events if k == "frame"]  # noqa: E731
    for seq in range(6):
        live.on_frame(FrameMeta("cam", seq, time.time_ns(), 640, 480, "replay"), b"jpeg", 0, seq)
        if seq >= 3:
            live.on_detections(record(seq - 3, seq - 3))  # its frame left memory (2 held)
    # No detections record ever met its frame: every frame went out, without boxes.
    assert [f["seq"] for f in frames()] == list(range(6))
    assert not any(f["detected"] for f in frames())
    # A record that meets its frame is drawn, and then frames wait for their detections again.
    live.on_detections(record(5, 5))
    assert frames()[-1]["seq"] == 5 and frames()[-1]["detected"] and frames()[-1]["detections"][0]["score"] == 0.9
    live.on_frame(FrameMeta("cam", 6, time.time_ns(), 640, 480, "replay"), b"jpeg", 0, 6)
    assert frames()[-1]["seq"] == 5
