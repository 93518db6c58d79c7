"""Scoring against ground truth, without the pipeline: the numbers must be right before the
pipeline's numbers can be trusted."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vigil.coco import COCO_CLASSES
from vigil.config import RuleConfig, ZoneConfig
from vigil.detections import Detections
from vigil.eval.events import FiredAlert, ground_truth_events, match_events
from vigil.eval.groundtruth import GroundTruth, GroundTruthError, load_coco, load_mot, mot_to_coco
from vigil.eval.report import EvalReport, LatencyStats
from vigil.eval.scoring import match_frame, score_detections
from vigil.geometry import box_iou, points_in_polygon

FOOTAGE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "footage"


@pytest.fixture(scope="module")
def campus() -> GroundTruth:
    return load_mot(FOOTAGE / "TUD-Campus" / "gt.txt")


def perfect(gt: GroundTruth, score: float = 0.9) -> dict[int, Detections]:
    return {
        f: Detections(gt.boxes(f).xyxy, np.full(len(gt.boxes(f)), score), np.zeros(len(gt.boxes(f))))
        for f in gt.frame_numbers
    }


def test_mot_loader_reads_the_shared_clip(campus: GroundTruth) -> None:
    assert campus.frame_numbers == list(range(1, 72))  # seqinfo.ini: 71 frames numbered from 1
    assert (campus.width, campus.height, campus.fps) == (640, 480, 25.0)
    assert campus.box_count == 359  # rows in gt.txt
    first = campus.boxes(1)
    assert first.tracker_id is not None and first.tracker_id[0] == 1
    np.testing.assert_allclose(first.xyxy[0], [399, 182, 399 + 121, 182 + 229])


def test_perfect_predictions_score_one(campus: GroundTruth) -> None:
    scores = score_detections(campus, perfect(campus), COCO_CLASSES, threshold=0.5)
    overall = scores.overall
    assert overall.ap50 == pytest.approx(1.0) and overall.ap50_95 == pytest.approx(1.0)
    assert (overall.precision, overall.recall, overall.tp, overall.fp, overall.fn) == (1.0, 1.0, 359, 0, 0)


def test_misses_false_positives_and_threshold(campus: GroundTruth) -> None:
    preds = perfect(campus)
    # Drop every other frame's detections (misses) and add a junk box to each frame (false positives).
    for frame in campus.frame_numbers[::2]:
        preds[frame] = Detections.empty()
    for frame in campus.frame_numbers:
        junk = Detections(np.array([[0, 0, 5, 5]]), np.array([0.3]), np.array([0]))
        preds[frame] = Detections.merge([preds[frame], junk])
    high = score_detections(campus, preds, COCO_CLASSES, threshold=0.5).overall
    low = score_detections(campus, preds, COCO_CLASSES, threshold=0.2).overall
    assert high.fp == 0 and high.recall < 0.6 and high.precision == 1.0
    assert low.fp == 71 and low.tp == high.tp
    assert 0.3 < high.ap50 < 0.7


def test_ignore_regions_neither_count_nor_penalise() -> None:
    gt = Detections(
        xyxy=np.array([[0, 0, 10, 10], [100, 100, 150, 150]]),
        confidence=np.ones(2),
        class_id=np.zeros(2),
        data={"ignore": np.array([False, True])},
    )
    pred = Detections(
        np.array([[0, 0, 10, 10], [105, 105, 140, 140], [300, 300, 310, 310]]), [0.9, 0.8, 0.7], [0, 0, 0]
    )
    tp, ignored, missed = match_frame(gt, pred, 0.5)
    assert tp.tolist() == [True, False, False]
    assert ignored.tolist() == [False, True, False]
    assert missed == 0


def test_box_iou_table() -> None:
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    np.testing.assert_allclose(box_iou(a, b)[0], [1.0, 50 / 150, 0.0], rtol=1e-6)


def test_coco_path_gives_the_same_scores(campus: GroundTruth, tmp_path: Path) -> None:
    path = tmp_path / "campus.json"
    path.write_text(json.dumps(mot_to_coco(campus)))
    coco = load_coco(path)
    assert coco.class_names == ("person",) and coco.frame_numbers == campus.frame_numbers
    preds = perfect(campus)
    for frame in campus.frame_numbers[::3]:
        preds[frame] = preds[frame][1:]
    a = score_detections(campus, preds, COCO_CLASSES, 0.5).overall
    b = score_detections(coco, preds, COCO_CLASSES, 0.5).overall
    assert (a.ap50, a.tp, a.fn) == pytest.approx((b.ap50, b.tp, b.fn))


def test_unknown_class_in_labels_is_refused(campus: GroundTruth) -> None:
    campus_renamed = GroundTruth(campus.frames, ("pedestrian",), 640, 480, 25.0)
    with pytest.raises(GroundTruthError, match="'pedestrian' is not one of the model's classes"):
        score_detections(campus_renamed, {}, COCO_CLASSES, 0.5)


def test_bad_mot_rows_are_reported(tmp_path: Path) -> None:
    path = tmp_path / "gt.txt"
    path.write_text("1,1,10,10,5,5,1\n0,2,1,1,1,1,1\n")
    with pytest.raises(GroundTruthError, match="gt.txt:2: MOT frames start at 1"):
        load_mot(path)


def test_points_in_polygon() -> None:
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], np.float32)
    points = np.array([[5, 5], [15, 5], [-1, -1], [9.9, 0.1]], np.float32)
    assert points_in_polygon(points, square).tolist() == [True, False, False, True]


def synthetic_walk(frames: int = 60, fps: float = 10.0) -> GroundTruth:
    """One person walking left to right through a zone in the middle third of a 300-px frame."""
    boxes = {}
    for f in range(1, frames + 1):
        x = 5.0 * f
        boxes[f] = Detections(
            np.array([[x, 50, x + 20, 100]]), [1.0], [0], tracker_id=np.array([7]), data={"ignore": np.array([False])}
        )
    return GroundTruth(boxes, ("person",), 300, 120, fps)


def test_ground_truth_event_of_a_walk_through() -> None:
    gt = synthetic_walk()
    zone = ZoneConfig(name="mid", polygon=[(100, 0), (200, 0), (200, 120), (100, 120)])
    rule = RuleConfig(name="r", zone="mid", min_frames=3, end_after_s=0.5)
    events = ground_truth_events(gt, zone, rule, fps=10)
    # Anchor x = 5f + 10 enters the zone at f=18 (x=100): third consecutive frame is f=20;
    # the last frame inside is f=37 (x=195; the right edge x=200 is outside), and 0.5 s = 5 frames
    # outside ends the event.
    assert [(e.track_id, e.start_frame, e.end_frame) for e in events] == [(7, 20, 37)]
    dwell = RuleConfig(name="r", zone="mid", min_frames=1, min_dwell_s=1.0, end_after_s=0.5)
    assert ground_truth_events(gt, zone, dwell, fps=10)[0].start_frame == 28


def test_match_events_recall_and_false_alerts() -> None:
    gt = synthetic_walk()
    zone = ZoneConfig(name="mid", polygon=[(100, 0), (200, 0), (200, 120), (100, 120)])
    events = ground_truth_events(gt, zone, RuleConfig(name="r", zone="mid", min_frames=3), fps=10)
    box = tuple(float(v) for v in gt.boxes(22).xyxy[0])
    good = FiredAlert("a", 22, box)  # type: ignore[arg-type]
    repeat = FiredAlert("b", 24, box)  # type: ignore[arg-type]
    wrong_place = FiredAlert("c", 22, (250.0, 0.0, 290.0, 20.0))
    scores = match_events(gt, events, [good, repeat, wrong_place], fps=10)
    assert scores.event_recall == 1.0
    assert scores.false_alerts == 2
    assert scores.false_alerts_per_hour == pytest.approx(2 / (6 / 3600))


def test_report_files(campus: GroundTruth, tmp_path: Path) -> None:
    scores = score_detections(campus, perfect(campus), COCO_CLASSES, 0.5)
    report = EvalReport(
        video="TUD-Campus.mp4",
        ground_truth="gt.txt",
        model="m",
        frames_expected=71,
        frames_scored=71,
        threshold=0.5,
        pipeline=scores,
        bare=scores,
        events=None,
        capture_to_detection=LatencyStats.of([10.0, 20.0, 30.0]),
        capture_to_alert=LatencyStats.of([]),
        pipeline_fps=20.0,
        wall_s=3.5,
    )
    written = report.write(tmp_path)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["pipeline"]["overall"]["ap50"] == pytest.approx(1.0)
    assert data["latency_ms"]["capture_to_detection"]["p50_ms"] == pytest.approx(20.0)
    for png in [p for p in written if p.suffix == ".png"]:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000
    assert "| pipeline (Kafka + JPEG) | 1.000" in (tmp_path / "report.md").read_text()
