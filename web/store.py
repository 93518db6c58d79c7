"""The alert store: SQLite (WAL), and every SQL statement of the review service.

Tables:
* `alerts`: one row per alert id, merged from its `started` / `updated` / `ended` events. The merge
  is order-independent and idempotent (replaying the topic changes nothing): start and end times
  are fixed by the events that carry them, `last_seen_ns` and `score` only grow, and the frame and
  box shown come from the earliest lifecycle event seen (started, else the first update, else ended).
* `reviews`: review state keyed by alert id, kept apart so `vigil web rebuild` can rebuild
  `alerts` from the topic without touching it.
* `sessions`: login sessions (hashed ids), so a restart logs nobody out.

One connection per thread (sqlite3 objects must not cross threads); WAL lets the HTTP threads read
while the consumer thread writes. Keep all SQL here, so a server database can follow.
"""

from __future__ import annotations

import base64
import binascii
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vigil.contracts import AlertRecord
from vigil.errors import VigilError

SCHEMA = 1
NS = 1_000_000_000
Verdict = Literal["true_positive", "false_positive"]
_EVENT_RANK = {"started": 0, "updated": 1, "ended": 2}

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    camera TEXT NOT NULL,
    rule TEXT NOT NULL,
    zone TEXT,
    label TEXT NOT NULL,
    class_id INTEGER NOT NULL,
    track_id INTEGER NOT NULL,
    score REAL NOT NULL,
    box TEXT NOT NULL,
    started_ns INTEGER NOT NULL,
    last_seen_ns INTEGER NOT NULL,
    ended_ns INTEGER,
    updates INTEGER NOT NULL DEFAULT 0,
    frame_topic TEXT NOT NULL,
    frame_partition INTEGER NOT NULL,
    frame_offset INTEGER NOT NULL,
    frame_rank INTEGER NOT NULL,
    latency_ms REAL NOT NULL,
    stored_ns INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS alerts_started ON alerts (started_ns DESC, id DESC);
CREATE INDEX IF NOT EXISTS alerts_camera ON alerts (camera, started_ns DESC, id DESC);
CREATE INDEX IF NOT EXISTS alerts_rule ON alerts (rule, started_ns DESC, id DESC);
CREATE INDEX IF NOT EXISTS alerts_label ON alerts (label, started_ns DESC, id DESC);
CREATE INDEX IF NOT EXISTS alerts_active ON alerts (camera) WHERE ended_ns IS NULL;
CREATE TABLE IF NOT EXISTS reviews (
    alert_id TEXT PRIMARY KEY,
    reviewed INTEGER NOT NULL,
    verdict TEXT,
    reviewed_by TEXT,
    reviewed_ns INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS reviews_state ON reviews (reviewed, verdict);
CREATE TABLE IF NOT EXISTS sessions (
    id_hash TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    expires_ns INTEGER NOT NULL
) WITHOUT ROWID;
"""

# started/updated/ended merge into one row; the WHERE makes a repeat a no-op (changes() == 0).
_UPSERT = """
INSERT INTO alerts (id, camera, rule, zone, label, class_id, track_id, score, box, started_ns, last_seen_ns,
                    ended_ns, updates, frame_topic, frame_partition, frame_offset, frame_rank, latency_ms, stored_ns)
VALUES (:id, :camera, :rule, :zone, :label, :class_id, :track_id, :score, :box, :started_ns, :last_seen_ns,
        :ended_ns, :updates, :frame_topic, :frame_partition, :frame_offset, :frame_rank, :latency_ms, :stored_ns)
ON CONFLICT (id) DO UPDATE SET
    score = max(score, excluded.score),
    last_seen_ns = max(last_seen_ns, excluded.last_seen_ns),
    ended_ns = coalesce(ended_ns, excluded.ended_ns),
    updates = max(updates, excluded.updates),
    started_ns = min(started_ns, excluded.started_ns),
    box = CASE WHEN excluded.frame_rank < frame_rank THEN excluded.box ELSE box END,
    track_id = CASE WHEN excluded.frame_rank < frame_rank THEN excluded.track_id ELSE track_id END,
    frame_topic = CASE WHEN excluded.frame_rank < frame_rank THEN excluded.frame_topic ELSE frame_topic END,
    frame_partition = CASE WHEN excluded.frame_rank < frame_rank THEN excluded.frame_partition ELSE frame_partition END,
    frame_offset = CASE WHEN excluded.frame_rank < frame_rank THEN excluded.frame_offset ELSE frame_offset END,
    latency_ms = CASE WHEN excluded.frame_rank < frame_rank THEN excluded.latency_ms ELSE latency_ms END,
    frame_rank = min(frame_rank, excluded.frame_rank)
WHERE excluded.score > score OR excluded.last_seen_ns > last_seen_ns
   OR (ended_ns IS NULL AND excluded.ended_ns IS NOT NULL) OR excluded.updates > updates
   OR excluded.started_ns < started_ns OR excluded.frame_rank < frame_rank
"""

_SELECT = """
SELECT a.id, a.camera, a.rule, a.zone, a.label, a.class_id, a.track_id, a.score, a.box, a.started_ns,
       a.last_seen_ns, a.ended_ns, a.updates, a.frame_topic, a.frame_partition, a.frame_offset, a.latency_ms,
       coalesce(r.reviewed, 0), r.verdict, r.reviewed_by, r.reviewed_ns
FROM alerts AS a LEFT JOIN reviews AS r ON r.alert_id = a.id
"""


class StoreError(VigilError):
    """The alert store cannot be opened or is not one this version understands."""


@dataclass(frozen=True)
class StoredAlert:
    """One alert as the store holds it (merged lifecycle + review state)."""

    id: str
    camera: str
    rule: str
    zone: str | None
    label: str
    class_id: int
    track_id: int
    score: float
    box: tuple[float, float, float, float]
    started_ns: int
    last_seen_ns: int
    ended_ns: int | None
    updates: int
    frame_topic: str
    frame_partition: int
    frame_offset: int
    latency_ms: float
    reviewed: bool
    verdict: Verdict | None
    reviewed_by: str | None
    reviewed_ns: int | None

    @property
    def active(self) -> bool:
        return self.ended_ns is None


@dataclass(frozen=True)
class AlertQuery:
    """Filters of `GET /api/alerts`; None means no filter. `before`/`after` are on the start time."""

    camera: str | None = None
    rule: str | None = None
    label: str | None = None
    reviewed: bool | None = None
    verdict: Verdict | Literal["none"] | None = None
    after_ns: int | None = None
    before_ns: int | None = None
    limit: int = 50
    cursor: tuple[int, str] | None = None


@dataclass(frozen=True)
class SessionRow:
    id_hash: str
    name: str
    role: str
    csrf: str
    created_ns: int
    expires_ns: int


def encode_cursor(alert: StoredAlert) -> str:
    return base64.urlsafe_b64encode(f"{alert.started_ns}:{alert.id}".encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[int, str]:
    """Raises ValueError naming the problem when the cursor is not one this API handed out."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        started, _, alert_id = raw.partition(":")
        if not alert_id:
            raise ValueError
        return int(started), alert_id
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise ValueError("cursor is not one a previous page returned (pass next_cursor back unchanged)") from exc


def _row(values: Sequence[Any]) -> StoredAlert:
    box = json.loads(values[8])
    return StoredAlert(
        id=values[0], camera=values[1], rule=values[2], zone=values[3], label=values[4], class_id=values[5],
        track_id=values[6], score=values[7], box=(box[0], box[1], box[2], box[3]), started_ns=values[9],
        last_seen_ns=values[10], ended_ns=values[11], updates=values[12], frame_topic=values[13],
        frame_partition=values[14], frame_offset=values[15], latency_ms=values[16], reviewed=bool(values[17]),
        verdict=values[18], reviewed_by=values[19], reviewed_ns=values[20],
    )  # fmt: skip


def _params(alert: AlertRecord, stored_ns: int) -> dict[str, Any]:
    return {
        "id": alert.alert_id,
        "camera": alert.camera_id,
        "rule": alert.rule,
        "zone": alert.zone,
        "label": alert.class_name,
        "class_id": alert.class_id,
        "track_id": alert.track_id,
        "score": alert.confidence,
        "box": json.dumps([round(v, 2) for v in alert.box]),
        "started_ns": alert.first_seen_ns,
        "last_seen_ns": alert.last_seen_ns,
        "ended_ns": alert.last_seen_ns if alert.event == "ended" else None,
        "updates": alert.update_seq,
        "frame_topic": alert.frame.topic,
        "frame_partition": alert.frame.partition,
        "frame_offset": alert.frame.offset,
        "frame_rank": _EVENT_RANK[alert.event] * 1_000_000 + min(alert.update_seq, 999_999),
        "latency_ms": alert.latency_ms,
        "stored_ns": stored_ns,
    }


class AlertStore:
    """The SQLite alert store at `path` (created with its folder if missing)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._all: dict[threading.Thread, sqlite3.Connection] = {}
        self._lock = threading.Lock()

    def open(self) -> AlertStore:
        """Create the folder, the schema and WAL mode; raise `StoreError` naming `web.store` on failure."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._conn()
            with conn:
                conn.executescript(_DDL)
                found = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
                if found is None:
                    conn.execute("INSERT INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA),))
                elif found[0] != str(SCHEMA):
                    raise StoreError(
                        f"alert store {self.path} has schema {found[0]}, this vigil reads {SCHEMA}; "
                        "point web.store at a new file and run `vigil web rebuild`"
                    )
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the alert store web.store={self.path}: {exc}") from exc
        return self

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=OFF")
            conn.isolation_level = "DEFERRED"
            self._local.conn = conn
            with self._lock:
                # Thread pools retire idle threads (anyio's after 10 s) and start new ones: close
                # the connections of threads that ended, or every burst of requests leaks some.
                for thread in [t for t in self._all if not t.is_alive()]:
                    self._all.pop(thread).close()
                self._all[threading.current_thread()] = conn
        return conn

    @property
    def connections(self) -> int:
        """Open connections (one per live thread that used the store)."""
        with self._lock:
            return len(self._all)

    def close(self) -> None:
        with self._lock:
            for conn in self._all.values():
                conn.close()
            self._all.clear()
        self._local = threading.local()

    # ------------------------------------------------------------------------------------ alerts

    def upsert(self, alerts: Iterable[AlertRecord], min_started_ns: int = 0) -> list[str]:
        """Merge alert events in one transaction; returns the ids whose row changed (a replayed
        event changes nothing). Events of alerts that started before `min_started_ns` (past
        `web.keep_days`) are not stored."""
        now = time.time_ns()
        changed: list[str] = []
        conn = self._conn()
        with conn:
            for alert in alerts:
                if alert.first_seen_ns < min_started_ns:
                    continue
                if conn.execute(_UPSERT, _params(alert, now)).rowcount:
                    changed.append(alert.alert_id)
        return list(dict.fromkeys(changed))

    def get(self, alert_id: str) -> StoredAlert | None:
        found = self._conn().execute(_SELECT + "WHERE a.id = ?", (alert_id,)).fetchone()
        return _row(found) if found else None

    def get_many(self, ids: Sequence[str]) -> list[StoredAlert]:
        if not ids:
            return []
        marks = ",".join("?" * len(ids))
        return [_row(r) for r in self._conn().execute(_SELECT + f"WHERE a.id IN ({marks})", list(ids)).fetchall()]

    def query(self, q: AlertQuery) -> tuple[list[StoredAlert], str | None]:
        """Newest first, keyset-paginated on (started_ns, id); returns the page and the next cursor."""
        where: list[str] = []
        args: list[Any] = []
        for column, value in (("a.camera", q.camera), ("a.rule", q.rule), ("a.label", q.label)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if q.reviewed is not None:
            where.append("coalesce(r.reviewed, 0) = ?")
            args.append(int(q.reviewed))
        if q.verdict == "none":
            where.append("r.verdict IS NULL")
        elif q.verdict is not None:
            where.append("r.verdict = ?")
            args.append(q.verdict)
        if q.after_ns is not None:
            where.append("a.started_ns >= ?")
            args.append(q.after_ns)
        if q.before_ns is not None:
            where.append("a.started_ns < ?")
            args.append(q.before_ns)
        if q.cursor is not None:
            where.append("(a.started_ns, a.id) < (?, ?)")
            args.extend(q.cursor)
        sql = _SELECT + (f"WHERE {' AND '.join(where)} " if where else "")
        sql += "ORDER BY a.started_ns DESC, a.id DESC LIMIT ?"
        rows = [_row(r) for r in self._conn().execute(sql, [*args, q.limit + 1]).fetchall()]
        page = rows[: q.limit]
        return page, (encode_cursor(page[-1]) if len(rows) > q.limit else None)

    def explain(self, q: AlertQuery) -> str:
        """The query plan of `query(q)` (tests check that every filter is served by an index)."""
        conn = self._conn()
        conn.set_trace_callback(None)
        captured: list[str] = []
        conn.set_trace_callback(captured.append)
        try:
            self.query(q)
        finally:
            conn.set_trace_callback(None)
        plan = conn.execute("EXPLAIN QUERY PLAN " + captured[-1]).fetchall()
        return "\n".join(str(row[-1]) for row in plan)

    def facets(self) -> dict[str, list[str]]:
        conn = self._conn()
        return {
            name: [r[0] for r in conn.execute(f"SELECT DISTINCT {column} FROM alerts ORDER BY 1").fetchall()]
            for name, column in (("cameras", "camera"), ("rules", "rule"), ("labels", "label"))
        }

    def active_by_camera(self, since_ns: int) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        rows = self._conn().execute(
            "SELECT camera, id FROM alerts WHERE ended_ns IS NULL AND last_seen_ns >= ?", (since_ns,)
        )
        for camera, alert_id in rows.fetchall():
            found.setdefault(camera, set()).add(alert_id)
        return found

    def count(self) -> int:
        return int(self._conn().execute("SELECT count(*) FROM alerts").fetchone()[0])

    def ids(self) -> set[str]:
        return {r[0] for r in self._conn().execute("SELECT id FROM alerts").fetchall()}

    def delete_older_than(self, started_before_ns: int) -> int:
        """Retention (`web.keep_days`): alerts that started before the cut, and their review state."""
        conn = self._conn()
        with conn:
            conn.execute(
                "DELETE FROM reviews WHERE alert_id IN (SELECT id FROM alerts WHERE started_ns < ?)",
                (started_before_ns,),
            )
            return int(conn.execute("DELETE FROM alerts WHERE started_ns < ?", (started_before_ns,)).rowcount)

    # ------------------------------------------------------------------------------------ reviews

    def review(self, ids: Sequence[str], reviewed: bool, verdict: Verdict | None, by: str) -> list[str]:
        """Set review state; returns the ids that exist (review state of unknown ids is not kept)."""
        now = time.time_ns()
        conn = self._conn()
        with conn:
            found = [a.id for a in self.get_many(list(dict.fromkeys(ids)))]
            conn.executemany(
                "INSERT INTO reviews (alert_id, reviewed, verdict, reviewed_by, reviewed_ns) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (alert_id) DO UPDATE SET reviewed = excluded.reviewed, verdict = excluded.verdict, "
                "reviewed_by = excluded.reviewed_by, reviewed_ns = excluded.reviewed_ns",
                [(alert_id, int(reviewed), verdict, by, now) for alert_id in found],
            )
        return found

    def copy_state_from(self, other: AlertStore) -> tuple[int, int]:
        """Copy review state and sessions from another store (for `vigil web rebuild`)."""
        source = other._conn()
        reviews = source.execute("SELECT alert_id, reviewed, verdict, reviewed_by, reviewed_ns FROM reviews").fetchall()
        sessions = source.execute("SELECT id_hash, name, role, csrf, created_ns, expires_ns FROM sessions").fetchall()
        conn = self._conn()
        with conn:
            conn.executemany("INSERT OR REPLACE INTO reviews VALUES (?, ?, ?, ?, ?)", reviews)
            conn.executemany("INSERT OR REPLACE INTO sessions VALUES (?, ?, ?, ?, ?, ?)", sessions)
        return len(reviews), len(sessions)

    # ------------------------------------------------------------------------------------ sessions

    def add_session(self, session: SessionRow) -> None:
        conn = self._conn()
        with conn:
            conn.execute("DELETE FROM sessions WHERE expires_ns < ?", (time.time_ns(),))
            conn.execute(
                "INSERT INTO sessions (id_hash, name, role, csrf, created_ns, expires_ns) VALUES (?, ?, ?, ?, ?, ?)",
                (session.id_hash, session.name, session.role, session.csrf, session.created_ns, session.expires_ns),
            )

    def session(self, id_hash: str) -> SessionRow | None:
        found = (
            self._conn()
            .execute(
                "SELECT id_hash, name, role, csrf, created_ns, expires_ns FROM sessions WHERE id_hash = ?", (id_hash,)
            )
            .fetchone()
        )
        return SessionRow(*found) if found else None

    def end_session(self, id_hash: str) -> None:
        conn = self._conn()
        with conn:
            conn.execute("DELETE FROM sessions WHERE id_hash = ?", (id_hash,))
