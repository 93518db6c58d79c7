"""The aggregator's commit protocol under failure (real broker, the aggregator in-process): nothing
a failure left unprocessed or unacknowledged is committed, a refused commit is not fatal, and a
camera that goes silent still gets its open alerts ended."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest
from alerts_helpers import IN_DOOR, NS, T0, alerts_config, camera, record
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic

from alerts.aggregator import Aggregator, AggregatorError
from vigil.config import VigilConfig
from vigil.contracts import AlertRecord, DetectionsRecord
from vigil.errors import VigilError
from vigil.kafka import KafkaError, ensure_topics

RECORDS = 20


def pipeline_config(base: VigilConfig, **consumer: int) -> VigilConfig:
    """One detections partition (so "committed" is one number), one camera with the door rule."""
    topics = base.topics.model_copy(update={"detections": base.topics.detections.model_copy(update={"partitions": 1})})
    alerts = alerts_config(min_frames=3, end_after_s=1.0).model_copy(update={"group_id": base.alerts.group_id})
    kafka = base.kafka
    if consumer:
        kafka = kafka.model_copy(update={"consumer": kafka.consumer.model_copy(update=consumer)})
    return base.model_copy(update={"topics": topics, "alerts": alerts, "cameras": [camera()], "kafka": kafka})


def send_person(config: VigilConfig, frames: int = RECORDS) -> None:
    """A person standing in the door zone: `started` at the fourth frame, open to the end."""
    producer = KafkaProducer(bootstrap_servers=config.kafka.bootstrap_servers)
    for i in range(frames):
        producer.send(config.topics.detections.name, key=b"cam1", value=record(i, [IN_DOOR]).to_bytes())
    producer.flush()
    producer.close()


def committed(config: VigilConfig) -> int | None:
    consumer = KafkaConsumer(bootstrap_servers=config.kafka.bootstrap_servers, group_id=config.alerts.group_id)
    try:
        value: int | None = consumer.committed(TopicPartition(config.topics.detections.name, 0))
        return value
    finally:
        consumer.close()


def published(config: VigilConfig) -> list[AlertRecord]:
    consumer = KafkaConsumer(
        config.topics.alerts.name,
        bootstrap_servers=config.kafka.bootstrap_servers,
        auto_offset_reset="earliest",
        consumer_timeout_ms=3000,
    )
    try:
        return [AlertRecord.from_bytes(r.value) for r in consumer]
    finally:
        consumer.close()


def wrap_process(aggregator: Aggregator, before: Callable[[int], None]) -> None:
    """Fault injection: call `before(n)` ahead of the engine's n-th record (1-based)."""
    real = aggregator.engine.process
    calls = 0

    def process(rec: DetectionsRecord, now_ns: int) -> list[AlertRecord]:
        nonlocal calls
        calls += 1
        before(calls)
        return real(rec, now_ns)

    aggregator.engine.process = process  # type: ignore[method-assign]


@pytest.mark.broker
@pytest.mark.timeout(90)
def test_engine_failure_mid_batch_commits_none_of_it(vigil_config: VigilConfig) -> None:
    config = pipeline_config(vigil_config)
    ensure_topics(config.kafka, config.topics)
    send_person(config)
    aggregator = Aggregator(config, threading.Event())

    def fail_at_tenth(n: int) -> None:
        if n == 10:
            raise RuntimeError("injected engine failure")

    wrap_process(aggregator, fail_at_tenth)
    with pytest.raises(RuntimeError, match="injected engine failure"):
        aggregator.run()
    # Records 0..8 may have been committed by an earlier, successful batch; record 9 (the failure)
    # and everything after it must be consumed again.
    assert (committed(config) or 0) <= 9


@pytest.mark.broker
@pytest.mark.timeout(90)
def test_failed_alert_send_commits_nothing(vigil_config: VigilConfig) -> None:
    config = pipeline_config(vigil_config)
    # The broker refuses every alert event: the alerts topic takes no record over 100 bytes.
    admin = KafkaAdminClient(bootstrap_servers=config.kafka.bootstrap_servers)
    try:
        admin.create_topics([NewTopic(config.topics.alerts.name, 1, 1, topic_configs={"max.message.bytes": "100"})])
    finally:
        admin.close()
    ensure_topics(config.kafka, config.topics)
    send_person(config)
    with pytest.raises(AggregatorError, match="publishing alerts failed"):
        Aggregator(config, threading.Event()).run()
    assert committed(config) is None


@pytest.mark.broker
@pytest.mark.timeout(120)
def test_commit_refused_after_leaving_the_group_is_not_fatal(
    vigil_config: VigilConfig, caplog: pytest.LogCaptureFixture
) -> None:
    """A batch slower than max_poll_interval gets the aggregator out of its group, so the commit
    after it is refused: the aggregator carries on, re-consumes, and commits everything."""
    config = pipeline_config(
        vigil_config, session_timeout_ms=6000, heartbeat_interval_ms=300, max_poll_interval_ms=1500
    )
    ensure_topics(config.kafka, config.topics)
    send_person(config)
    stop = threading.Event()
    aggregator = Aggregator(config, stop)

    def stall_once(n: int) -> None:
        if n == 5:
            time.sleep(4.0)

    wrap_process(aggregator, stall_once)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            aggregator.run()
        except (KafkaError, VigilError) as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    with caplog.at_level(logging.WARNING, logger="alerts.aggregator"):
        thread.start()
        deadline = time.monotonic() + 60
        while committed(config) != RECORDS and time.monotonic() < deadline and thread.is_alive():
            time.sleep(0.5)
        stop.set()
        thread.join(timeout=30)
    assert not errors, errors
    assert committed(config) == RECORDS
    assert "commit failed" in caplog.text
    events = published(config)
    assert {a.event for a in events} == {"started"} and len({a.webhook_id for a in events}) == 1


@pytest.mark.broker
@pytest.mark.timeout(90)
def test_silent_camera_alert_ends_through_the_alerts_topic(vigil_config: VigilConfig) -> None:
    config = pipeline_config(vigil_config)
    ensure_topics(config.kafka, config.topics)
    frames = 8
    send_person(config, frames)
    wall = [T0 + 100 * NS]  # injected wall clock: only the test moves it
    stop = threading.Event()
    aggregator = Aggregator(config, stop, clock=lambda: wall[0])
    thread = threading.Thread(target=aggregator.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while (aggregator.engine.counters.records < frames or aggregator.published < 1) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert aggregator.published == 1  # started; the camera then falls silent
        wall[0] += int(2.9 * NS)  # end_after_s 1.0 + 2 s grace not yet passed
        time.sleep(1.5)
        assert aggregator.published == 1
        wall[0] += int(0.2 * NS)
        deadline = time.monotonic() + 10
        while aggregator.published < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=30)
    events = published(config)
    assert [a.event for a in events] == ["started", "ended"]
    assert events[0].alert_id == events[1].alert_id
    assert events[1].last_seen_ns == record(frames - 1, [IN_DOOR]).capture_ns  # the last real sighting
    assert committed(config) == frames


@pytest.mark.broker
@pytest.mark.timeout(90)
def test_commits_at_most_every_commit_interval_and_on_stop(vigil_config: VigilConfig) -> None:
    """Offsets are committed once per `alerts.commit_interval_ms`, not after every poll, yet the
    alert is published at once; a clean stop commits what is left."""
    base = pipeline_config(vigil_config)
    config = base.model_copy(update={"alerts": base.alerts.model_copy(update={"commit_interval_ms": 60_000})})
    ensure_topics(config.kafka, config.topics)
    send_person(config)
    stop = threading.Event()
    aggregator = Aggregator(config, stop)
    thread = threading.Thread(target=aggregator.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while aggregator.engine.counters.records < RECORDS and time.monotonic() < deadline:
            time.sleep(0.05)
        assert aggregator.engine.counters.records == RECORDS
        # Sent without waiting for a checkpoint (then ended by the idle sweep: the records' capture times are old).
        assert [a.event for a in published(config)][:1] == ["started"]
        assert committed(config) is None  # every record handled, none committed inside the interval
    finally:
        stop.set()
        thread.join(timeout=30)
    assert committed(config) == RECORDS
