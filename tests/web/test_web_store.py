"""The alert store on a real SQLite file: merging lifecycle events, replays, review state,
keyset pagination, filters served by indexes, retention."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest

from tests.web.conftest import NS, make_alert
from vigil.contracts import FrameRef
from web.store import AlertQuery, AlertStore, decode_cursor

REF = FrameRef("frames", 0, 7)


@pytest.fixture
def store(tmp_path: Path) -> AlertStore:
    opened = AlertStore(tmp_path / "deep" / "alerts.sqlite3").open()
    yield opened
    opened.close()


def lifecycle(alert_id: str, start: int) -> list:
    return [
        make_alert(alert_id, "started", "cam", FrameRef("frames", 0, 1), start, start, box=(1, 2, 3, 4), score=0.6),
        make_alert(
            alert_id,
            "updated",
            "cam",
            FrameRef("frames", 0, 5),
            start,
            start + NS,
            box=(5, 6, 7, 8),
            score=0.9,
            update_seq=1,
        ),
        make_alert(
            alert_id, "ended", "cam", FrameRef("frames", 0, 9), start, start + 3 * NS, box=(9, 9, 9, 9), score=0.7
        ),
    ]


def test_events_merge_into_one_row_in_any_order_and_replays_change_nothing(tmp_path: Path) -> None:
    events = lifecycle("al_a", 10 * NS)
    rows = set()
    for order in itertools.permutations(events):
        path = tmp_path / f"{random.random()}.db"
        store = AlertStore(path).open()
        store.upsert(list(order))
        assert store.upsert(list(order)) == []  # a replay writes nothing
        row = store.get("al_a")
        assert row is not None
        rows.add(row)
        store.close()
    assert len(rows) == 1
    row = rows.pop()
    assert (row.started_ns, row.last_seen_ns, row.ended_ns) == (10 * NS, 13 * NS, 13 * NS)
    assert row.score == 0.9 and row.updates == 1
    assert row.box == (1, 2, 3, 4) and row.frame_offset == 1  # the started event's frame and box: the snapshot


def test_review_state_is_kept_apart_and_copied(store: AlertStore, tmp_path: Path) -> None:
    store.upsert(lifecycle("al_r", NS))
    assert store.review(["al_r", "al_missing"], True, "false_positive", "ana") == ["al_r"]
    reviewed = store.get("al_r")
    assert (
        reviewed is not None
        and reviewed.reviewed
        and reviewed.verdict == "false_positive"
        and reviewed.reviewed_by == "ana"
    )
    store.upsert(lifecycle("al_r", NS))  # alert events never touch review state
    assert store.get("al_r").verdict == "false_positive"  # type: ignore[union-attr]
    fresh = AlertStore(tmp_path / "fresh.db").open()
    fresh.copy_state_from(store)
    fresh.upsert(lifecycle("al_r", NS))
    assert fresh.get("al_r").reviewed  # type: ignore[union-attr]
    fresh.close()


def test_keyset_pages_cover_everything_once_under_filters(store: AlertStore) -> None:
    events = []
    for n in range(250):
        camera = ("north", "south")[n % 2]
        events.append(
            make_alert(
                f"al_{n:04d}",
                "started",
                camera,
                REF,
                (1000 + n // 3) * NS,
                (1000 + n) * NS,
                rule=("r1", "r2", "r3")[n % 3],
            )
        )
    store.upsert(events)
    store.review([f"al_{n:04d}" for n in range(0, 250, 5)], True, "true_positive", "ana")
    for query, expected in (
        (AlertQuery(limit=37), 250),
        (AlertQuery(camera="north", limit=20), 125),
        (AlertQuery(rule="r2", camera="south", limit=9), len([n for n in range(250) if n % 3 == 1 and n % 2 == 1])),
        (AlertQuery(reviewed=True, limit=7), 50),
        (AlertQuery(reviewed=False, verdict="none", limit=50), 200),
        (AlertQuery(verdict="true_positive", limit=11), 50),
        (AlertQuery(after_ns=1050 * NS, before_ns=1060 * NS, limit=4), 30),
    ):
        seen, cursor = [], None
        while True:
            page, cursor = store.query(
                AlertQuery(**{**query.__dict__, "cursor": decode_cursor(cursor) if cursor else None})
            )
            seen += page
            if cursor is None:
                break
        assert len(seen) == len({a.id for a in seen}) == expected, query
        keys = [(a.started_ns, a.id) for a in seen]
        assert keys == sorted(keys, reverse=True)


@pytest.mark.parametrize(
    "query, index",
    [
        (AlertQuery(), "alerts_started"),
        (AlertQuery(camera="x"), "alerts_camera"),
        (AlertQuery(rule="x"), "alerts_rule"),
        (AlertQuery(label="person"), "alerts_label"),
        (AlertQuery(camera="x", cursor=(5, "al_x")), "alerts_camera"),
    ],
)
def test_filters_are_served_by_indexes_not_scans(store: AlertStore, query: AlertQuery, index: str) -> None:
    plan = store.explain(query)
    assert index in plan and "TEMP B-TREE" not in plan, plan


def test_retention_removes_old_alerts_and_their_reviews(store: AlertStore) -> None:
    store.upsert(lifecycle("al_old", 1 * NS) + lifecycle("al_new", 100 * NS))
    store.review(["al_old", "al_new"], True, None, "ana")
    assert store.delete_older_than(50 * NS) == 1
    assert store.ids() == {"al_new"}
    assert store.upsert(lifecycle("al_old", 1 * NS), min_started_ns=50 * NS) == []  # not re-added by a replay
    assert store.ids() == {"al_new"}


def test_bad_cursor_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="next_cursor"):
        decode_cursor("!!!not-a-cursor")


def test_connections_of_ended_threads_are_closed(store: AlertStore) -> None:
    """Thread pools retire idle threads and start new ones (anyio after 10 s idle): each new thread
    opens a connection, and the store must not keep those of threads that are gone."""
    import threading

    store.upsert(lifecycle("al_t", 10 * NS))
    for _ in range(30):
        thread = threading.Thread(target=lambda: store.get("al_t"))
        thread.start()
        thread.join()
    assert store.get("al_t") is not None  # this thread's connection, opened after the others ended
    assert store.connections <= 2, store.connections
