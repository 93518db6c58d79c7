"""ByteTracker: confirmation, stable ids, unconfirmed never counted, low-score boxes only extend."""

from __future__ import annotations

import numpy as np
import pytest
from alerts_helpers import NS, T0, dets, walk

from alerts.tracker import ByteTracker
from vigil.config import TrackerConfig
from vigil.geometry import box_iou


def _tracker(**kw: object) -> ByteTracker:
    base: dict[str, object] = {"min_hits": 3, "lost_after_s": 1.0, "high_threshold": 0.5, "low_threshold": 0.1}
    base.update(kw)
    return ByteTracker(TrackerConfig.model_validate(base))


def test_iou_matrix() -> None:
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    np.testing.assert_allclose(box_iou(a, b)[0], [1.0, 50 / 150, 0.0], rtol=1e-6)


@pytest.mark.parametrize("min_hits", [1, 2, 3, 5])
def test_confirmed_after_min_hits_consecutive_frames(min_hits: int) -> None:
    tracker = _tracker(min_hits=min_hits)
    counts = [len(tracker.update(dets([box]), T0 + i * NS // 5)) for i, box in enumerate(walk(0, 50, 8))]
    assert counts == [0] * (min_hits - 1) + [1] * (8 - min_hits + 1)


def test_unconfirmed_track_never_counted_and_dropped_after_a_miss() -> None:
    tracker = _tracker(min_hits=3)
    assert len(tracker.update(dets([(0, 0, 10, 10)]), T0)) == 0
    assert len(tracker.update(dets([(0, 0, 10, 10)]), T0 + NS // 5)) == 0
    assert len(tracker.update(dets([]), T0 + 2 * NS // 5)) == 0  # tentative track missed a frame: gone
    assert tracker.tracks == []
    out = tracker.update(dets([(0, 0, 10, 10)]), T0 + 3 * NS // 5)
    assert len(out) == 0 and out.tracker_id is not None and -1 not in out.tracker_id


def test_ids_stable_across_frames_for_two_objects_crossing_paths_apart() -> None:
    tracker = _tracker(min_hits=2)
    a_path, b_path = walk(0, 200, 20, y=0), walk(400, 200, 20, y=200)
    seen: dict[int, set[int]] = {0: set(), 1: set()}
    for i, (a, b) in enumerate(zip(a_path, b_path, strict=True)):
        out = tracker.update(dets([a, b]), T0 + i * NS // 5)
        if i >= 1:
            assert out.tracker_id is not None and len(out) == 2
            for row in range(2):
                who = 0 if out.xyxy[row, 1] < 100 else 1
                seen[who].add(int(out.tracker_id[row]))
    assert len(seen[0]) == 1 and len(seen[1]) == 1 and seen[0] != seen[1]


def test_low_score_boxes_extend_but_never_start_tracks() -> None:
    tracker = _tracker(min_hits=2)
    boxes = walk(0, 40, 6)
    tracker.update(dets([boxes[0]]), T0)
    first = tracker.update(dets([boxes[1]]), T0 + NS // 5)
    assert first.tracker_id is not None
    tid = int(first.tracker_id[0])
    # Occlusion: the same person detected at 0.3 keeps their id.
    for i in range(2, 6):
        out = tracker.update(dets([boxes[i]], [0.3]), T0 + i * NS // 5)
        assert out.tracker_id is not None and out.tracker_id.tolist() == [tid]
    # A low-score box far away starts nothing, however long it stays.
    fresh = _tracker(min_hits=1)
    for i in range(5):
        assert len(fresh.update(dets([(500, 400, 540, 470)], [0.3]), T0 + i * NS)) == 0
    assert fresh.tracks == []


def test_lost_after_capture_time_not_wall_time() -> None:
    tracker = _tracker(min_hits=1, lost_after_s=1.0)
    out = tracker.update(dets([(0, 0, 10, 10)]), T0)
    assert out.tracker_id is not None
    tid = int(out.tracker_id[0])
    tracker.update(dets([]), T0 + int(0.9 * NS))
    again = tracker.update(dets([(0, 0, 10, 10)]), T0 + int(0.95 * NS))
    assert again.tracker_id is not None and again.tracker_id.tolist() == [tid]
    tracker.update(dets([]), T0 + int(2.0 * NS))  # 1.05 s since last match: removed
    later = tracker.update(dets([(0, 0, 10, 10)]), T0 + int(2.1 * NS))
    assert later.tracker_id is not None and later.tracker_id.tolist() != [tid]


def test_classes_never_swap_identity() -> None:
    tracker = _tracker(min_hits=1)
    out = tracker.update(dets([(0, 0, 10, 10)], classes=[0]), T0)
    car = tracker.update(dets([(0, 0, 10, 10)], classes=[2]), T0 + NS // 5)
    assert out.tracker_id is not None and car.tracker_id is not None
    assert car.tracker_id[0] != out.tracker_id[0]


def test_older_frame_is_ignored() -> None:
    tracker = _tracker(min_hits=1)
    tracker.update(dets([(0, 0, 10, 10)]), T0 + NS)
    assert len(tracker.update(dets([(0, 0, 10, 10)]), T0)) == 0
