"""`vigil eval`'s explanations on constructed scenes: each missed-event reason and each kind of
false alert, through the same path as a real run (the aggregator's engine re-run on the records,
then `build_report`), without a broker."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from alerts.engine import AlertEngine
from vigil.coco import COCO_CLASSES
from vigil.config import VigilConfig
from vigil.contracts import DetectionsRecord, FrameRef, ModelRef
from vigil.detections import Detections
from vigil.eval.events import EventScores
from vigil.eval.groundtruth import GroundTruth
from vigil.eval.pipeline import PipelineResult, choose_target
from vigil.eval.report import EvalReport
from vigil.eval.run import build_report, relayed_records

NS = 1_000_000_000
T0 = 1_700_000_000 * NS  # Tuesday 2023-11-14 22:13:20 UTC
FPS = 10.0
Box = tuple[float, float, float, float]
IN: Box = (100.0, 100.0, 160.0, 300.0)  # feet (130, 300): inside the zone (left half, below 40 %)
IN2: Box = (220.0, 100.0, 280.0, 300.0)
OUT_ABOVE: Box = (100.0, 60.0, 160.0, 180.0)  # feet at y 180, above the zone's top edge (192)
PHANTOM: Box = (20.0, 250.0, 60.0, 330.0)


@dataclass
class Scene:
    """Per frame: the labelled boxes {gt id: box} and the detections [(box, confidence)]."""

    frames: int
    gt: dict[int, dict[int, Box]] = field(default_factory=dict)  # frame -> {track: box}
    dets: dict[int, list[tuple[Box, float]]] = field(default_factory=dict)

    def person(self, track: int | None, frames: range, gt: Box | None, det: Box | None, conf: float = 0.9) -> Scene:
        for f in frames:
            if track is not None and gt is not None:
                self.gt.setdefault(f, {})[track] = gt
            if det is not None:
                self.dets.setdefault(f, []).append((det, conf))
        return self


def config(**rule: Any) -> VigilConfig:
    rules = {"name": "r", "zone": "left", "min_frames": 3, "end_after_s": 1.0, "cooldown_s": 30.0, "min_confidence": 0.6,
             "rejoin_s": 0.5, **rule}  # fmt: skip
    rate = rules.pop("rate_limit_per_minute", 30)
    objects = rules.pop("objects", {})
    return VigilConfig.model_validate({
        "cameras": [{"id": "cam", "kind": "replay", "url": "x.mp4", "objects": objects, "zones": [
            {"name": "left", "units": "fraction", "polygon": [[0, 0.4], [0.5, 0.4], [0.5, 1], [0, 1]]}]}],
        "alerts": {"tracker": {"min_hits": 2, "lost_after_s": 0.3, "high_threshold": 0.5}, "rules": [rules],
                   "rate_limit_per_minute": rate},
    })  # fmt: skip


def evaluate(scene: Scene, cfg: VigilConfig) -> EventScores:
    """Build the run's records, let the engine be the aggregator, and score them."""
    report = evaluate_report(scene, cfg)
    assert report.events is not None
    return report.events


def evaluate_report(scene: Scene, cfg: VigilConfig) -> EvalReport:
    gt_frames = {}
    for f in range(1, scene.frames + 1):
        boxes = scene.gt.get(f, {})
        gt_frames[f] = Detections(
            np.asarray(list(boxes.values()), np.float32).reshape(-1, 4), np.ones(len(boxes)), np.zeros(len(boxes)),
            tracker_id=np.asarray(list(boxes), np.int64), data={"ignore": np.zeros(len(boxes), bool)},
        )  # fmt: skip
    gt = GroundTruth(gt_frames, ("person",), 640, 480, FPS, "scene", list(range(1, scene.frames + 1)))
    records = {}
    for f in range(1, scene.frames + 1):
        dets = scene.dets.get(f, [])
        rec = DetectionsRecord(
            camera_id="cam", seq=f, capture_ns=T0 + int((f - 1) * NS / FPS), frame=FrameRef("frames", 0, f - 1),
            model=ModelRef("m", "1"), width=640, height=480,
            detections=Detections(np.asarray([b for b, _ in dets], np.float32).reshape(-1, 4),
                                  np.asarray([c for _, c in dets], np.float32), np.zeros(len(dets), np.int32)),
            class_names=("person",) * len(dets), frame_index=f - 1, produced_ns=T0 + int(f * NS / FPS),
        )  # fmt: skip
        records[rec.frame_key] = rec
    result = PipelineResult(records, [], {}, {k: r.capture_ns for k, r in records.items()}, scene.frames, T0, 0.2)
    target = choose_target(cfg, "x.mp4", None, None)
    aggregator = AlertEngine(cfg.alerts, [target.camera], objects=cfg.objects)
    result.alerts = [a for r in relayed_records(result) for a in aggregator.process(r, r.capture_ns)]
    report = build_report(
        Path("x.mp4"), "gt", gt, FPS, "m", target, result, None, COCO_CLASSES, cfg.alerts, cfg.objects
    )
    assert report.events is not None
    assert any("reproduced its alerts exactly" in n for n in report.notes), report.notes
    return report


def reasons(scores: EventScores) -> dict[int, str]:
    return {m.event.track_id: m.reason for m in scores.missed}


CASES: list[tuple[str, Scene, dict[str, Any], dict[int, str]]] = [
    ("never_detected", Scene(30).person(1, range(1, 31), IN, None), {}, {1: "never_detected"}),
    # Below the tracker's high threshold (0.5): low-score boxes never start a track.
    ("never_confirmed", Scene(30).person(1, range(1, 31), IN, IN, 0.3), {}, {1: "never_confirmed"}),
    # Tracked (above 0.5) but below the rule's min_confidence 0.6.
    ("rule_not_satisfied", Scene(30).person(1, range(1, 31), IN, IN, 0.55), {}, {1: "rule_not_satisfied"}),
    (
        "min_frames_not_reached",  # detected in two frames of three: the tracker bridges the gaps,
        Scene(30).person(1, range(1, 31), IN, None).person(None, [f for f in range(1, 31) if f % 3], None, IN),
        {},  # the rule needs 3 frames in a row
        {1: "min_frames_not_reached"},
    ),
    (
        "cooldown",  # in, out for 2 s, in again within cooldown_s: two events, one alert
        Scene(70)
        .person(1, range(1, 21), IN, IN)
        .person(1, range(21, 41), OUT_ABOVE, OUT_ABOVE)
        .person(1, range(41, 71), IN, IN),
        {},
        {1: "cooldown"},
    ),
    (
        "rate_limited",
        Scene(30).person(1, range(1, 31), IN, IN).person(2, range(1, 31), IN2, IN2),
        {"rate_limit_per_minute": 1},
        {2: "rate_limited"},
    ),
    (
        "outside_schedule",
        Scene(30).person(1, range(1, 31), IN, IN),
        {"schedule": [{"days": ["mon"], "start": "00:00", "end": "24:00", "timezone": "UTC"}]},
        {1: "outside_schedule"},
    ),
    (
        "merged",  # person 1 leaves the view; person 2 steps into the same spot 0.2 s later: the
        Scene(40).person(1, range(1, 16), IN, IN).person(2, range(18, 41), IN, IN),  # tracker keeps the track
        {},
        {2: "merged"},
    ),
    (
        "merged_by_rejoin",  # 0.4 s later: the tracker has dropped track 1; the rule continues its alert
        Scene(40).person(1, range(1, 16), IN, IN).person(2, range(20, 41), IN, IN),
        {"rejoin_s": 1.0},
        {2: "merged"},
    ),
    (
        "earlier_alert_running",  # the labelled feet leave the zone for 2 s, the detected box's do not
        Scene(70)
        .person(1, range(1, 21), IN, IN)
        .person(1, range(21, 41), OUT_ABOVE, IN)
        .person(1, range(41, 71), IN, IN),
        {},
        {1: "earlier_alert_running"},
    ),
    (
        "alert_not_matched",  # the detected box reaches into the zone 4 s before the labelled one does
        Scene(80).person(1, range(1, 41), OUT_ABOVE, IN).person(1, range(41, 81), IN, IN),
        {},
        {1: "alert_not_matched"},
    ),
    (
        "filtered",  # every box on the person is wider than the camera's max_ratio: removed before tracking
        Scene(30).person(1, range(1, 31), IN, IN),
        {"objects": {"filters": {"person": {"max_ratio": 0.25}}}},
        {1: "filtered"},
    ),
    (
        "below_threshold",  # tracked at 0.7, above min_confidence, but its median never reaches 0.8
        Scene(30).person(1, range(1, 31), IN, IN, 0.7),
        {"objects": {"filters": {"person": {"threshold": 0.8}}}},
        {1: "below_threshold"},
    ),
]


@pytest.mark.parametrize(("name", "scene", "rule", "expected"), CASES, ids=[c[0] for c in CASES])
def test_each_reason_for_a_missed_event(
    name: str, scene: Scene, rule: dict[str, Any], expected: dict[int, str]
) -> None:
    scores = evaluate(scene, config(**rule))
    assert reasons(scores) == expected, [(m.reason, m.detail) for m in scores.missed]
    assert all(m.detail for m in scores.missed)


def test_false_alert_kinds_and_alert_precision(tmp_path: Path) -> None:
    # Person 1 is lost for 1.5 s (longer than rejoin_s 0.5) and alerted again: a duplicate. A
    # detection where nothing is labelled alerts too: no ground truth.
    scene = Scene(60).person(1, range(1, 61), IN, None).person(None, range(1, 16), None, IN)
    scene.person(None, range(31, 61), None, IN).person(None, range(1, 31), None, PHANTOM)
    scores = evaluate(scene, config())
    kinds = sorted((f.kind, f.track_id) for f in scores.false)
    assert kinds == [("duplicate", 1), ("no_ground_truth", None)], [(f.kind, f.detail) for f in scores.false]
    assert scores.event_recall == 1.0 and scores.alert_precision == pytest.approx(1 / 3)
    assert scores.duplicates == 1


def test_report_carries_the_explanations(tmp_path: Path) -> None:
    from vigil.eval.report import EvalReport, LatencyStats
    from vigil.eval.scoring import score_detections

    scene = Scene(30).person(1, range(1, 31), IN, None).person(None, range(1, 31), None, PHANTOM)
    scores = evaluate(scene, config())
    gt = GroundTruth({}, ("person",), 640, 480, FPS, "", list(range(1, 31)))
    detection = score_detections(gt, {}, COCO_CLASSES, 0.3)
    report = EvalReport("x.mp4", "gt", "m", 30, 30, 0.3, detection, None, scores, LatencyStats.of([1.0]),
                        LatencyStats.of([]), 10.0, 3.0)  # fmt: skip
    report.write(tmp_path)
    data = json.loads((tmp_path / "report.json").read_text())["events"]
    assert data["alert_precision"] == 0.0 and data["event_recall"] == 0.0
    assert data["missed"] == [{"track_id": 1, "start_frame": 3, "end_frame": 30, "reason": "never_detected",
                               "detail": data["missed"][0]["detail"]}]  # fmt: skip
    assert data["false"][0]["kind"] == "no_ground_truth" and data["missed_reasons"] == {"never_detected": 1}
    text = (tmp_path / "report.md").read_text()
    assert "| 1, 3-30 | never_detected |" in text and "no_ground_truth" in text
    assert (tmp_path / "timeline.png").read_bytes()[:4] == b"\x89PNG"


WIDE: Box = (220.0, 150.0, 300.0, 300.0)  # 80 x 150, ratio 0.53; feet (260, 300): in the zone's right part


def test_the_report_counts_what_each_filter_and_mask_removed(tmp_path: Path) -> None:
    """Person 1 passes every control; person 2 is too wide for max_ratio 0.5 (an event lost to it);
    an unlabelled blob that alerts without the mask is masked (a false alert removed)."""
    scene = Scene(30).person(1, range(1, 31), IN, IN).person(2, range(1, 31), WIDE, WIDE)
    scene.person(None, range(1, 31), None, PHANTOM)
    blob = {"name": "blob", "polygon": [[0, 240], [80, 240], [80, 340], [0, 340]]}
    report = evaluate_report(scene, config(objects={"filters": {"person": {"max_ratio": 0.5}}, "masks": [blob]}))
    assert report.events is not None and reasons(report.events) == {2: "filtered"}
    assert report.events.false_alerts == 0
    controls = report.controls
    assert controls is not None and (controls.boxes_in, controls.boxes_kept) == (90, 30)
    effects = {e.control: e for e in controls.effects}
    assert list(effects) == ["max_ratio", "mask:blob", "all"]
    ratio, mask, everything = effects["max_ratio"], effects["mask:blob"], effects["all"]
    assert (ratio.boxes, ratio.on_labelled, ratio.alerts_removed, ratio.false_alerts_removed, ratio.events_lost) == (
        30, 30, 1, 0, 1)  # fmt: skip
    assert (mask.boxes, mask.on_labelled, mask.alerts_removed, mask.false_alerts_removed, mask.events_lost) == (
        30, 0, 1, 1, 0)  # fmt: skip
    assert (everything.boxes, everything.alerts_removed, everything.events_lost) == (60, 2, 1)
    assert mask.event_recall_without == 0.5 and mask.alert_precision_without == 0.5
    assert controls.kept_precision == 1.0 and controls.kept_recall == 0.5
    report.write(tmp_path)
    data = json.loads((tmp_path / "report.json").read_text())["filters"]
    assert data["boxes_removed"] == 60 and data["controls"]["mask:blob"]["false_alerts_removed"] == 1
    assert data["after_filters"]["recall"] == 0.5
    text = (tmp_path / "report.md").read_text()
    assert "## Object filters and masks" in text and "| mask:blob | 30 | 0 | 1 | 1 | 0 |" in text


def test_threshold_counts_the_tracks_it_held_back() -> None:
    # A labelled person at a steady 0.9 and an unlabelled blob whose one confident frame is followed by
    # low scores: the threshold holds the blob's track back and removes its false alert.
    scene = Scene(30).person(1, range(1, 31), IN, IN).person(None, range(1, 3), None, PHANTOM, 0.95)
    scene.person(None, range(3, 31), None, PHANTOM, 0.62)
    report = evaluate_report(scene, config(objects={"filters": {"person": {"threshold": 0.7}}}))
    assert report.events is not None and report.events.false_alerts == 0 and report.events.event_recall == 1.0
    assert report.controls is not None
    threshold = next(e for e in report.controls.effects if e.control == "threshold")
    assert threshold.tracks_held_back == 1 and threshold.boxes >= 25
    assert (threshold.alerts_removed, threshold.false_alerts_removed, threshold.events_lost) == (1, 1, 0)
