"""False-positive controls as tables: object filters, the score history's median rule, object masks
(anchors on their edges), and the engine dropping filtered boxes before they can start a track."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from alerts_helpers import IN_DOOR, NS, T0, Box, alerts_config, camera, record

from alerts.engine import AlertEngine
from alerts.filters import ObjectFilters, ObjectMask, Prefilter, ScoreHistory
from vigil.config import CameraObjectsConfig, ObjectsConfig, VigilConfig, camera_objects
from vigil.detections import Detections

FRAME = (640, 480)  # 307200 pixels


def boxes(rows: list[tuple[Box, float, str]]) -> Detections:
    return Detections(
        xyxy=np.asarray([b for b, _, _ in rows], np.float32).reshape(-1, 4),
        confidence=np.asarray([s for _, s, _ in rows], np.float32),
        class_id=np.zeros(len(rows), np.int32),
        data={"class_name": np.asarray([n for _, _, n in rows], object)},
    )


def objects(filters: dict[str, Any], **extra: Any) -> CameraObjectsConfig:
    return CameraObjectsConfig.model_validate({"filters": filters, **extra})


# 40 x 100 = 4000 px (0.013 of the frame), ratio 0.4.
PERSON: Box = (100, 100, 140, 200)
FILTER_CASES = [
    # (name, filters, box, score, class, expected reason)
    ("no_filters", {}, PERSON, 0.9, "person", ""),
    ("min_score_below", {"person": {"min_score": 0.5}}, PERSON, 0.45, "person", "min_score"),
    ("min_score_equal_passes", {"person": {"min_score": 0.5}}, PERSON, 0.5, "person", ""),
    ("min_area_pixels", {"person": {"min_area": 4001}}, PERSON, 0.9, "person", "min_area"),
    ("min_area_pixels_equal_passes", {"person": {"min_area": 4000}}, PERSON, 0.9, "person", ""),
    ("min_area_fraction", {"person": {"min_area": 0.02}}, PERSON, 0.9, "person", "min_area"),  # 6144 px
    ("min_area_fraction_passes", {"person": {"min_area": 0.01}}, PERSON, 0.9, "person", ""),  # 3072 px
    ("max_area_pixels", {"person": {"max_area": 3999}}, PERSON, 0.9, "person", "max_area"),
    ("max_area_fraction", {"person": {"max_area": 0.01}}, PERSON, 0.9, "person", "max_area"),
    ("max_area_one_is_the_whole_frame", {"person": {"max_area": 1}}, (0, 0, 640, 480), 0.9, "person", ""),
    ("min_ratio", {"person": {"min_ratio": 0.5}}, PERSON, 0.9, "person", "min_ratio"),
    ("max_ratio", {"person": {"max_ratio": 0.3}}, PERSON, 0.9, "person", "max_ratio"),
    ("ratio_in_range", {"person": {"min_ratio": 0.2, "max_ratio": 1.5}}, PERSON, 0.9, "person", ""),
    ("flat_box_has_infinite_ratio", {"person": {"max_ratio": 10}}, (0, 50, 40, 50), 0.9, "person", "max_ratio"),
    ("other_class_untouched", {"person": {"min_score": 0.95}}, PERSON, 0.9, "car", ""),
    ("default_applies_to_others", {"default": {"min_score": 0.95}}, PERSON, 0.9, "car", "min_score"),
    ("own_entry_beats_default", {"default": {"min_score": 0.95}, "car": {"min_area": 10}}, PERSON, 0.9, "car", ""),
    ("first_failing_counts", {"person": {"min_score": 0.95, "min_area": 5000}}, PERSON, 0.5, "person", "min_score"),
]


@pytest.mark.parametrize(
    ("name", "filters", "box", "score", "class_name", "expected"), FILTER_CASES, ids=[c[0] for c in FILTER_CASES]
)
def test_object_filter(
    name: str, filters: dict[str, Any], box: Box, score: float, class_name: str, expected: str
) -> None:
    dets = boxes([(box, score, class_name)])
    f = ObjectFilters(objects(filters))
    assert f.reasons(dets, FRAME).tolist() == [expected]
    assert len(f.apply(dets, FRAME)) == (0 if expected else 1)


def test_filters_are_vectorised_over_mixed_classes() -> None:
    dets = boxes(
        [(PERSON, 0.9, "person"), (PERSON, 0.3, "person"), ((0, 0, 300, 300), 0.9, "car"), (PERSON, 0.9, "dog")]
    )
    f = ObjectFilters(objects({"person": {"min_score": 0.5}, "car": {"max_area": 0.2}, "default": {"min_ratio": 0.5}}))
    assert f.reasons(dets, FRAME).tolist() == ["", "min_score", "max_area", "min_ratio"]


def test_camera_filters_merge_over_the_global_ones_class_by_class() -> None:
    config = VigilConfig.model_validate(
        {
            "objects": {"filters": {"person": {"min_score": 0.4}, "car": {"min_score": 0.6}}, "score_window": 7},
            "cameras": [{"id": "door", "url": "rtsp://h/s", "objects": {"filters": {"car": {"min_area": 4000}}}}],
        }
    )
    merged = config.camera_objects(config.cameras[0])
    assert merged.filters["person"].min_score == 0.4  # the global entry: the camera has none for person
    assert merged.filters["car"].min_area == 4000 and merged.filters["car"].min_score == 0.0  # replaced whole
    assert merged.score_window == 7
    own = camera_objects(ObjectsConfig(score_window=7), CameraObjectsConfig(score_window=3))
    assert own.score_window == 3


# ---------------------------------------------------------------------------------------------- score history


def history_of(scores: list[float], threshold: float, window: int = 5) -> list[tuple[float, bool]]:
    """(median, true positive) after each frame of one track with these scores."""
    history = ScoreHistory(objects({"person": {"threshold": threshold}}, score_window=window))
    out = []
    for score in scores:
        tracked = boxes([(PERSON, score, "person")])
        tracked.tracker_id = np.array([1], np.int64)
        row = history.update(tracked, [1])
        out.append((round(float(row.data["track_score"][0]), 3), bool(row.data["true_positive"][0])))
    return out


MEDIAN_CASES = [
    # A single confident frame of a shadow: padded to three scores its median stays 0, then low.
    ("one_high_frame_never_counts", [0.95, 0.35, 0.3, 0.35, 0.3, 0.3], 0.6, [False] * 6),
    # A person seen at 0.6-0.7: counts from the second frame (median of 0, 0.65, 0.62 is 0.62).
    ("steady_mid_score_counts", [0.65, 0.62, 0.68, 0.61, 0.66], 0.6, [False, True, True, True, True]),
    # Once a true positive, always one: a person turning away (0.4) keeps counting.
    ("stays_counted", [0.7, 0.7, 0.4, 0.4, 0.4, 0.4, 0.4], 0.6, [False, True, True, True, True, True, True]),
    # Recent history only: five low frames then high ones reach the median on the third high one.
    ("window_forgets", [0.3] * 5 + [0.8, 0.8, 0.8], 0.6, [False] * 5 + [False, False, True]),
    ("threshold_zero_counts_at_once", [0.2], 0.0, [True]),
]


@pytest.mark.parametrize(("name", "scores", "threshold", "expected"), MEDIAN_CASES, ids=[c[0] for c in MEDIAN_CASES])
def test_median_score_rule(name: str, scores: list[float], threshold: float, expected: list[bool]) -> None:
    assert [positive for _, positive in history_of(scores, threshold)] == expected


def test_median_is_over_the_padded_window() -> None:
    assert [m for m, _ in history_of([0.9, 0.5, 0.7, 0.2, 0.1, 0.1], 0.99)] == [0.0, 0.5, 0.7, 0.6, 0.5, 0.2]
    assert [m for m, _ in history_of([0.9, 0.5], 0.99, window=1)] == [0.9, 0.5]  # no padding beyond the window


def test_history_forgets_tracks_the_tracker_dropped() -> None:
    history = ScoreHistory(objects({"default": {"threshold": 0.5}}))
    tracked = boxes([(PERSON, 0.9, "person")] * 2)
    tracked.tracker_id = np.array([1, 2], np.int64)
    history.update(tracked, [1, 2])
    history.update(tracked[np.array([True, False])], [1])
    assert set(history.scores) == {1} and history.positive <= {1}


# ---------------------------------------------------------------------------------------------- masks

SQUARE = [(100.0, 100.0), (200.0, 100.0), (200.0, 200.0), (100.0, 200.0)]


def feet_at(x: float, y: float) -> Box:
    return (x - 10, y - 50, x + 10, y)  # bottom-centre anchor at (x, y)


MASK_CASES = [
    ("inside", feet_at(150, 150), True),
    ("left_edge", feet_at(100, 150), True),
    ("right_edge", feet_at(200, 150), True),  # outside for zones' half-open rule, inside a mask
    ("top_edge", feet_at(150, 100), True),
    ("bottom_edge", feet_at(150, 200), True),
    ("vertex", feet_at(200, 200), True),
    ("just_right", feet_at(200.01, 150), False),
    ("just_below", feet_at(150, 200.01), False),
    ("far", feet_at(400, 400), False),
]


@pytest.mark.parametrize(("name", "box", "masked"), MASK_CASES, ids=[c[0] for c in MASK_CASES])
def test_mask_anchor_on_the_edge(name: str, box: Box, masked: bool) -> None:
    mask = ObjectMask("statue", SQUARE)
    assert mask.trigger(boxes([(box, 0.9, "person")]), FRAME).tolist() == [masked]


def test_fraction_mask_reaching_the_frame_border_covers_a_box_standing_on_it() -> None:
    lower = ObjectMask("road", [(0.0, 0.5), (1.0, 0.5), (1.0, 1.0), (0.0, 1.0)], units="fraction")
    on_border = boxes([((600, 380, 640, 480), 0.9, "car"), ((300, 100, 340, 200), 0.9, "car")])
    assert lower.trigger(on_border, FRAME).tolist() == [True, False]


def test_mask_classes_and_anchor() -> None:
    statue = ObjectMask("statue", SQUARE, classes=["person"])
    rows = boxes([(feet_at(150, 150), 0.9, "person"), (feet_at(150, 150), 0.9, "car")])
    assert statue.trigger(rows, FRAME).tolist() == [True, False]
    # Feet below the square, centre inside it: only a centre-anchored mask drops it.
    tall = boxes([((140.0, 120.0, 160.0, 260.0), 0.9, "person")])
    assert ObjectMask("s", SQUARE).trigger(tall, FRAME).tolist() == [False]
    assert ObjectMask("s", SQUARE, anchor="center").trigger(tall, FRAME).tolist() == [True]


def test_prefilter_counts_each_removed_box_under_its_first_reason() -> None:
    config = objects(
        {"person": {"min_score": 0.5}},
        masks=[{"name": "statue", "polygon": [list(p) for p in SQUARE]}],
    )
    pre = Prefilter(config)
    rows = boxes(
        [(feet_at(150, 150), 0.9, "person"), (feet_at(150, 150), 0.3, "person"), (feet_at(400, 400), 0.9, "person")]
    )
    kept, why = pre.apply(rows, FRAME)
    assert why.tolist() == ["mask:statue", "min_score", ""] and len(kept) == 1
    assert pre.removed == {"mask:statue": 1, "min_score": 1}
    assert pre.take_pending() == {"mask:statue": 1, "min_score": 1} and not pre.take_pending()


# ---------------------------------------------------------------------------------------------- engine


def run_engine(
    cam_objects: dict[str, Any], frames: list[list[tuple[Box, float]]], **global_objects: Any
) -> tuple[list[str], AlertEngine]:
    cam = camera().model_copy(update={"objects": CameraObjectsConfig.model_validate(cam_objects)})
    engine = AlertEngine(alerts_config(), [cam], objects=ObjectsConfig.model_validate(global_objects))
    events: list[str] = []
    for i, rows in enumerate(frames):
        rec = record(i, [b for b, _ in rows], scores=[s for _, s in rows])
        events += [a.event for a in engine.process(rec, rec.capture_ns)]
    return events, engine


def test_a_masked_statue_never_starts_a_track_or_an_alert() -> None:
    statue = [(IN_DOOR, 0.9)]
    plain, _ = run_engine({}, [statue] * 8)
    assert plain == ["started"]
    masked, engine = run_engine(
        {"masks": [{"name": "statue", "polygon": [[270, 250], [330, 250], [330, 400], [270, 400]]}]}, [statue] * 8
    )
    pipe = engine.pipelines["cam1"]
    assert masked == [] and pipe.tracker.tracks == [] and pipe.prefilter.removed == {"mask:statue": 8}
    assert engine.take_removed() == {("cam1", "mask:statue"): 8} and engine.take_removed() == {}


def test_a_filtered_box_never_starts_a_track() -> None:
    events, engine = run_engine({"filters": {"person": {"max_area": 4000}}}, [[(IN_DOOR, 0.9)]] * 8)  # 40 x 130 px
    assert events == [] and engine.pipelines["cam1"].tracker.tracks == []
    events, _ = run_engine({}, [[(IN_DOOR, 0.9)]] * 8, filters={"person": {"max_area": 5300}})  # global filter
    assert events == ["started"]


def test_threshold_holds_a_one_frame_shadow_back_and_lets_a_steady_person_through() -> None:
    # A shadow: one confident frame, then low scores that keep its track alive (tracker low 0.3).
    shadow = [[(IN_DOOR, 0.95)], [(IN_DOOR, 0.65)]] + [[(IN_DOOR, 0.4)]] * 10
    person = [[(IN_DOOR, s)] for s in (0.68, 0.65, 0.62, 0.66, 0.64, 0.67, 0.63, 0.65)]
    limits = {"person": {"threshold": 0.6}}
    no_threshold = {"filters": {"person": {"min_score": 0.0}}}
    rule = {"min_confidence": 0.3}
    for frames, with_threshold, without_threshold in ((shadow, [], ["started"]), (person, ["started"], ["started"])):
        for cam_objects, expected in (({"filters": limits}, with_threshold), (no_threshold, without_threshold)):
            cam = camera().model_copy(update={"objects": CameraObjectsConfig.model_validate(cam_objects)})
            engine = AlertEngine(alerts_config(**rule), [cam])
            events: list[str] = []
            for i, rows in enumerate(frames):
                rec = record(i, [b for b, _ in rows], scores=[s for _, s in rows])
                events += [a.event for a in engine.process(rec, rec.capture_ns)]
            assert events == expected, (cam_objects, [s for r in frames for _, s in r])


def test_trace_keeps_every_detection_and_why_it_was_removed() -> None:
    cam = camera().model_copy(
        update={"objects": CameraObjectsConfig.model_validate({"filters": {"person": {"min_score": 0.5}}})}
    )
    engine = AlertEngine(alerts_config(), [cam], trace=True)
    rec = record(0, [IN_DOOR, (10, 10, 50, 110)], scores=[0.9, 0.4])
    engine.process(rec, T0 + NS)
    step = (engine.trace or [])[0]
    assert len(step.detections) == 2 and step.removed == ["", "min_score"]


def test_the_aggregator_counts_removed_boxes_by_camera_and_reason() -> None:
    import threading
    from types import SimpleNamespace

    from prometheus_client import REGISTRY

    from alerts.aggregator import Aggregator

    mask = {"name": "statue", "polygon": [[270, 250], [330, 250], [330, 400], [270, 400]]}
    config = VigilConfig.model_validate(
        {
            "cameras": [{"id": "cam-metrics", "url": "rtsp://h/s", "objects": {"masks": [mask]}}],
            "objects": {"filters": {"person": {"min_score": 0.5}}},
        }
    )
    aggregator = Aggregator(config, threading.Event())  # no Kafka client until open()
    for i in range(3):
        rec = record(i, [IN_DOOR, (10, 10, 50, 110)], camera="cam-metrics", scores=[0.9, 0.4])
        aggregator.handle(SimpleNamespace(value=rec.to_bytes()))

    def sample(reason: str) -> float | None:
        return REGISTRY.get_sample_value(
            "vigil_alerts_boxes_removed_total", {"camera": "cam-metrics", "reason": reason}
        )

    assert sample("mask:statue") == 3 and sample("min_score") == 3
