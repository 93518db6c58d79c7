"""The aggregator: the detections topic's consumer group in, alert events on the alerts topic out.

Commit protocol (what makes restarts safe):

1. poll a batch of detections records; run each through `AlertEngine` (tracking, zones, rules);
2. publish the resulting alert events, then `flush()` and check every send;
3. only then commit, as explicit offsets, the detections records that were handled.

Steps 2-3 run at most every `alerts.commit_interval_ms` (and on a clean stop), not after every
poll: a synchronous commit per poll was a third of this process's CPU and an OffsetCommit
(a write to `__consumer_offsets`) per detections batch in the broker. Sends are not held back by
this: the producer sends each alert at once (no linger); only the wait for the acknowledgement
and the commit are deferred, so what a crash re-reads grows to at most that interval.

So an alert is never lost: a failure anywhere before 3 (the engine, a send, the read-back of the
alerts tail) stops the aggregator without committing anything of that batch, and the next owner
re-consumes it. It is also never fired twice: on every partition assignment (start, restart,
rebalance) the aggregator reads back the recent tail of the alerts topic and hands it to the
engine as claims (see `alerts.rules`), so an object whose alert is open keeps its alert id instead
of starting a new one; repeats that still slip through (same input, same deterministic id) are
dropped by the deliverers by webhook id.

A camera that stops sending (camera or detector down) would otherwise keep its open alerts open:
each loop also asks the engine to end the alerts of cameras idle longer than their rules'
`end_after_s` (see `AlertEngine.sweep`), and publishes those `ended` events the same way.

A Kafka outage is transient, never fatal: a failed poll is retried, a checkpoint waits for its
sends to be acknowledged (as long as the producer's delivery timeout allows), a refused commit is
left to the next one. A failure that leaves records handled but unpublished (a send that timed
out, the alerts tail unreadable after an assignment) restarts the aggregator inside the process
exactly as a process restart would: a fresh engine and consumer resume from the last commit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kafka import ConsumerRebalanceListener, TopicPartition
from kafka.errors import CommitFailedError, RebalanceInProgressError
from kafka.structs import OffsetAndMetadata

from alerts import metrics
from alerts.engine import AlertEngine
from alerts.snapshot import SnapshotFetcher
from vigil.config import VigilConfig
from vigil.contracts import AlertRecord, DetectionsRecord, KafkaRecord
from vigil.errors import ContractError, KafkaUnavailableError, VigilError
from vigil.kafka import (
    DeadLetterPublisher,
    KafkaError,
    Outage,
    gathering_fetches,
    make_consumer,
    make_producer,
    subscribe,
    transient,
)

log = logging.getLogger(__name__)


class AggregatorError(VigilError):
    """The aggregator could not publish its alerts; it stops without committing, so nothing is lost."""


# How often a checkpoint re-checks `stop` while it waits for Kafka to acknowledge its sends.
_FLUSH_SLICE_S = 1.0
# Pause between attempts to reopen the consumer while Kafka does not answer.
_RETRY_S = 0.5


def read_alert_tail(config: VigilConfig, lookback_s: float, now_ms: int | None = None) -> list[AlertRecord]:
    """Every alert event published in the last `lookback_s` seconds (broker time), oldest first."""
    topic = config.topics.alerts.name
    consumer = make_consumer(config.kafka, "alerts-restore", None, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        since = (int(time.time() * 1000) if now_ms is None else now_ms) - int(lookback_s * 1000)
        starts = consumer.offsets_for_times({tp: since for tp in tps})
        ends = consumer.end_offsets(tps)
        for tp in tps:
            found = starts.get(tp)
            consumer.seek(tp, found.offset if found is not None else ends[tp])
        records: list[AlertRecord] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                raise AggregatorError(f"reading back the alerts topic {topic} took over 60 s")
            for batch in consumer.poll(timeout_ms=500).values():
                for record in batch:
                    try:
                        records.append(AlertRecord.from_bytes(record.value))
                    except ContractError:
                        continue  # a malformed alert is the deliverers' to dead-letter; it claims nothing
        records.sort(key=lambda r: (r.last_seen_ns, r.event != "started"))
        return records
    finally:
        consumer.close(autocommit=False)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """kafka-python runs these on its IO thread, where no blocking consumer call is allowed: only
    note the assignment; the poll loop restores before it processes the first record. Nothing is
    done on revocation: what was handled since the last checkpoint (at most `commit_interval_ms`)
    is re-consumed by the new owner, which restores the claims from the alerts tail, and an alert
    it fires again keeps its deterministic id, which the deliverers de-duplicate (a batch that
    failed is not committed at all either)."""

    def __init__(self, aggregator: Aggregator) -> None:
        self.aggregator = aggregator

    def on_partitions_revoked(self, revoked: Any) -> None:
        pass

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.aggregator.assigned = list(assigned)


class Aggregator:
    """Runs the engine on the detections topic until `stop` is set."""

    def __init__(self, config: VigilConfig, stop: threading.Event, clock: Callable[[], int] = time.time_ns) -> None:
        self.config = config
        self.stop = stop
        self.clock = clock
        self.engine = AlertEngine.from_config(config)
        self.lookback_s = config.alerts.restore_lookback_s
        self._producer: Any = None
        self._consumer: Any = None
        self._dead: DeadLetterPublisher | None = None
        self._pending: list[Any] = []
        # Next offset to commit per partition: one past the last record handled since the last
        # commit. Explicit offsets, not the consumer's positions: the position is past the whole
        # last poll, including records a failure left unprocessed.
        self._handled: dict[TopicPartition, int] = {}
        self._snapshots: SnapshotFetcher | None = None
        self.commit_interval_s = config.alerts.commit_interval_ms / 1000
        self._last_checkpoint = time.monotonic()
        self.published = 0
        self.restarts = 0  # in-place restarts after a transient Kafka failure
        self.assigned: list[Any] | None = None
        self.outage = Outage(log, "aggregator")

    def run(self) -> None:
        """Consume until `stop` is set. Commits only after a batch succeeded and on a clean stop;
        any exception leaves the failed batch uncommitted (the finally only closes). Transient Kafka
        failures restart the consumer in place (see the module docstring); others propagate."""
        self.outage = Outage(log, "aggregator")
        self._open_retrying()
        try:
            while not self.stop.is_set():
                try:
                    self.step()
                except (KafkaError, VigilError) as exc:
                    cause = exc.__cause__ if isinstance(exc, AggregatorError) and exc.__cause__ else exc
                    if not transient(cause):
                        raise
                    self.outage.failed(cause, "resuming from the last commit once it answers")
                    self._restart()
            try:
                self.checkpoint()
            except (KafkaError, VigilError) as exc:
                # Stopping while Kafka is down: nothing of the last batch is committed; the next start redoes it.
                log.warning("aggregator: final checkpoint failed (%s); the last batch will be processed again", exc)
        finally:
            self.close()

    def _open_retrying(self) -> None:
        """`open`, retried while Kafka does not answer (an outage must not stop the process)."""
        while True:
            try:
                self.open()
                return
            except (KafkaError, VigilError) as exc:
                if not transient(exc) or self.stop.is_set():
                    raise
                self.outage.failed(exc, "retrying")
                self.close()
                self.stop.wait(_RETRY_S)

    def _restart(self) -> None:
        """What a process restart would do, in place: forget the engine's state and every handled
        but uncommitted record, and reopen, so consumption resumes from the last commit and the
        engine restores from the alerts tail."""
        self.close()
        self._producer = self._consumer = self._snapshots = None
        self.engine = AlertEngine.from_config(self.config)
        self._pending, self._handled, self.assigned = [], {}, None
        self.restarts += 1
        self.stop.wait(_RETRY_S)
        if not self.stop.is_set():
            self._open_retrying()

    def open(self) -> None:
        cfg = self.config
        # No linger: alert events are few and each is urgent, and the checkpoint no longer flushes after
        # every poll (`commit_interval_ms`), so a lingering event would wait `kafka.producer.linger_ms`.
        self._producer = make_producer(cfg.kafka, "alerts", linger_ms=0)
        self._dead = DeadLetterPublisher(self._producer, cfg.topics.dead_letter.name, "alerts")
        fetches = gathering_fetches(cfg.kafka, cfg.alerts.fetch_wait_ms)
        self._consumer = make_consumer(cfg.kafka, "alerts", cfg.alerts.group_id, (), **fetches)
        subscribe(self._consumer, [cfg.topics.detections.name], listener=_Rebalance(self))
        if cfg.alerts.snapshot == "base64_jpeg":
            self._snapshots = SnapshotFetcher(cfg)
        log.info("aggregator: consuming %s as group %s", cfg.topics.detections.name, cfg.alerts.group_id)

    def step(self, timeout_ms: int = 500) -> None:
        """One poll: restore after an assignment, handle the batch, end idle cameras' alerts,
        then checkpoint. Raises (without committing) when anything fails."""
        try:
            batch = self._consumer.poll(timeout_ms=timeout_ms)
        except KafkaError as exc:
            if not transient(exc):
                raise
            # Nothing was returned, so nothing is lost: poll again once Kafka answers.
            self.outage.failed(exc, "polling again")
            self.stop.wait(_RETRY_S)
            return
        if self.assigned is not None:
            self.restore(self.assigned)
            self.assigned = None
        for tp, records in batch.items():
            for record in records:
                self.handle(record)
                self._handled[tp] = record.offset + 1
        for alert in self.engine.sweep(self.clock()):
            self.publish(alert)
        if (self._handled or self._pending) and time.monotonic() - self._last_checkpoint >= self.commit_interval_s:
            self.checkpoint()
        metrics.OPEN_CAMERAS.set(sum(p.rules.has_open() for p in self.engine.pipelines.values()))

    def close(self) -> None:
        """Close the clients; never commits (only `checkpoint` does, after a successful batch)."""
        try:
            if self._consumer is not None:
                self._consumer.close(autocommit=False)
        finally:
            try:
                if self._producer is not None:
                    self._producer.close(timeout=10)
            finally:
                if self._snapshots is not None:
                    self._snapshots.close()

    def handle(self, record: KafkaRecord) -> None:
        try:
            detections = DetectionsRecord.from_bytes(record.value)
        except ContractError as exc:
            metrics.RECORDS.labels("malformed").inc()
            assert self._dead is not None
            self._pending.append(self._dead.publish(record, f"malformed detections record: {exc}", kind="malformed"))
            return
        before = self.engine.counters.duplicates
        limited = sum(p.rules.counters.rate_limited for p in self.engine.pipelines.values())
        alerts = self.engine.process(detections, self.clock())
        metrics.RECORDS.labels("duplicate" if self.engine.counters.duplicates > before else "ok").inc()
        now_limited = sum(p.rules.counters.rate_limited for p in self.engine.pipelines.values())
        if now_limited > limited:
            metrics.RATE_LIMITED.inc(now_limited - limited)
        for (camera_id, reason), n in self.engine.take_removed().items():
            metrics.REMOVED.labels(camera_id, reason).inc(n)
        for alert in alerts:
            self.publish(alert)

    def publish(self, alert: AlertRecord) -> None:
        if self._snapshots is not None:
            alert = self._snapshots.attach(alert)
        future = self._producer.send(
            self.config.topics.alerts.name, key=alert.camera_id.encode(), value=alert.to_bytes()
        )
        self._pending.append(future)
        metrics.ALERTS.labels(alert.event).inc()
        self.published += 1
        log.info(
            "alert %s %s camera=%s rule=%s track=%d", alert.webhook_id, alert.event, alert.camera_id,
            alert.rule, alert.track_id,
        )  # fmt: skip

    def checkpoint(self) -> None:
        """Wait until every alert and dead letter so far is acknowledged, then commit the offsets of
        the detections records handled. A send that failed raises (nothing is committed); while
        Kafka is away this waits, re-checking `stop`, for as long as the sends have not expired."""
        if self._producer is None or self._consumer is None:
            return
        self._last_checkpoint = time.monotonic()
        try:
            while not all(future.is_done for future in self._pending):
                if self.stop.is_set() and self.outage.since is not None:
                    # Transient: run() restarts, sees `stop` and ends without committing this batch.
                    raise KafkaUnavailableError("stopping while Kafka does not acknowledge the alerts; not committing")
                try:
                    self._producer.flush(timeout=_FLUSH_SLICE_S)
                except KafkaError as exc:  # flush timed out: Kafka is away; the sends are still pending
                    self.outage.failed(exc, "waiting for the alerts to be acknowledged")
            for future in self._pending:
                future.get(timeout=0)
        except KafkaError as exc:
            raise AggregatorError(f"publishing alerts failed ({exc}); not committing, restart to retry") from exc
        self._pending = []
        handled, self._handled = self._handled, {}
        # A partition revoked since it was handled belongs to another member now: its records are
        # re-consumed there, and committing here could move that member's progress backwards.
        assignment = self._consumer.assignment()
        offsets = {tp: OffsetAndMetadata(offset, "", -1) for tp, offset in handled.items() if tp in assignment}
        if offsets:
            try:
                self._consumer.commit(offsets)
                self.outage.recovered()
            except (CommitFailedError, RebalanceInProgressError) as exc:
                # The group rebalanced under us: whoever owns these partitions now re-consumes the
                # records, and the restored claims plus deterministic ids de-duplicate the alerts.
                log.warning("aggregator: commit failed (%s); the records will be processed again", exc)
            except KafkaError as exc:
                if not transient(exc):
                    raise
                # Kafka went away between the acknowledgement and the commit: the alerts are
                # published; the next commit covers these offsets, or a restart redoes the records
                # (their alerts keep their ids through the restored claims).
                self.outage.failed(exc, "the next commit covers these records")
        metrics.OPEN_TRACKS.set(sum(len(p.tracker.confirmed) for p in self.engine.pipelines.values()))

    def restore(self, assigned: Any) -> None:
        tail = read_alert_tail(self.config, self.lookback_s)
        self.engine.restore(tail)
        log.info("aggregator: assigned %d partition(s); %d recent alert events read back", len(assigned), len(tail))
