"""The review service's Kafka readers.

* `AlertFollower`: consumer group `web.group_id` on the alerts topic; every event is merged into the
  store, and offsets are committed only after the rows are written (a crash re-reads, and the
  merge makes the re-read a no-op). Malformed records go to the dead-letter topic.
* `LiveFollower`: no group (every web process sees everything): all partitions of the frames and
  detections topics from their end, the status topic from a minute back (current camera states),
  and the dead-letter topic from an hour back (counts per reason).
* `rebuild`: re-reads the whole alerts topic into a fresh store file, keeping review state.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka.structs import OffsetAndMetadata, TopicPartition

from vigil.config import VigilConfig
from vigil.contracts import AlertRecord, DeadLetter, DetectionsRecord, FrameMeta
from vigil.errors import ContractError, VigilError
from vigil.health import Health
from vigil.kafka import DeadLetterPublisher, KafkaError, Outage, make_consumer, make_producer, transient
from vigil.status import StatusRecord
from web.live import LiveState
from web.store import AlertStore

log = logging.getLogger(__name__)
NS = 1_000_000_000
RETENTION_EVERY_S = 600.0


def keep_from_ns(config: VigilConfig, now_ns: int | None = None) -> int:
    return (time.time_ns() if now_ns is None else now_ns) - int(config.web.keep_days * 86_400 * NS)


# How long a follower waits before reconnecting after a transient Kafka failure.
_RETRY_S = 1.0


def ride_out_outages(
    what: str, stop: threading.Event, follow: Callable[[Outage], None], unhealthy: Callable[[str], None]
) -> None:
    """Runs `follow` again after a transient Kafka failure (the broker away, a request timed out), until
    `stop`: the web service stays up through an outage, not ready, and resumes from the committed offsets
    (rows are upserts, so records read twice change nothing). Anything else ends it."""
    outage = Outage(log, what)
    while not stop.is_set():
        try:
            follow(outage)
            return
        except (KafkaError, VigilError) as exc:
            if not transient(exc):
                raise
            outage.failed(exc, "following again once it answers")
            unhealthy(f"waiting for Kafka: {type(exc).__name__}: {exc}")
            stop.wait(_RETRY_S)


class AlertFollower:
    def __init__(
        self,
        config: VigilConfig,
        store: AlertStore,
        stop: threading.Event,
        on_changed: Callable[[list[str]], None],
        health: Health | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.stop = stop
        self.on_changed = on_changed
        self.health = health
        self.stored = 0
        self.dead_lettered = 0

    def _health(self, ok: bool, detail: str) -> None:
        if self.health is not None:
            self.health.set("alerts-consumer", ok, detail)

    def run(self) -> None:
        ride_out_outages("web: alerts consumer", self.stop, self._follow, lambda why: self._health(False, why))

    def _follow(self, outage: Outage) -> None:
        topic = self.config.topics.alerts.name
        # Large polls: one SQLite transaction and one commit per batch carry the store's ingest rate.
        consumer = make_consumer(
            self.config.kafka, "web-alerts", self.config.web.group_id, [topic], max_poll_records=1000
        )
        producer = make_producer(self.config.kafka, "web-dlq")
        dead = DeadLetterPublisher(producer, self.config.topics.dead_letter.name, "web")
        next_retention = 0.0
        self._health(True, f"storing alerts from {topic} as group {self.config.web.group_id}")
        try:
            while not self.stop.is_set():
                if time.monotonic() >= next_retention:
                    removed = self.store.delete_older_than(keep_from_ns(self.config))
                    if removed:
                        log.info("store: removed %d alerts older than web.keep_days", removed)
                    next_retention = time.monotonic() + RETENTION_EVERY_S
                batch = consumer.poll(timeout_ms=500)
                if batch:
                    self.handle(consumer, batch, dead)
                outage.recovered()
        except KafkaError as exc:
            self._health(False, f"alerts consumer stopped: {type(exc).__name__}: {exc}")
            raise
        finally:
            self._health(False, "stopped")
            try:
                producer.flush(timeout=10)
                producer.close(timeout=5)
            finally:
                consumer.close(autocommit=False)

    def handle(self, consumer: Any, batch: dict[Any, list[Any]], dead: DeadLetterPublisher) -> None:
        alerts: list[AlertRecord] = []
        letters = []
        offsets: dict[Any, OffsetAndMetadata] = {}
        for tp, records in batch.items():
            for record in records:
                try:
                    alerts.append(AlertRecord.from_bytes(record.value))
                except ContractError as exc:
                    letters.append(dead.publish(record, f"malformed alert record: {exc}"))
                offsets[tp] = OffsetAndMetadata(record.offset + 1, "", -1)
        changed = self.store.upsert(alerts, keep_from_ns(self.config))
        for future in letters:
            future.get(timeout=30)  # dead letters are acknowledged before their offsets are committed
        self.dead_lettered += len(letters)
        self.stored += len(changed)
        try:
            consumer.commit(offsets)
        except KafkaError as exc:
            # Rows are written; whoever reads these records again merges them to the same rows.
            log.warning("alerts consumer: commit failed (%s); the records will be merged again", exc)
        if changed:
            self.on_changed(changed)


class LiveFollower:
    def __init__(
        self, config: VigilConfig, live: LiveState, stop: threading.Event, health: Health | None = None
    ) -> None:
        self.config = config
        self.live = live
        self.stop = stop
        self.health = health

    def _assign(self, consumer: Any) -> None:
        topics = self.config.topics
        wanted: dict[str, float | None] = {
            topics.frames.name: None,
            topics.detections.name: None,
            topics.status.name: 60.0,
            topics.dead_letter.name: 3600.0,
        }
        partitions = []
        deadline = time.monotonic() + 30
        for topic in wanted:
            while not (found := consumer.partitions_for_topic(topic)):
                if time.monotonic() > deadline:
                    raise VigilError(f"topic {topic} has no partitions; create the topics with `vigil topics`")
                time.sleep(0.2)
            partitions += [TopicPartition(topic, p) for p in sorted(found)]
        consumer.assign(partitions)
        now_ms = int(time.time() * 1000)
        ends = consumer.end_offsets(partitions)
        lookback = {tp: now_ms - int(1000 * back) for tp in partitions if (back := wanted[tp.topic]) is not None}
        starts = consumer.offsets_for_times(lookback) if lookback else {}
        for tp in partitions:
            found = starts.get(tp)
            consumer.seek(tp, found.offset if found is not None else ends[tp])

    def run(self) -> None:
        def unhealthy(why: str) -> None:
            if self.health is not None:
                self.health.set("live-consumer", False, why)

        ride_out_outages("web: live consumer", self.stop, self._follow, unhealthy)

    def _follow(self, outage: Outage) -> None:
        consumer = make_consumer(self.config.kafka, "web-live", None, max_partition_fetch_bytes=2 * 1024 * 1024)
        topics = self.config.topics
        handlers: dict[str, Callable[[Any], None]] = {
            topics.frames.name: self._frame,
            topics.detections.name: self._detections,
            topics.status.name: self._status,
            topics.dead_letter.name: self._dead_letter,
        }
        try:
            self._assign(consumer)
            if self.health is not None:
                self.health.set("live-consumer", True, "following frames, detections, status")
            outage.recovered()
            while not self.stop.is_set():
                for tp, records in consumer.poll(timeout_ms=500).items():
                    handle = handlers[tp.topic]
                    for record in records:
                        try:
                            handle(record)
                        except ContractError as exc:
                            log.debug("live: skipped %s/%d/%d: %s", tp.topic, tp.partition, record.offset, exc)
        finally:
            if self.health is not None:
                self.health.set("live-consumer", False, "stopped")
            consumer.close(autocommit=False)

    def _frame(self, record: Any) -> None:
        self.live.on_frame(
            FrameMeta.from_headers(record.headers), bytes(record.value or b""), record.partition, record.offset
        )

    def _detections(self, record: Any) -> None:
        self.live.on_detections(DetectionsRecord.from_bytes(record.value))

    def _status(self, record: Any) -> None:
        self.live.on_status(StatusRecord.from_bytes(record.value))

    def _dead_letter(self, record: Any) -> None:
        letter = DeadLetter.from_record(record)
        self.live.on_dead_letter(letter.stage, letter.reason)


def rebuild(config: VigilConfig, progress: Callable[[str], None] = print) -> tuple[int, int]:
    """Re-read the alerts topic into a fresh store beside `web.store`, copy review state and
    sessions over, commit the group's offsets at the end read, and swap the file in. The service
    must not be running (the caller holds its lock). Returns (alerts stored, reviews kept)."""
    path = Path(config.web.store)
    fresh_path = path.with_name(path.name + ".rebuild")
    for leftover in (fresh_path, Path(f"{fresh_path}-wal"), Path(f"{fresh_path}-shm")):
        leftover.unlink(missing_ok=True)
    fresh = AlertStore(fresh_path).open()
    old = AlertStore(path).open()
    topic = config.topics.alerts.name
    consumer = make_consumer(config.kafka, "web-rebuild", config.web.group_id)
    try:
        reviews, _ = fresh.copy_state_from(old)
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not partitions:
            raise VigilError(f"topic {topic} does not exist; nothing to rebuild from")
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        cut = keep_from_ns(config)
        read = 0
        last_report = time.monotonic()
        while any(consumer.position(tp) < ends[tp] for tp in partitions):
            alerts = []
            for records in consumer.poll(timeout_ms=1000).values():
                for record in records:
                    try:
                        alerts.append(AlertRecord.from_bytes(record.value))
                    except ContractError:
                        continue  # the running service dead-lettered it already
            fresh.upsert(alerts, cut)
            read += len(alerts)
            if time.monotonic() - last_report > 2:
                last_report = time.monotonic()
                done = sum(consumer.position(tp) for tp in partitions)
                progress(f"rebuild: {done}/{sum(ends.values())} records read, {fresh.count()} alerts")
        consumer.commit({tp: OffsetAndMetadata(ends[tp], "", -1) for tp in partitions})
        stored = fresh.count()
    finally:
        consumer.close(autocommit=False)
        old.close()
        fresh.close()
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    os.replace(fresh_path, path)
    progress(f"rebuild: {stored} alerts from {read} events, {reviews} reviews kept; store {path} replaced")
    return stored, reviews
