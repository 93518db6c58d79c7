"""Zones and rules as tables: each case is a frame script and the events it must produce."""

from __future__ import annotations

import numpy as np
import pytest
from alerts_helpers import NS, T0, ZONE, Box, alerts_config, camera, dets, record, walk

from alerts.engine import AlertEngine
from alerts.zones import PolygonZone
from vigil.config import ZoneConfig
from vigil.contracts import AlertRecord
from vigil.geometry import points_in_polygon

# Zone "door" is x 200..400, y 200..400; anchors are bottom-centre (feet).
IN: Box = (280, 260, 320, 390)  # feet at y=390: inside
OUT: Box = (280, 280, 320, 410)  # feet at y=410: just outside, IoU with IN stays high
SECOND: Box = (220, 260, 250, 390)


def _frame(symbol: str) -> tuple[list[Box], list[float], list[str]]:
    return {
        "I": ([IN], [0.9], ["person"]),
        "O": ([OUT], [0.9], ["person"]),
        "-": ([], [], []),
        "L": ([IN], [0.3], ["person"]),
        "C": ([IN], [0.9], ["car"]),
        "2": ([IN, SECOND], [0.9, 0.9], ["person", "person"]),
    }[symbol]


def run(script: str, **rule: object) -> list[tuple[int, str, AlertRecord]]:
    rate = rule.pop("rate_limit_per_minute", None)
    config = alerts_config(**rule)
    if rate is not None:
        config = config.model_copy(update={"rate_limit_per_minute": rate})
    engine = AlertEngine(config, [camera()])
    events: list[tuple[int, str, AlertRecord]] = []
    for i, symbol in enumerate(script.replace(" ", "")):
        boxes, scores, names = _frame(symbol)
        rec = record(i, boxes, scores=scores, names=names)
        for alert in engine.process(rec, rec.capture_ns + 1_000_000):
            events.append((i, alert.event, alert))
    return events


# fps 5 (0.2 s per frame), tracker min_hits 2, rule min_frames 3, end_after 1 s, cooldown 5 s.
CASES = [
    ("enter_and_leave", "IIII OOOOOO", {}, [(3, "started"), (8, "ended")]),
    ("min_frames_1", "IIII OOOOOO", {"min_frames": 1}, [(1, "started"), (8, "ended")]),
    ("min_frames_5", "IIIIII OOOOOO", {"min_frames": 5}, [(5, "started"), (10, "ended")]),
    ("min_dwell", "IIIIIIII OOOOOO", {"min_frames": 1, "min_dwell_s": 1.0}, [(6, "started"), (12, "ended")]),
    ("dwell_not_reached", "IIII OOOOOO", {"min_frames": 1, "min_dwell_s": 1.0}, []),
    ("class_filter", "CCCCCCCC", {}, []),
    ("class_allowed", "CCCC OOOOOO", {"classes": ["car"]}, [(3, "started"), (8, "ended")]),
    ("low_confidence", "LLLLLLLL", {}, []),
    ("min_confidence_0", "IILLL", {"min_confidence": 0.2}, [(3, "started")]),
    ("pending_interrupted", "IIOIIII", {}, [(5, "started")]),
    ("leave_and_reenter_keeps_alert", "IIII OO IIII OOOOOO", {}, [(3, "started"), (14, "ended")]),
    ("leave_long_then_reenter_cooldown", "IIII OOOOOO IIIIIIII", {}, [(3, "started"), (8, "ended")]),
    (
        "leave_long_then_reenter_no_cooldown",
        "IIII OOOOOO IIIII",
        {"cooldown_s": 0.0},
        [(3, "started"), (8, "ended"), (12, "started")],
    ),
    ("track_lost", "IIII --------", {}, [(3, "started"), (8, "ended")]),
    ("updates", "IIIIIIIIII", {"update_every_s": 0.5}, [(3, "started"), (6, "updated"), (8, "updated")]),
    ("two_people", "2222 ------", {}, [(3, "started"), (3, "started"), (8, "ended"), (8, "ended")]),
    ("rate_limited", "2222 ------", {"rate_limit_per_minute": 1}, [(3, "started"), (8, "ended")]),
    ("no_zone_whole_frame", "OOOO ------", {"zone": None}, [(3, "started"), (8, "ended")]),
]


@pytest.mark.parametrize(("script", "rule", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_rule_table(script: str, rule: dict[str, object], expected: list[tuple[int, str]]) -> None:
    events = run(script, **rule)
    assert [(i, e) for i, e, _ in events] == expected
    # Every alert's events share its id; ended follows started; ids differ between alerts.
    by_id: dict[str, list[str]] = {}
    for _, event, alert in events:
        by_id.setdefault(alert.alert_id, []).append(event)
    for sequence in by_id.values():
        assert sequence[0] == "started" and sequence.count("started") == 1
        assert "ended" not in sequence[:-1]


def test_same_input_same_ids_and_payload() -> None:
    first = run("IIII OO IIII OOOOOO", update_every_s=0.4)
    second = run("IIII OO IIII OOOOOO", update_every_s=0.4)
    assert [a.webhook_id for _, _, a in first] == [a.webhook_id for _, _, a in second]
    assert len({a.webhook_id for _, _, a in first}) == len(first)  # updates are numbered
    started = first[0][2]
    assert started.frame.offset == 3 and started.snapshot == "frames/0/3" and started.snapshot_kind == "frame_ref"
    assert started.zone == "door" and started.class_name == "person" and started.confidence == pytest.approx(0.9)
    assert started.first_seen_ns < first[-1][2].last_seen_ns
    assert AlertRecord.from_bytes(started.to_bytes()) == started


def test_duplicate_and_older_records_are_ignored() -> None:
    engine = AlertEngine(alerts_config(min_frames=1), [camera()])
    out = []
    for i in [0, 1, 1, 2, 0, 2, 3]:
        out += engine.process(record(i, [IN]), 0)
    assert [a.event for a in out] == ["started"]
    assert engine.counters.duplicates == 3


def test_an_ingest_restart_resets_seq_but_not_the_alerts() -> None:
    """Ingest numbers frames from 0 again after a restart; the frames topic's offsets keep growing,
    and only a repeated offset is a duplicate."""
    from dataclasses import replace

    from vigil.contracts import FrameRef

    engine = AlertEngine(alerts_config(min_frames=2, end_after_s=0.5), [camera()])
    before = [record(i, [IN]) for i in range(4)]
    # After the restart: seq 0, 1, ... again, frames at offsets 4, 5, ... and later capture times.
    after = [replace(record(i + 10, []), seq=i, frame=FrameRef("frames", 0, 4 + i)) for i in range(6)]
    events = [a.event for r in before + after + [after[-1]] for a in engine.process(r, 0)]
    assert events == ["started", "ended"]
    assert engine.counters.duplicates == 1


@pytest.mark.parametrize(
    ("units", "polygon", "frame_wh", "expected"),
    [
        ("pixels", [(200, 200), (400, 200), (400, 400), (200, 400)], None, [True, False, False]),
        (
            "fraction",
            [(0.3125, 0.4167), (0.625, 0.4167), (0.625, 0.8333), (0.3125, 0.8333)],
            (640, 480),
            [True, False, False],
        ),
        (
            "fraction",
            [(0.3125, 0.4167), (0.625, 0.4167), (0.625, 0.8333), (0.3125, 0.8333)],
            (1280, 960),
            [False, False, False],
        ),
    ],
)
def test_zone_trigger_units(
    units: str, polygon: list[tuple[float, float]], frame_wh: tuple[int, int] | None, expected: list[bool]
) -> None:
    zone = PolygonZone.from_config(ZoneConfig(name="z", polygon=polygon, units=units))  # type: ignore[arg-type]
    boxes = [IN, OUT, (0, 0, 10, 10)]
    assert zone.trigger(dets(boxes), frame_wh).tolist() == expected


def test_zone_anchor_center_vs_bottom() -> None:
    tall = dets([(280, 100, 320, 300)])  # centre y=200 (edge), feet y=300
    assert PolygonZone.from_config(ZONE, "bottom_center").trigger(tall).tolist() == [True]
    assert PolygonZone.from_config(ZONE, "center").trigger(dets([(280, 0, 320, 300)])).tolist() == [False]


def test_concave_polygon() -> None:
    u_shape = np.array([(0, 0), (30, 0), (30, 30), (20, 30), (20, 10), (10, 10), (10, 30), (0, 30)], float)
    points = np.array([(5, 20), (15, 20), (25, 20), (15, 5)], np.float32)
    assert points_in_polygon(points, u_shape).tolist() == [True, False, True, True]


def test_person_walking_through_zone_one_started_one_ended() -> None:
    engine = AlertEngine(alerts_config(min_frames=3, end_after_s=1.0), [camera()])
    path = walk(0, 600, 60, y=250)  # feet y=350, crosses x 200..400
    events = []
    for i, box in enumerate(path + [None] * 10):  # type: ignore[operator]
        events += engine.process(record(i, [box] if box else []), 0)
    assert [e.event for e in events] == ["started", "ended"]
    assert events[0].alert_id == events[1].alert_id


@pytest.mark.parametrize(("stop_at", "resume_at"), [(25, 20), (25, 25), (35, 30), (62, 50), (12, 8)])
def test_restart_with_claims_fires_nothing_twice(stop_at: int, resume_at: int) -> None:
    """A restarted engine that re-reads the alerts it already produced and re-consumes the stream
    from an earlier offset yields, together with the first run, exactly one started and one ended."""
    config = alerts_config(min_frames=3, end_after_s=1.0)
    frames = [record(i, [box] if box else []) for i, box in enumerate(walk(0, 600, 60, y=250) + [None] * 10)]  # type: ignore[operator]
    first = AlertEngine(config, [camera()])
    produced = [a for rec in frames[:stop_at] for a in first.process(rec, 0)]
    second = AlertEngine(config, [camera()])
    second.restore(produced)
    produced += [a for rec in frames[resume_at:] for a in second.process(rec, 0)]
    assert sorted(a.event for a in produced) == ["ended", "started"]
    assert len({a.alert_id for a in produced}) == 1


def test_silent_camera_open_alert_ends_after_end_after_s_plus_grace() -> None:
    """Capture time stops when a camera's frames stop: `sweep` (wall clock) ends its open alerts."""
    engine = AlertEngine(alerts_config(min_frames=3, end_after_s=1.0), [camera()])
    arrived = T0 + 100 * NS  # wall clock of the last record's arrival
    out = [a for i in range(6) for a in engine.process(record(i, [IN]), arrived)]
    assert [a.event for a in out] == ["started"]
    assert engine.sweep(arrived + int(2.9 * NS)) == []  # end_after_s 1 + grace 2 s not yet passed
    ended = engine.sweep(arrived + int(3.1 * NS))
    assert [a.event for a in ended] == ["ended"] and ended[0].alert_id == out[0].alert_id
    assert ended[0].last_seen_ns == record(5, [IN]).capture_ns  # the last real sighting
    assert engine.sweep(arrived + 60 * NS) == []  # once
    # A backlog of older frames (a detector catching up) finds the alert in cooldown: no re-fire.
    later = [a for i in range(6, 12) for a in engine.process(record(i, [IN]), arrived + 61 * NS)]
    assert later == []


def test_sweep_leaves_live_cameras_and_ends_unadopted_claims() -> None:
    config = alerts_config(min_frames=3, end_after_s=1.0)
    first = AlertEngine(config, [camera()])
    started = [a for i in range(6) for a in first.process(record(i, [IN]), 0)]
    # A live camera with a 2.5 s gap between records is not swept.
    live = AlertEngine(config, [camera()])
    assert [a for i in range(6) for a in live.process(record(i, [IN]), T0)] != []
    assert live.sweep(T0 + int(2.5 * NS)) == []
    # After a restart, a camera whose open alert nobody adopts and that then falls silent.
    second = AlertEngine(config, [camera()])
    second.restore(started)
    assert second.process(record(10, []), T0) == []
    ended = second.sweep(T0 + int(3.5 * NS))
    assert [(a.event, a.alert_id) for a in ended] == [("ended", started[0].alert_id)]
