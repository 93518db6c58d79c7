"""Alert rules: a per (camera, rule, track) state machine. Pure logic: every time is injected.

Lifecycle of one (rule, track):

    pending --(min_frames consecutive frames and min_dwell_s in the zone,
               inside the rule's schedule)-------------------------------> active: `started`
    active  --(every update_every_s of capture time, if set)---------------> active: `updated`
    active  --(out of the zone, or lost, for end_after_s)------------------> cooldown: `ended`
    cooldown --(cooldown_s later)-------------------------------------------> pending

All durations are measured in capture time (`capture_ns` of the frames), so a replayed recording
alerts exactly as it did live. Leaving the zone briefly while active does not end the alert:
that is what keeps a person walking behind a pillar from producing a burst of alerts.

One alert per object across identity breaks: when the tracker loses an object and picks it up
again as a new track (people crossing, an occlusion), the new track's first frame that satisfies
the rule looks for an alert of the same rule and class whose track is lost (absent from this
frame's tracker output), was last seen less than `rejoin_s` before the new track first appeared,
and whose predicted position is near the new box (see `alerts.rejoin`). It continues that alert: same id,
an `updated` event with `rejoined: true`, the new track appended to `track_ids`. An alert that
has already ended passes its cooldown to the new track instead, as if its own track had come
back. A schedule only gates `started`: an alert open when its window closes ends normally.

Alert ids are deterministic: a short hash of (camera, rule, capture_ns of the first frame that
satisfied the rule, class and box of that detection). Track ids are not part of it because they
restart with the aggregator; the same input therefore always yields the same ids.

After a restart, `restore()` takes the recent alerts read back from the alerts topic as *claims*:
a confirmed track that satisfies a rule near a claim's last box adopts it (same id, no new
`started`; an ended claim puts the track in cooldown), and an open claim nobody adopts within
end_after_s is ended. See docs/webhooks.md, "Exactly one alert per object".
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from alerts.rejoin import Trail, rejoin_distance
from alerts.schedule import Schedule
from alerts.tracker import NS
from alerts.zones import PolygonZone
from vigil.config import RuleConfig
from vigil.contracts import AlertEvent, AlertRecord, FrameRef
from vigil.detections import Detections
from vigil.geometry import box_iou

Phase = Literal["pending", "active", "cooldown"]
SnapshotKind = Literal["none", "base64_jpeg", "frame_ref"]
# What a rule made of one tracked row in one frame (`CameraRules.outcomes`, for `vigil eval`).
Outcome = Literal[
    # not satisfied: other class, below min_confidence, track's median score below `threshold`, anchor outside
    "class", "confidence", "threshold", "zone",
    "pending", "outside_schedule", "started", "rate_limited", "active", "active_silent",
    "cooldown", "rejoined", "rejoined_cooldown", "adopted",
]  # fmt: skip

# A track's first sighting is forgotten this long after its last one (bounds `_first_seen`).
FIRST_SEEN_TTL_NS = 120 * NS


def _first_unmet(of_class: bool, confident: bool, counts: bool, in_zone: bool) -> Outcome:
    """The first check a tracked row fails, or "pending" when it satisfies the rule."""
    for ok, outcome in ((of_class, "class"), (confident, "confidence"), (counts, "threshold"), (in_zone, "zone")):
        if not ok:
            return outcome  # type: ignore[return-value]
    return "pending"


def alert_id(camera_id: str, rule: str, start_ns: int, class_name: str, box: tuple[float, ...]) -> str:
    """Deterministic id of one alert: identical input gives the identical id after any restart."""
    rounded = ",".join(f"{v:.0f}" for v in box)
    digest = hashlib.sha256(f"{camera_id}|{rule}|{start_ns}|{class_name}|{rounded}".encode()).hexdigest()
    return f"al_{digest[:20]}"


@dataclass(frozen=True)
class Frame:
    """What the rule engine needs to know about the frame being processed."""

    camera_id: str
    capture_ns: int
    ref: FrameRef
    width: int
    height: int


@dataclass
class RuleState:
    phase: Phase = "pending"
    track_id: int = -1
    run_frames: int = 0
    run_start_ns: int = 0
    last_in_ns: int = 0
    alert_id: str = ""
    started_ns: int = 0
    class_name: str = ""
    class_id: int = 0
    best_confidence: float = 0.0
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    ref: FrameRef | None = None
    update_seq: int = 0  # `updated` events sent so far (their webhook ids)
    update_slot: int = 0  # update_every_s periods passed
    cooldown_until_ns: int = 0
    silent: bool = False  # rate-limited: the alert runs its course but emits nothing
    # Where the alert's current track was last seen (in or out of the zone) and how it moved, to
    # recognise the object when the tracker loses it and starts a new track.
    seen_box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    seen_ns: int = 0
    path: Trail = field(default_factory=Trail)
    track_ids: list[int] = field(default_factory=list)

    @classmethod
    def from_claim(
        cls,
        record: AlertRecord,
        cfg: RuleConfig,
        phase: Phase,
        last_in_ns: int,
        track_id: int,
        cooldown_until_ns: int = 0,
    ) -> RuleState:
        """The state of an alert read back from the alerts topic (see `CameraRules.restore`). Its
        old track ids are not kept: a restarted tracker numbers tracks anew. The periodic update
        schedule resumes after the period of the record's last sighting."""
        every = int(cfg.update_every_s * NS) if cfg.update_every_s else 0
        return cls(
            phase=phase,
            track_id=track_id,
            alert_id=record.alert_id,
            started_ns=record.first_seen_ns,
            class_name=record.class_name,
            class_id=record.class_id,
            best_confidence=record.confidence,
            box=record.box,
            ref=record.frame,
            last_in_ns=last_in_ns,
            update_seq=record.update_seq,
            update_slot=(record.last_seen_ns - record.first_seen_ns) // every if every else 0,
            cooldown_until_ns=cooldown_until_ns,
            seen_box=record.box,
            seen_ns=last_in_ns,
            track_ids=[track_id] if track_id >= 0 else list(record.track_ids),
        )

    def seen(self, box: tuple[float, float, float, float], t_ns: int) -> None:
        self.seen_box, self.seen_ns = box, t_ns
        self.path.add(box, t_ns)


@dataclass
class Claim:
    """An alert read back from the alerts topic after a restart, waiting to be re-attached."""

    record: AlertRecord
    ended: bool


@dataclass
class RuleCounters:
    rate_limited: int = 0
    adopted: int = 0
    rejoined: int = 0


class CompiledRule:
    """A `RuleConfig` bound to one camera's zone."""

    def __init__(self, config: RuleConfig, zone: PolygonZone | None) -> None:
        self.config = config
        self.zone = zone
        self.classes = frozenset(config.classes)
        self.schedule = Schedule(config.schedule)

    def checks(self, dets: Detections, frame: Frame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(class, confidence, threshold, zone) masks; a row satisfies the rule where all four hold.
        The threshold mask is the track's score history (`data["true_positive"]`, see
        `alerts.filters.ScoreHistory`); rows without one pass it."""
        names = dets.data.get("class_name")
        if names is None:
            names = np.full(len(dets), "", object)
        of_class = np.isin(names, list(self.classes))
        confident = dets.confidence >= self.config.min_confidence
        positive = dets.data.get("true_positive")
        counts = np.ones(len(dets), bool) if positive is None else positive.astype(bool)
        in_zone = np.ones(len(dets), bool)
        if self.zone is not None and (of_class & confident & counts).any():
            in_zone = self.zone.trigger(dets, (frame.width, frame.height))
        return of_class, confident, counts, in_zone

    def satisfied(self, dets: Detections, frame: Frame) -> np.ndarray:
        of_class, confident, counts, in_zone = self.checks(dets, frame)
        result: np.ndarray = of_class & confident & counts & in_zone
        return result


class CameraRules:
    """Every rule of one camera. `process(tracked, frame, now_ns) -> [AlertRecord]`.

    With `trace=True`, `outcomes` holds, after each `process`, one `Outcome` per tracked row per
    rule name, and `alert_ids` the id of the alert each row carries ("" if none): what `vigil
    eval` explains missed events with."""

    def __init__(
        self,
        camera_id: str,
        rules: list[CompiledRule],
        rate_limit_per_minute: int,
        snapshot: SnapshotKind = "frame_ref",
        trace: bool = False,
    ) -> None:
        self.camera_id = camera_id
        self.rules = rules
        self.rate_limit_per_minute = rate_limit_per_minute
        self.snapshot: SnapshotKind = snapshot
        self.states: dict[tuple[str, int], RuleState] = {}
        self.claims: dict[str, list[Claim]] = {}
        self.counters = RuleCounters()
        self.trace = trace
        self.outcomes: dict[str, list[Outcome]] = {}
        self.alert_ids: dict[str, list[str]] = {}
        self._started: deque[int] = deque()
        # track id -> (first, last) capture time it was in the tracker's output: a new track can
        # only continue an alert whose track was last seen before it first appeared.
        self._first_seen: dict[int, tuple[int, int]] = {}
        # Capture time of the first frame after a restore: the alerts topic only knows when an open
        # alert was last *reported*, not last seen, so open claims get end_after_s from here.
        self._resume_ns: int | None = None

    # ------------------------------------------------------------------------------------ restore

    def restore(self, records: list[AlertRecord]) -> None:
        """Claims from the alerts topic tail: the latest event per alert id of this camera."""
        latest: dict[str, AlertRecord] = {}
        for record in records:
            if record.camera_id == self.camera_id:
                latest[record.alert_id] = record
        self.claims = {}
        self._resume_ns = None
        for record in latest.values():
            self.claims.setdefault(record.rule, []).append(Claim(record, ended=record.event == "ended"))

    def _adopt(self, rule: CompiledRule, dets: Detections, row: int, t_ns: int) -> RuleState | None:
        """Re-attach a restored alert to a track that satisfies its rule while the alert can still
        be live: an open claim until end_after_s past its last sighting (the object is assumed to
        still be there), an ended claim only for frames up to its end (the replayed past). Among
        several, the best-overlapping (then nearest) box of the same class wins."""
        claims = self.claims.get(rule.config.name)
        if not claims:
            return None
        cfg = rule.config
        class_name = str(dets.data["class_name"][row])
        window = int(cfg.end_after_s * NS)
        candidates = [
            i for i, c in enumerate(claims) if c.record.class_name == class_name and t_ns < self._claim_seen(c) + window
        ]
        if not candidates:
            return None
        box = dets.xyxy[row : row + 1]
        boxes = np.asarray([claims[i].record.box for i in candidates], np.float32)
        iou = box_iou(box, boxes)[0]
        centre = (box[0, :2] + box[0, 2:]) / 2
        distance = np.linalg.norm((boxes[:, :2] + boxes[:, 2:]) / 2 - centre, axis=1)
        best = candidates[int(np.lexsort((distance, -iou))[0])]
        claim = claims.pop(best)
        r = claim.record
        self.counters.adopted += 1
        last_in_ns = max(t_ns, r.last_seen_ns)
        tid = int(dets.tracker_id[row]) if dets.tracker_id is not None else -1
        if claim.ended:
            cooldown_until_ns = r.last_seen_ns + int((cfg.end_after_s + cfg.cooldown_s) * NS)
            return RuleState.from_claim(r, cfg, "cooldown", last_in_ns, tid, cooldown_until_ns)
        return RuleState.from_claim(r, cfg, "active", last_in_ns, tid)

    def has_open(self) -> bool:
        """True while an alert is active, or a restored open alert is not yet adopted or ended."""
        if any(state.phase == "active" for state in self.states.values()):
            return True
        return any(not claim.ended for claims in self.claims.values() for claim in claims)

    # ------------------------------------------------------------------------------------ rejoin

    def _rejoin(
        self, rule: CompiledRule, dets: Detections, row: int, tid: int, t_ns: int, present: set[int]
    ) -> RuleState | None:
        """The alert (active, or ended and in cooldown) of this rule that the new track `tid` is
        the continuation of, taken over from its lost track; None if there is none. A track that
        carried the alert before gets it back; otherwise the nearest lost alert of the same class,
        last seen within rejoin_s before this track first appeared (so two people who were both
        in view are never merged), whose box is where the new one is (`rejoin_distance`)."""
        cfg = rule.config
        if cfg.rejoin_s <= 0:
            return None
        name = rule.config.name
        class_name = str(dets.data["class_name"][row])
        first_ns = self._first_seen.get(tid, (t_ns, t_ns))[0]
        box = tuple(float(v) for v in dets.xyxy[row])
        best: tuple[float, tuple[str, int]] | None = None
        for key, state in self.states.items():
            if key[0] != name or state.phase == "pending" or state.track_id in present:
                continue
            if state.phase == "cooldown" and t_ns >= state.cooldown_until_ns:
                continue
            if tid in state.track_ids:
                best = (-1.0, key)  # its own alert: no closer candidate exists
                break
            if state.class_name != class_name or not state.seen_ns < first_ns <= state.seen_ns + cfg.rejoin_s * NS:
                continue
            distance = rejoin_distance(state.seen_box, state.seen_ns, state.path, box, t_ns)  # type: ignore[arg-type]
            if distance is not None and (best is None or distance < best[0]):
                best = (distance, key)
        if best is None:
            return None
        state = self.states.pop(best[1])
        state.track_id = tid
        if tid not in state.track_ids:
            state.track_ids.append(tid)
        self.counters.rejoined += 1
        return state

    # ------------------------------------------------------------------------------------ per frame

    def process(self, tracked: Detections, frame: Frame, now_ns: int) -> list[AlertRecord]:
        """Advance every rule by one frame of confirmed, tracked detections."""
        out: list[AlertRecord] = []
        t = frame.capture_ns
        if self._resume_ns is None and self.claims:
            self._resume_ns = t
        ids = tracked.tracker_id if tracked.tracker_id is not None else np.full(len(tracked), -1, np.int64)
        present = {int(i) for i in ids}
        self._note_seen(tracked, ids, t)
        self.outcomes, self.alert_ids = {}, {}
        for rule in self.rules:
            name = rule.config.name
            of_class, confident, counts, in_zone = rule.checks(tracked, frame)
            mask = of_class & confident & counts & in_zone
            # Traced for `vigil eval` only: what each row was made of, even when nothing happened.
            outcomes: list[Outcome] = (
                [
                    _first_unmet(*checks)
                    for checks in zip(
                        of_class.tolist(), confident.tolist(), counts.tolist(), in_zone.tolist(), strict=True
                    )
                ]
                if self.trace
                else ["pending"] * len(tracked)
            )
            seen: set[int] = set()
            for row in np.flatnonzero(mask):
                tid = int(ids[row])
                seen.add(tid)
                key = (name, tid)
                state = self.states.get(key)
                if state is None or (state.phase == "pending" and state.run_frames == 0):
                    adopted = self._adopt(rule, tracked, int(row), t)
                    if adopted is not None:
                        self.states[key] = adopted
                        outcomes[row] = "adopted"
                        continue
                if state is None:
                    rejoined = self._rejoin(rule, tracked, int(row), tid, t, present)
                    if rejoined is not None:
                        self.states[key] = rejoined
                        outcomes[row] = self._continue(rule, rejoined, tracked, int(row), frame, now_ns, out)
                        continue
                    state = self.states[key] = RuleState(track_id=tid)
                outcomes[row] = self._inside(rule, state, tracked, int(row), frame, now_ns, out)
            for (rule_name, tid), state in list(self.states.items()):
                if rule_name == name and tid not in seen:
                    self._outside(rule, (rule_name, tid), state, frame, now_ns, out)
            self._expire_claims(rule, frame, now_ns, out)
            if self.trace:
                self.outcomes[name] = outcomes
                carried = [self.states.get((name, int(tid))) for tid in ids.tolist()]
                self.alert_ids[name] = [st.alert_id if st is not None else "" for st in carried]
        return out

    def _note_seen(self, tracked: Detections, ids: npt.NDArray[np.int64], t_ns: int) -> None:
        """Where each alert's track is now, in the zone or not; when each track first appeared."""
        rows = {int(tid): row for row, tid in enumerate(ids.tolist())}
        for tid in rows:
            first = self._first_seen.get(tid)
            self._first_seen[tid] = (first[0] if first else t_ns, t_ns)
        if len(self._first_seen) > 2 * len(rows) + 64:
            self._first_seen = {k: v for k, v in self._first_seen.items() if t_ns - v[1] < FIRST_SEEN_TTL_NS}
        for state in self.states.values():
            row = rows.get(state.track_id)
            if row is not None and state.phase != "pending":
                state.seen(tuple(float(v) for v in tracked.xyxy[row]), t_ns)  # type: ignore[arg-type]

    def _continue(
        self,
        rule: CompiledRule,
        state: RuleState,
        dets: Detections,
        row: int,
        frame: Frame,
        now_ns: int,
        out: list[AlertRecord],
    ) -> Outcome:
        """A new track took over `state` (see `_rejoin`): an active alert goes on under its id and
        says so; an ended one hands over its cooldown."""
        if state.phase == "cooldown":
            return "rejoined_cooldown"
        t = frame.capture_ns
        state.last_in_ns = t
        state.box, state.ref = tuple(float(v) for v in dets.xyxy[row]), frame.ref  # type: ignore[assignment]
        state.seen(state.box, t)
        state.best_confidence = max(state.best_confidence, float(dets.confidence[row]))
        if not state.silent:
            state.update_seq += 1
            out.append(self._record(rule, state, "updated", frame, now_ns, rejoined=True))
        return "rejoined"

    def _inside(
        self,
        rule: CompiledRule,
        state: RuleState,
        dets: Detections,
        row: int,
        frame: Frame,
        now_ns: int,
        out: list[AlertRecord],
    ) -> Outcome:
        cfg = rule.config
        t = frame.capture_ns
        box = tuple(float(v) for v in dets.xyxy[row])
        confidence = float(dets.confidence[row])
        if state.phase == "cooldown":
            if t < state.cooldown_until_ns:
                return "cooldown"
            state.phase, state.run_frames = "pending", 0
        if state.phase == "pending":
            if state.run_frames == 0:
                state.run_start_ns = t
            state.run_frames += 1
            state.last_in_ns = t
            if state.run_frames < cfg.min_frames or (t - state.run_start_ns) < cfg.min_dwell_s * NS:
                return "pending"
            if not rule.schedule.allows(t):
                return "outside_schedule"  # keeps counting: fires on the first frame inside a window
            class_name = str(dets.data["class_name"][row])
            state.phase = "active"
            state.started_ns = t
            state.class_name, state.class_id = class_name, int(dets.class_id[row])
            state.best_confidence, state.box, state.ref = confidence, box, frame.ref  # type: ignore[assignment]
            state.update_seq = state.update_slot = 0
            state.seen(box, t)  # type: ignore[arg-type]
            state.track_ids = [state.track_id]
            state.alert_id = alert_id(self.camera_id, cfg.name, t, class_name, box)
            state.silent = not self._allow_start(t)
            if state.silent:
                return "rate_limited"
            out.append(self._record(rule, state, "started", frame, now_ns))
            return "started"
        # active
        state.last_in_ns = t
        state.box, state.ref = box, frame.ref  # type: ignore[assignment]
        state.best_confidence = max(state.best_confidence, confidence)
        if cfg.update_every_s is not None:
            slot = int((t - state.started_ns) // int(cfg.update_every_s * NS))
            if slot > state.update_slot:
                state.update_slot = slot
                if not state.silent:
                    state.update_seq += 1
                    out.append(self._record(rule, state, "updated", frame, now_ns))
        return "active_silent" if state.silent else "active"

    def _outside(
        self,
        rule: CompiledRule,
        key: tuple[str, int],
        state: RuleState,
        frame: Frame,
        now_ns: int,
        out: list[AlertRecord],
    ) -> None:
        cfg = rule.config
        t = frame.capture_ns
        if state.phase == "pending":
            # Consecutive frames only: leaving the zone (or a missed frame) restarts the count.
            del self.states[key]
        elif state.phase == "active":
            if t - state.last_in_ns >= cfg.end_after_s * NS:
                state.phase = "cooldown"
                state.cooldown_until_ns = t + int(cfg.cooldown_s * NS)
                if not state.silent:
                    out.append(self._record(rule, state, "ended", frame, now_ns))
        elif t >= state.cooldown_until_ns:
            del self.states[key]

    def _claim_seen(self, claim: Claim) -> int:
        if claim.ended or self._resume_ns is None:
            return claim.record.last_seen_ns
        return max(claim.record.last_seen_ns, self._resume_ns)

    def _expire_claims(self, rule: CompiledRule, frame: Frame, now_ns: int, out: list[AlertRecord]) -> None:
        """An open claim nobody adopted within end_after_s ends as its track would have."""
        claims = self.claims.get(rule.config.name)
        if not claims:
            return
        cfg = rule.config
        t = frame.capture_ns
        keep: list[Claim] = []
        for claim in claims:
            r = claim.record
            if claim.ended:
                if t < r.last_seen_ns + int((cfg.end_after_s + cfg.cooldown_s) * NS):
                    keep.append(claim)
            elif t - self._claim_seen(claim) >= cfg.end_after_s * NS:
                state = RuleState.from_claim(r, cfg, "cooldown", r.last_seen_ns, r.track_id)
                state.track_ids = list(r.track_ids) or [r.track_id]
                out.append(self._record(rule, state, "ended", frame, now_ns))
            else:
                keep.append(claim)
        self.claims[rule.config.name] = keep

    def _allow_start(self, t_ns: int) -> bool:
        """Sliding one-minute window of capture time, per camera."""
        while self._started and t_ns - self._started[0] >= 60 * NS:
            self._started.popleft()
        if len(self._started) >= self.rate_limit_per_minute:
            self.counters.rate_limited += 1
            return False
        self._started.append(t_ns)
        return True

    def _record(
        self,
        rule: CompiledRule,
        state: RuleState,
        event: AlertEvent,
        frame: Frame,
        now_ns: int,
        rejoined: bool = False,
    ) -> AlertRecord:
        ref = state.ref or frame.ref
        return AlertRecord(
            alert_id=state.alert_id,
            event=event,
            camera_id=self.camera_id,
            rule=rule.config.name,
            zone=rule.config.zone,
            class_name=state.class_name,
            class_id=state.class_id,
            track_id=state.track_id,
            # Rounded as the JSON carries them, so a record equals its own round trip.
            confidence=round(state.best_confidence, 5),
            box=(round(state.box[0], 2), round(state.box[1], 2), round(state.box[2], 2), round(state.box[3], 2)),
            first_seen_ns=state.started_ns,
            last_seen_ns=state.last_in_ns,
            frame=ref,
            latency_ms=max(0.0, (now_ns - frame.capture_ns) / 1e6),
            snapshot=f"{ref.topic}/{ref.partition}/{ref.offset}" if self.snapshot == "frame_ref" else None,
            snapshot_kind=self.snapshot,
            update_seq=state.update_seq if event == "updated" else 0,
            track_ids=tuple(state.track_ids),
            rejoined=rejoined,
        )
