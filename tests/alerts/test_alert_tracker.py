"""ByteTracker: confirmation, stable ids, unconfirmed never counted, low-score boxes only extend."""

from __future__ import annotations

import numpy as np
import pytest
from alerts_helpers import NS, T0, Box, dets, walk

from alerts.kalman import BoxFilter
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


# ---------------------------------------------------------------------------------------------- tables


def _ids_by_path(tracker: ByteTracker, frames: list[list[tuple[str, Box]]], fps: float) -> dict[str, list[int]]:
    """Feed `frames` (per frame: (who, box) pairs that were detected) at `fps`; per person, the tracker
    ids their box got, in order (frames where their box was not returned are left out)."""
    seen: dict[str, list[int]] = {}
    for i, people in enumerate(frames):
        d = dets([b for _, b in people])
        d.data["who"] = np.array([w for w, _ in people], dtype=object)  # rides along with the kept rows
        out = tracker.update(d, T0 + int(i * NS / fps))
        assert out.tracker_id is not None
        for who, tid in zip(out.data["who"].tolist(), out.tracker_id.tolist(), strict=True):
            seen.setdefault(who, []).append(int(tid))
    return seen


def _walker(x0: float, speed: float, fps: float, seconds: float, y: float = 200.0) -> list[Box]:
    """A 40x100 box walking at `speed` pixels per second, sampled at `fps`."""
    return walk(x0, x0 + speed * seconds, int(round(seconds * fps)) + 1, y=y)


@pytest.mark.parametrize("fps", [25.0, 5.0])
def test_a_crossing_pair_keeps_both_identities(fps: float) -> None:
    """Two people walk towards each other along the same line and pass (their boxes overlap fully at
    the crossing): each keeps their own id, at 25 fps and at 5 fps."""
    left, right = _walker(100, 120, fps, 4.0), _walker(580, -120, fps, 4.0, y=215)
    frames = [[("a", a), ("b", b)] for a, b in zip(left, right, strict=True)]
    ids = _ids_by_path(_tracker(min_hits=2, lost_after_s=1.0), frames, fps)
    assert len(set(ids["a"])) == 1 and len(set(ids["b"])) == 1 and ids["a"][0] != ids["b"][0], ids


@pytest.mark.parametrize("fps", [25.0, 5.0])
def test_a_crossing_pair_with_the_occluded_one_undetected_keeps_both_identities(fps: float) -> None:
    """As they pass, the person behind is not detected for 0.6 s; they come back out on the other
    side with their own id (the track coasted on its velocity), not the other person's."""
    left, right = _walker(100, 120, fps, 4.0), _walker(580, -120, fps, 4.0, y=215)
    frames = []
    for i, (a, b) in enumerate(zip(left, right, strict=True)):
        hidden = 1.7 <= i / fps < 2.3
        frames.append([("a", a)] if hidden else [("a", a), ("b", b)])
    ids = _ids_by_path(_tracker(min_hits=2, lost_after_s=1.0), frames, fps)
    assert len(set(ids["a"])) == 1 and len(set(ids["b"])) == 1 and ids["a"][0] != ids["b"][0], ids


@pytest.mark.parametrize(("fps", "gap_s"), [(25.0, 0.6), (5.0, 0.6), (25.0, 0.9), (5.0, 0.8)])
def test_an_occlusion_gap_shorter_than_lost_after_keeps_the_identity(fps: float, gap_s: float) -> None:
    """A walker behind a pillar (no detection) for `gap_s` reappears further along: same id, and it
    is found again on the first frame it is detected."""
    path = _walker(50, 100, fps, 4.0)
    frames = [[] if 1.5 <= i / fps < 1.5 + gap_s else [("a", box)] for i, box in enumerate(path)]
    ids = _ids_by_path(_tracker(min_hits=2, lost_after_s=1.0), frames, fps)
    detected = sum(1 for f in frames if f)
    assert len(set(ids["a"])) == 1 and len(ids["a"]) == detected - 1, ids  # all but the first (tentative)


def test_a_gap_longer_than_lost_after_gives_a_new_identity() -> None:
    path = _walker(50, 100, 5.0, 4.0)
    frames = [[] if 5 <= i < 12 else [("a", box)] for i, box in enumerate(path)]  # 1.4 s gap
    ids = _ids_by_path(_tracker(min_hits=2, lost_after_s=1.0), frames, 5.0)
    assert len(set(ids["a"])) == 2, ids


@pytest.mark.parametrize("speed", [150.0, 200.0])
def test_5fps_jumps_without_overlap_keep_the_identity(speed: float) -> None:
    """At 5 fps a 40 px wide walker at 150-200 px/s jumps 30-40 px a frame: consecutive boxes overlap
    with IoU 0.14 or not at all, below match_iou. The track still starts (its unknown velocity widens
    the gate for the frame interval) and keeps its id (the velocity-predicted box matches)."""
    path = _walker(0, speed, 5.0, 3.0)
    a, b = np.array([path[0]], np.float32), np.array([path[1]], np.float32)
    assert box_iou(a, b)[0, 0] < 0.15
    ids = _ids_by_path(_tracker(min_hits=2), [[("a", box)] for box in path], 5.0)
    assert len(set(ids["a"])) == 1 and len(ids["a"]) == len(path) - 1, ids


def test_at_25fps_the_gate_stays_tight() -> None:
    """The same widening is ~nothing at 25 fps: a box 45 px away (no overlap) is another object."""
    tracker = _tracker(min_hits=1)
    first = tracker.update(dets([(0, 0, 40, 100)]), T0)
    other = tracker.update(dets([(45, 0, 85, 100)]), T0 + NS // 25)
    assert first.tracker_id is not None and other.tracker_id is not None
    assert other.tracker_id[0] != first.tracker_id[0]


def test_the_same_motion_at_25_and_5_fps_is_one_identity_each() -> None:
    """Capture time drives the motion model: 25 fps and every 5th frame of it both track one walker."""
    path = _walker(0, 80, 25.0, 6.0)
    for step in (1, 5):
        frames = [[("a", box)] for box in path[::step]]
        ids = _ids_by_path(_tracker(min_hits=2), frames, 25.0 / step)
        assert len(set(ids["a"])) == 1 and len(ids["a"]) == len(frames) - 1, (step, ids)


def test_a_class_change_starts_a_new_track_and_the_old_one_is_not_reused() -> None:
    tracker = _tracker(min_hits=1, lost_after_s=1.0)
    person = tracker.update(dets([(0, 0, 40, 100)], classes=[0]), T0)
    dog = tracker.update(dets([(0, 0, 40, 100)], classes=[16]), T0 + NS // 5)
    back = tracker.update(dets([(0, 0, 40, 100)], classes=[0]), T0 + 2 * NS // 5)
    assert person.tracker_id is not None and dog.tracker_id is not None and back.tracker_id is not None
    assert dog.tracker_id[0] != person.tracker_id[0]
    assert back.tracker_id[0] == person.tracker_id[0]  # the person's track was lost 0.2 s, not replaced
    assert {t.class_id for t in tracker.tracks} == {0, 16}


def test_an_out_of_order_frame_changes_nothing() -> None:
    """A late frame (older capture time) returns no rows and leaves every track as it was."""
    path = _walker(0, 100, 5.0, 2.0)
    reference, late = _tracker(min_hits=2), _tracker(min_hits=2)
    for i, box in enumerate(path):
        t = T0 + int(i * NS / 5)
        expected = reference.update(dets([box]), t)
        got = late.update(dets([box]), t)
        if i == 4:
            stale = late.update(dets([(300, 0, 340, 100), box]), t - NS)
            assert len(stale) == 0 and stale.tracker_id is not None
        assert expected.tracker_id is not None and got.tracker_id is not None
        assert got.tracker_id.tolist() == expected.tracker_id.tolist()
    assert len(late.tracks) == len(reference.tracks) == 1


def test_identities_count_from_one_in_confirmation_order_and_tentative_tracks_get_none() -> None:
    tracker = _tracker(min_hits=2)
    a, b = (0, 0, 40, 100), (300, 0, 340, 100)
    assert len(tracker.update(dets([a]), T0)) == 0
    assert tracker.update(dets([a, b]), T0 + NS // 5).tracker_id.tolist() == [1]  # type: ignore[union-attr]
    assert tracker.update(dets([a, b]), T0 + 2 * NS // 5).tracker_id.tolist() == [1, 2]  # type: ignore[union-attr]
    assert all(t.track_id == 0 for t in tracker.tracks if not t.confirmed)


def test_new_tracks_need_new_track_threshold_but_existing_ones_extend_below_it() -> None:
    tracker = _tracker(min_hits=1, high_threshold=0.5, new_track_threshold=0.8)
    box = (0, 0, 40, 100)
    assert len(tracker.update(dets([box], [0.7]), T0)) == 0 and tracker.tracks == []
    first = tracker.update(dets([box], [0.85]), T0 + NS // 5)
    again = tracker.update(dets([box], [0.6]), T0 + 2 * NS // 5)
    assert first.tracker_id is not None and again.tracker_id is not None
    assert again.tracker_id.tolist() == first.tracker_id.tolist()


def test_new_track_threshold_below_high_threshold_is_refused() -> None:
    with pytest.raises(ValueError, match="new_track_threshold"):
        TrackerConfig(high_threshold=0.7, new_track_threshold=0.6)


def test_twenty_boxes_a_frame_stay_fast() -> None:
    """Loose bound for a loaded CI box; bench/bench_tracking.py measures the real figure."""
    import time

    rng = np.random.default_rng(1)
    start = rng.uniform(0, 1200, (20, 2))
    speed = rng.uniform(-60, 60, (20, 2))
    tracker = _tracker(min_hits=2)
    frames = []
    for f in range(100):
        xy = start + speed * f / 5
        frames.append(dets([(x, y, x + 40, y + 100) for x, y in xy.tolist()]))
    began = time.perf_counter()
    for f, d in enumerate(frames):
        tracker.update(d, T0 + f * NS // 5)
    assert (time.perf_counter() - began) / len(frames) < 0.02
    assert len(tracker.confirmed) == 20


def test_reupdate_is_bit_for_bit_the_vectorised_predict_and_update() -> None:
    """`BoxFilter.reupdate` steps one filter in Python floats; it must give exactly the state that
    `predict` and `update` on the filter's row give, step by step (identities depend on it)."""
    rng = np.random.default_rng(7)
    for trial in range(50):
        boxes = rng.uniform(0, 400, (3, 2))
        xyxy = np.concatenate([boxes, boxes + rng.uniform(5, 120, (3, 2))], axis=1)
        fast, reference = BoxFilter(), BoxFilter()
        fast.add(xyxy)
        fast.predict(0.2)
        fast.update(np.arange(3), xyxy + rng.uniform(-3, 3, (3, 4)))
        reference.x, reference.seen_x, reference.seen = fast.x.copy(), fast.seen_x.copy(), fast.seen.copy()
        row, seen_ns = trial % 3, 1_000_000_000
        missed = sorted(seen_ns + int(t) for t in rng.uniform(1e7, 2e9, rng.integers(0, 12)))
        t_ns = (missed[-1] if missed else seen_ns) + int(rng.uniform(1e6, 5e8))
        box = fast.seen[row] + rng.uniform(-40, 40, 4)
        fast.reupdate(row, seen_ns, list(missed), box, t_ns)
        # The reference: the same steps through the vectorised methods.
        reference.x[row] = reference.seen_x[row]
        rows, start, end = np.array([row]), reference.seen[row], np.asarray(box, np.float64)
        span, previous = max(t_ns - seen_ns, 1), seen_ns
        for when in missed:
            reference.predict((when - previous) / 1e9, rows)
            reference.update(rows, start + (end - start) * ((when - seen_ns) / span), virtual=True)
            previous = when
        reference.predict((t_ns - previous) / 1e9, rows)
        assert np.array_equal(fast.x, reference.x), trial
