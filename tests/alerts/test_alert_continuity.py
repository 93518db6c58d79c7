"""One alert per object across identity breaks: a new track where an alert's track was lost
continues that alert (`rejoin_s`), at the rules level (explicit track ids, so any tracker) and
through the engine with the real tracker."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest
from alerts_helpers import NS, T0, ZONE, Box, alerts_config, camera, record, walk

from alerts.engine import AlertEngine
from alerts.rules import CameraRules, CompiledRule, Frame
from alerts.zones import PolygonZone
from vigil.config import RuleConfig, TrackerConfig
from vigil.contracts import AlertRecord, DetectionsRecord, FrameRef
from vigil.detections import Detections
from vigil.errors import ContractError

FPS = 5.0
Row = tuple[int, Box]  # (track id, box)


def tracked(rows: Sequence[Row]) -> Detections:
    return Detections(
        xyxy=np.asarray([b for _, b in rows], np.float32).reshape(-1, 4),
        confidence=np.full(len(rows), 0.9, np.float32),
        class_id=np.zeros(len(rows), np.int32),
        tracker_id=np.asarray([t for t, _ in rows], np.int64),
        data={"class_name": np.asarray(["person"] * len(rows), object)},
    )


def play(script: Sequence[Sequence[Row]], **rule: object) -> tuple[list[tuple[int, AlertRecord]], CameraRules]:
    fields: dict[str, object] = {"name": "door", "zone": "door", "min_frames": 2, "end_after_s": 1.0, "cooldown_s": 5.0}
    config = RuleConfig.model_validate({**fields, **rule})
    rules = CameraRules("cam1", [CompiledRule(config, PolygonZone.from_config(ZONE))], 100, trace=True)
    out = []
    for i, rows in enumerate(script):
        t = T0 + int(i * NS / FPS)
        frame = Frame("cam1", t, FrameRef("frames", 0, i), 640, 480)
        out += [(i, a) for a in rules.process(tracked(rows), frame, t)]
    return out, rules


PATH = walk(210, 330, 16, y=250)  # 8 px per frame (40 px/s) through the door zone, feet at y=350


def broken(gap: Sequence[int], new_id: int = 2, frames: int = 16) -> list[list[Row]]:
    """The walk, with the object missing in `gap` and under track `new_id` after it."""
    return [[] if i in gap else [(1 if i < min(gap) else new_id, PATH[i])] for i in range(frames)] + [[]] * 8


def events(out: list[tuple[int, AlertRecord]]) -> list[tuple[int, str]]:
    return [(i, a.event) for i, a in out]


def test_a_new_track_where_the_alert_was_lost_continues_it() -> None:
    out, rules = play(broken(gap=[6, 7]))
    assert events(out) == [(1, "started"), (8, "updated"), (20, "ended")]
    started, rejoined, ended = (a for _, a in out)
    assert len({started.alert_id, rejoined.alert_id, ended.alert_id}) == 1
    assert rejoined.rejoined and rejoined.track_ids == (1, 2) and rejoined.track_id == 2
    assert rejoined.webhook_id == f"{started.alert_id}.updated.1"
    assert ended.track_ids == (1, 2) and not ended.rejoined
    assert AlertRecord.from_bytes(rejoined.to_bytes()) == rejoined
    assert rules.counters.rejoined == 1


def test_without_rejoin_the_break_fires_a_second_alert() -> None:
    out, _ = play(broken(gap=[6, 7]), rejoin_s=0)
    assert [e for _, e in events(out)].count("started") == 2


def test_rejoin_window_expires() -> None:
    # Lost after frame 5 (1.0 s), the new track first seen at frame 12 (2.4 s): 1.4 s later.
    out, _ = play(broken(gap=range(6, 12)), rejoin_s=1.0, end_after_s=0.4)
    assert [e for _, e in events(out)] == ["started", "ended", "started", "ended"]
    out, rules = play(broken(gap=range(6, 12)), rejoin_s=1.5, end_after_s=0.4)
    # Within 1.5 s but the alert had ended: the new track takes over its cooldown, nothing fires.
    assert [e for _, e in events(out)] == ["started", "ended"]
    assert rules.counters.rejoined == 1


def test_periodic_updates_keep_unique_webhook_ids_after_a_rejoin() -> None:
    out, _ = play(broken(gap=[6, 7]), update_every_s=1.0)
    ids = [a.webhook_id for _, a in out]
    assert len(ids) == len(set(ids))
    assert [a.update_seq for _, a in out if a.event == "updated"] == [1, 2, 3]


def _still_present() -> list[list[Row]]:
    """Track 1 stays in view; track 2 appears right beside it: someone else."""
    return [[(1, PATH[i])] + ([(2, PATH[i])] if i >= 4 else []) for i in range(10)]


def _seen_before_the_loss() -> list[list[Row]]:
    """Track 2 is in view (above the zone) from frame 3; track 1 is lost after frame 5 and track 2
    walks into its place: two people who were both in view are never merged."""
    above = [(b[0], 20.0, b[2], 120.0) for b in PATH]
    script = [[(1, PATH[i])] + ([(2, above[i])] if i >= 3 else []) for i in range(6)]
    return script + [[(2, PATH[i])] for i in range(6, 12)]


def _far_away() -> list[list[Row]]:
    shifted = [(b[0] + 70, b[1], b[2] + 70, b[3]) for b in PATH]  # 0.7 box sizes off the prediction
    return [[(1, PATH[i])] for i in range(6)] + [[], []] + [[(2, shifted[i])] for i in range(8, 12)]


def _other_size() -> list[list[Row]]:
    tall = [(b[0], 150.0, b[2] + 40, 350.0) for b in PATH]  # twice as tall, same feet
    return [[(1, PATH[i])] for i in range(6)] + [[], []] + [[(2, tall[i])] for i in range(8, 12)]


@pytest.mark.parametrize("script", [_still_present, _seen_before_the_loss, _far_away, _other_size])
def test_no_rejoin(script: object) -> None:
    out, rules = play(script())  # type: ignore[operator]
    assert [e for _, e in events(out)].count("started") == 2
    assert rules.counters.rejoined == 0


def test_the_original_track_coming_back_takes_its_alert_back() -> None:
    script: list[list[Row]] = [[(1, PATH[i])] for i in range(5)] + [[]]
    script += [[(2, PATH[i])] for i in range(6, 9)] + [[]]
    script += [[(1, PATH[i])] for i in range(10, 14)]  # the tracker found track 1 again
    out, _ = play(script)
    assert events(out)[:1] == [(1, "started")] and [e for _, e in events(out)].count("started") == 1
    assert [a.track_ids for _, a in out if a.rejoined] == [(1, 2), (1, 2)]
    assert out[-1][1].track_id == 1


def test_rejoin_picks_the_nearest_lost_alert_one_to_one() -> None:
    left, right = walk(210, 260, 10, y=250), walk(300, 350, 10, y=250)
    script: list[list[Row]] = [[(1, left[i]), (3, right[i])] for i in range(4)] + [[]] * 2
    script += [[(5, right[i]), (4, left[i])] for i in range(6, 10)]
    out, _ = play(script)
    rejoins = {a.track_ids for _, a in out if a.rejoined}
    assert rejoins == {(1, 4), (3, 5)}
    assert [e for _, e in events(out)].count("started") == 2


def _broken_walk() -> list[DetectionsRecord]:
    """A walk through the zone with a 3-frame gap; after it the person is 10 px further on."""
    path = walk(200, 340, 16, y=250)
    return [record(i, [] if i in (6, 7, 8) else [path[i]]) for i in range(16)] + [record(i, []) for i in range(16, 24)]


def _engine(rejoin_s: float) -> AlertEngine:
    config = alerts_config(min_frames=2, end_after_s=1.0, rejoin_s=rejoin_s)
    # The tracker drops a track unmatched for 0.3 s: the gap forces a new track id.
    return AlertEngine(config.model_copy(update={"tracker": TrackerConfig(min_hits=2, lost_after_s=0.3)}), [camera()])


def test_engine_with_the_real_tracker_keeps_one_alert_across_a_forced_break() -> None:
    engine = _engine(rejoin_s=1.5)
    fired = [a for rec in _broken_walk() for a in engine.process(rec, 0)]
    assert [a.event for a in fired] == ["started", "updated", "ended"]
    assert len({a.alert_id for a in fired}) == 1
    assert fired[1].rejoined and len(set(fired[1].track_ids)) == 2  # the tracker did break the identity
    without = _engine(rejoin_s=0.0)
    again = [a.event for rec in _broken_walk() for a in without.process(rec, 0)]
    assert again.count("started") == 2  # the same input without rejoining: the duplicate of issue 10


def test_a_restart_after_a_rejoin_fires_nothing_twice() -> None:
    frames = _broken_walk()
    first = _engine(rejoin_s=1.5)
    produced = [a for rec in frames[:12] for a in first.process(rec, 0)]
    assert [a.event for a in produced] == ["started", "updated"]
    second = _engine(rejoin_s=1.5)
    second.restore([AlertRecord.from_bytes(a.to_bytes()) for a in produced])
    produced += [a for rec in frames[10:] for a in second.process(rec, 0)]
    assert [a.event for a in produced] == ["started", "updated", "ended"]
    assert len({a.alert_id for a in produced}) == 1


def test_alert_record_track_ids_and_rejoined_fields() -> None:
    out, _ = play(broken(gap=[6, 7]))
    rejoined = out[1][1]
    data = json.loads(rejoined.to_bytes())
    assert data["track_ids"] == [1, 2] and data["rejoined"] is True
    # Records of older producers have neither field.
    old = {k: v for k, v in data.items() if k not in ("track_ids", "rejoined")}
    parsed = AlertRecord.from_bytes(json.dumps(old).encode())
    assert parsed.track_ids == () and parsed.rejoined is False
    for bad, message in ((["1"], "track_ids"), ([True], "track_ids"), (list(range(1001)), "track_ids")):
        with pytest.raises(ContractError, match=message):
            AlertRecord.from_bytes(json.dumps({**data, "track_ids": bad}).encode())
    with pytest.raises(ContractError, match="'rejoined' must be true or false"):
        AlertRecord.from_bytes(json.dumps({**data, "rejoined": "yes"}).encode())
