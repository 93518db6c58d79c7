"""`AlertEngine`: detections records in, alert events out, for any number of cameras. No I/O.

Per camera: drop at-least-once duplicates (same frame, or a seq not after the last one), track,
then run the camera's rules. The Kafka aggregator is a thin loop around this class, and the
benchmark and unit tests drive it directly.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from alerts.rules import CameraRules, CompiledRule, Frame
from alerts.tracker import ByteTracker
from alerts.zones import PolygonZone
from vigil.config import AlertsConfig, CameraConfig, RuleConfig, VigilConfig
from vigil.contracts import AlertRecord, DetectionsRecord
from vigil.detections import Detections


@dataclass
class EngineCounters:
    records: int = 0
    duplicates: int = 0


class CameraPipeline:
    """Tracker + rules of one camera."""

    def __init__(self, camera_id: str, alerts: AlertsConfig, rules: list[CompiledRule]) -> None:
        self.camera_id = camera_id
        self.tracker = ByteTracker(alerts.tracker)
        self.rules = CameraRules(camera_id, rules, alerts.rate_limit_per_minute, alerts.snapshot)
        # Last frames-topic offset processed, per frames partition. A camera's frames are keyed to
        # one partition, so offsets only grow; a record for an offset already passed is an
        # at-least-once repeat (a detect worker or this aggregator redoing work after a crash).
        # Not `seq`: it restarts from 0 whenever ingest restarts.
        self.last_offsets: dict[tuple[str, int], int] = {}

    def process(self, record: DetectionsRecord, now_ns: int) -> list[AlertRecord] | None:
        """Alerts caused by this record, or None when it is a duplicate and was ignored."""
        where = (record.frame.topic, record.frame.partition)
        if record.frame.offset <= self.last_offsets.get(where, -1):
            return None
        self.last_offsets[where] = record.frame.offset
        d = record.detections
        dets = Detections(
            xyxy=d.xyxy,
            confidence=d.confidence,
            class_id=d.class_id,
            data={"class_name": np.asarray(record.class_names, dtype=object)},
        )
        tracked = self.tracker.update(dets, record.capture_ns)
        frame = Frame(record.camera_id, record.capture_ns, record.frame, record.width, record.height)
        return self.rules.process(tracked, frame, now_ns)


class AlertEngine:
    """`engine.process(record, now_ns) -> [AlertRecord]` for every camera of a config."""

    def __init__(self, alerts: AlertsConfig, cameras: Iterable[CameraConfig] = ()) -> None:
        self.alerts = alerts
        self.cameras = {c.id: c for c in cameras}
        self.pipelines: dict[str, CameraPipeline] = {}
        self.counters = EngineCounters()
        self._restored: list[AlertRecord] = []

    @classmethod
    def from_config(cls, config: VigilConfig) -> AlertEngine:
        return cls(config.alerts, config.cameras)

    def _rules_for(self, camera_id: str) -> list[CompiledRule]:
        camera = self.cameras.get(camera_id)
        compiled: list[CompiledRule] = []
        for rule in self.alerts.rules:
            if rule.cameras and camera_id not in rule.cameras:
                continue
            zone = self._zone(rule, camera)
            if rule.zone is not None and zone is None:
                continue  # config validation refuses this for known cameras; an unknown camera has no zones
            compiled.append(CompiledRule(rule, zone))
        return compiled

    @staticmethod
    def _zone(rule: RuleConfig, camera: CameraConfig | None) -> PolygonZone | None:
        if rule.zone is None or camera is None:
            return None
        zone = camera.zone(rule.zone)
        return PolygonZone.from_config(zone, rule.anchor) if zone is not None else None

    def pipeline(self, camera_id: str) -> CameraPipeline:
        pipe = self.pipelines.get(camera_id)
        if pipe is None:
            pipe = self.pipelines[camera_id] = CameraPipeline(camera_id, self.alerts, self._rules_for(camera_id))
            if self._restored:
                pipe.rules.restore(self._restored)
        return pipe

    def restore(self, records: list[AlertRecord], cameras: Iterable[str] | None = None) -> None:
        """Forget the state of `cameras` (default: all) and re-attach to the alerts read back."""
        self._restored = list(records)
        for camera_id in list(self.pipelines) if cameras is None else list(cameras):
            self.pipelines.pop(camera_id, None)

    def forget(self, cameras: Iterable[str]) -> None:
        for camera_id in cameras:
            self.pipelines.pop(camera_id, None)

    def process(self, record: DetectionsRecord, now_ns: int) -> list[AlertRecord]:
        self.counters.records += 1
        result = self.pipeline(record.camera_id).process(record, now_ns)
        if result is None:
            self.counters.duplicates += 1
            return []
        return result
