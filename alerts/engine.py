"""`AlertEngine`: detections records in, alert events out, for any number of cameras. No I/O.

Per camera: drop at-least-once duplicates (a frames-topic offset not after the last one of its
partition), drop the boxes the camera's object filters and masks remove (`alerts.filters`), track,
keep each track's score history, then run the camera's rules. The Kafka aggregator is a thin loop
around this class, and the benchmark and unit tests drive it directly.

`end_after_s` is measured in capture time, which only advances when a camera's frames arrive; a
camera that goes silent would keep its open alerts open forever. `sweep(now_ns)` ends them: a
camera with open alerts whose last record arrived (wall clock) more than its rules' longest
`end_after_s` plus `IDLE_GRACE_S` ago is advanced by an empty frame whose capture time is its last
capture time plus the wall time elapsed since it arrived.

`AlertEngine(..., trace=True)` keeps a `FrameTrace` per processed record (the detections and why
each removed one was removed, what the tracker made of the rest, and each rule's outcome per
tracked row): `vigil eval` re-runs the engine on the pipeline's records with it to explain every
missed event and count what each filter removed. Off in production.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from alerts.filters import Prefilter, ScoreHistory
from alerts.rules import CameraRules, CompiledRule, Frame, Outcome
from alerts.tracker import NS, ByteTracker
from alerts.zones import PolygonZone
from vigil.config import (
    AlertsConfig,
    CameraConfig,
    CameraObjectsConfig,
    ObjectsConfig,
    RuleConfig,
    VigilConfig,
    camera_objects,
)
from vigil.contracts import AlertRecord, DetectionsRecord
from vigil.detections import Detections

# Margin over end_after_s before a silent camera's alerts are ended: frames are sampled, batched
# and detected, so a live camera's records arrive with gaps of a fraction of a second to ~1 s.
IDLE_GRACE_S = 2.0


@dataclass
class EngineCounters:
    records: int = 0
    duplicates: int = 0


@dataclass(frozen=True)
class FrameTrace:
    """One processed record: its detections (all of them) and why each removed one was removed
    before tracking ("" for those kept: `alerts.filters.Prefilter`), the confirmed tracked rows,
    each rule's outcome per tracked row (`alerts.rules.Outcome`) and alert id per row, and the
    alert events it caused."""

    camera_id: str
    capture_ns: int
    frame_index: int | None
    detections: Detections
    tracked: Detections
    outcomes: dict[str, list[Outcome]]
    alert_ids: dict[str, list[str]]
    alerts: list[AlertRecord] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)


class CameraPipeline:
    """Object filters and masks, tracker, score history and rules of one camera."""

    def __init__(
        self,
        camera_id: str,
        alerts: AlertsConfig,
        rules: list[CompiledRule],
        trace: list[FrameTrace] | None = None,
        objects: CameraObjectsConfig | None = None,
    ) -> None:
        self.camera_id = camera_id
        objects = objects or camera_objects(ObjectsConfig(), CameraObjectsConfig())
        self.prefilter = Prefilter(objects)
        self.history = ScoreHistory(objects)
        self.tracker = ByteTracker(alerts.tracker)
        self.rules = CameraRules(camera_id, rules, alerts.rate_limit_per_minute, alerts.snapshot, trace is not None)
        self.trace = trace
        # Last frames-topic offset processed, per frames partition. A camera's frames are keyed to
        # one partition, so offsets only grow; a record for an offset already passed is an
        # at-least-once repeat (a detect worker or this aggregator redoing work after a crash).
        # Not `seq`: it restarts from 0 whenever ingest restarts.
        self.last_offsets: dict[tuple[str, int], int] = {}
        # For `idle_sweep`: the last frame processed and when (wall clock) its record arrived.
        self.last_frame: Frame | None = None
        self.last_arrival_ns = 0
        longest = max((r.config.end_after_s for r in rules), default=0.0)
        self.idle_after_ns = int((longest + IDLE_GRACE_S) * NS)

    def process(self, record: DetectionsRecord, now_ns: int) -> list[AlertRecord] | None:
        """Alerts caused by this record, or None when it is a duplicate and was ignored."""
        where = (record.frame.topic, record.frame.partition)
        if record.frame.offset <= self.last_offsets.get(where, -1):
            return None
        self.last_offsets[where] = record.frame.offset
        self.last_arrival_ns = now_ns
        d = record.detections
        dets = Detections(
            xyxy=d.xyxy,
            confidence=d.confidence,
            class_id=d.class_id,
            data={"class_name": np.asarray(record.class_names, dtype=object)},
        )
        kept, removed = self.prefilter.apply(dets, (record.width, record.height))
        tracked = self.tracker.update(kept, record.capture_ns)
        if self.history.enabled:
            tracked = self.history.update(tracked, (t.track_id for t in self.tracker.confirmed))
        frame = Frame(record.camera_id, record.capture_ns, record.frame, record.width, record.height)
        self.last_frame = frame
        alerts = self.rules.process(tracked, frame, now_ns)
        if self.trace is not None:
            self.trace.append(
                FrameTrace(
                    record.camera_id,
                    record.capture_ns,
                    record.frame_index,
                    dets,
                    tracked,
                    self.rules.outcomes,
                    self.rules.alert_ids,
                    alerts,
                    removed.tolist(),
                )
            )
        return alerts

    def idle_sweep(self, now_ns: int) -> list[AlertRecord]:
        """`ended` for the open alerts of a camera silent for longer than `idle_after_ns`.

        The rules see an empty frame at capture time last capture + wall time elapsed; the tracker
        is left alone, so a backlog of older frames arriving later (a detector that was down) is
        still tracked, and the alerts ended here stay in cooldown for it instead of re-firing.
        """
        last = self.last_frame
        if last is None or not self.rules.has_open():
            return []
        idle_ns = now_ns - self.last_arrival_ns
        if idle_ns <= self.idle_after_ns:
            return []
        frame = Frame(last.camera_id, last.capture_ns + idle_ns, last.ref, last.width, last.height)
        return self.rules.process(Detections.empty(), frame, now_ns)


class AlertEngine:
    """`engine.process(record, now_ns) -> [AlertRecord]` for every camera of a config. `objects`:
    the global object filters, under each camera's own (a camera not in `cameras` gets them alone)."""

    def __init__(
        self,
        alerts: AlertsConfig,
        cameras: Iterable[CameraConfig] = (),
        trace: bool = False,
        objects: ObjectsConfig | None = None,
    ) -> None:
        self.alerts = alerts
        self.objects = objects or ObjectsConfig()
        self.cameras = {c.id: c for c in cameras}
        self.pipelines: dict[str, CameraPipeline] = {}
        self.counters = EngineCounters()
        self.trace: list[FrameTrace] | None = [] if trace else None
        self._restored: list[AlertRecord] = []

    @classmethod
    def from_config(cls, config: VigilConfig) -> AlertEngine:
        return cls(config.alerts, config.cameras, objects=config.objects)

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
            camera = self.cameras.get(camera_id)
            objects = camera_objects(self.objects, camera.objects if camera is not None else CameraObjectsConfig())
            pipe = self.pipelines[camera_id] = CameraPipeline(
                camera_id, self.alerts, self._rules_for(camera_id), self.trace, objects
            )
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

    def take_removed(self) -> dict[tuple[str, str], int]:
        """(camera, reason) -> boxes removed before tracking since the last call (for the metrics)."""
        out: dict[tuple[str, str], int] = {}
        for camera_id, pipe in self.pipelines.items():
            for reason, n in pipe.prefilter.take_pending().items():
                out[camera_id, reason] = n
        return out

    def sweep(self, now_ns: int) -> list[AlertRecord]:
        """End the open alerts of every camera whose records stopped arriving (see the module
        docstring); `now_ns` is the same wall clock as `process`'s."""
        out: list[AlertRecord] = []
        for pipe in self.pipelines.values():
            out += pipe.idle_sweep(now_ns)
        return out

    def process(self, record: DetectionsRecord, now_ns: int) -> list[AlertRecord]:
        """Alerts caused by `record`; `now_ns` is the wall-clock arrival time (for latency and `sweep`)."""
        self.counters.records += 1
        result = self.pipeline(record.camera_id).process(record, now_ns)
        if result is None:
            self.counters.duplicates += 1
            return []
        return result
