"""Riding out a broker that is not there: `wait_for_kafka` (every stage's start) and `Deliveries`
(the detect worker's sends), against a port nobody listens on and the real test broker."""

from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from kafka.future import Future

from vigil.config import KafkaConfig, VigilConfig
from vigil.delivery import Deliveries, DeliveryFailedError
from vigil.errors import KafkaSecurityError, KafkaUnavailableError
from vigil.health import Health
from vigil.kafka import ensure_topics, make_consumer, make_producer, wait_for_kafka


def dead_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again on return: nothing listens there


def test_waits_quietly_while_no_broker_listens_and_stops_on_request(caplog: pytest.LogCaptureFixture) -> None:
    port = dead_port()
    config = KafkaConfig(bootstrap_servers=[f"127.0.0.1:{port}"], bootstrap_timeout_ms=30_000)
    health, stop, calls = Health(), threading.Event(), []
    # The clock starts before the timer, and the lower bound is the stop itself, not 3.0 s: the timer's
    # own wait may end a hair early by time.monotonic() (CI once read 2.9995 s here).
    started = time.monotonic()
    threading.Timer(3.0, stop.set).start()
    with caplog.at_level(logging.WARNING, logger="vigil.kafka"):
        result = wait_for_kafka(config, lambda: calls.append(1), stop, what="ingest", health=health, retry_s=0.2)
    elapsed = time.monotonic() - started
    assert result is None and calls == []  # nothing accepted TCP, so no client was even built
    assert stop.is_set()  # it returned because it was asked to, not by giving up early
    assert 2.9 <= elapsed < 6.0  # stop is noticed within a round, not after bootstrap_timeout_ms
    report = health.ready()
    assert not report.ready
    detail = report.to_dict()["components"]["kafka"]["detail"]
    assert f"waiting for Kafka at 127.0.0.1:{port}" in detail and "no broker accepts connections" in detail
    lines = [r.getMessage() for r in caplog.records if "Kafka unavailable" in r.getMessage()]
    assert len(lines) == 1, lines  # one line for the outage, not one per round
    assert lines[0].startswith("ingest: Kafka unavailable")


def test_returns_what_connect_made_once_kafka_answers(
    vigil_config: VigilConfig, caplog: pytest.LogCaptureFixture
) -> None:
    attempts: list[int] = []

    def connect() -> list[str]:
        attempts.append(1)
        if len(attempts) == 1:  # the broker accepts TCP but is not ready yet, say
            raise KafkaUnavailableError("not ready yet")
        return ensure_topics(vigil_config.kafka, vigil_config.topics)

    health = Health()
    with caplog.at_level(logging.WARNING, logger="vigil.kafka"):
        created = wait_for_kafka(
            vigil_config.kafka, connect, threading.Event(), what="detect", health=health, retry_s=0.1
        )
    assert created is not None and vigil_config.topics.frames.name in created
    assert len(attempts) == 2
    assert "not ready yet" in health.ready().to_dict()["components"]["kafka"]["detail"]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("detect: Kafka unavailable" in m for m in messages) == 1
    assert sum("detect: Kafka answers again" in m for m in messages) == 1


def test_a_refused_login_is_not_waited_for(vigil_config: VigilConfig) -> None:
    def connect() -> None:
        raise KafkaSecurityError("the broker refused the SASL login of kafka.sasl_username 'x'")

    with pytest.raises(KafkaSecurityError, match="kafka.sasl_username"):
        wait_for_kafka(vigil_config.kafka, connect, threading.Event(), what="alerts")


class ScriptedProducer:
    """A producer whose sends fail as scripted (pure logic of `Deliveries`; the broker test is
    tests/faults/test_broker_down.py): the n-th send of a value fails with failures[value][n]."""

    def __init__(self, failures: dict[bytes, list[BaseException]], refusals: int = 0) -> None:
        self.failures = failures
        self.refusals = refusals  # the first sends raise, as a producer without metadata does after max_block_ms
        self.sent: list[bytes] = []
        self._open: list[tuple[Future, bytes]] = []

    def send(self, topic: str, *, key: Any = None, value: bytes = b"", headers: Any = None) -> Future:
        if self.refusals:
            self.refusals -= 1
            raise KafkaTimeoutError("Failed to update metadata after 60.0 secs.")
        future = Future()
        self.sent.append(value)
        self._open.append((future, value))
        return future

    def flush(self, timeout: float | None = None) -> None:
        for future, value in self._open:
            script = self.failures.get(value, [])
            if script:
                future.failure(script.pop(0))
            else:
                future.success(None)
        self._open = []


def test_deliveries_send_again_what_expired_until_acknowledged() -> None:
    producer = ScriptedProducer({b"b": [KafkaTimeoutError("expired"), KafkaTimeoutError("expired")]})
    deliveries = Deliveries(producer, "detect")
    for value in (b"a", b"b", b"c"):
        deliveries.send("t", key=b"k", value=value)
    assert deliveries.settle(threading.Event())
    assert producer.sent == [b"a", b"b", b"c", b"b", b"b"] and deliveries.resent == 2 and len(deliveries) == 0


def test_deliveries_send_again_what_the_producer_would_not_take() -> None:
    producer = ScriptedProducer({}, refusals=2)
    deliveries = Deliveries(producer, "detect")
    deliveries.send("t", value=b"a")  # refused: kept, not raised
    deliveries.send("t", value=b"b")  # refused too
    assert deliveries.settle(threading.Event())
    assert sorted(producer.sent) == [b"a", b"b"] and deliveries.resent == 2 and len(deliveries) == 0


def test_deliveries_give_up_only_when_stopping_during_an_outage() -> None:
    producer = ScriptedProducer({b"a": [KafkaTimeoutError("expired")] * 1000})
    deliveries = Deliveries(producer, "detect")
    deliveries.send("t", value=b"a")
    stop = threading.Event()
    stop.set()
    assert not deliveries.settle(stop)  # the caller must not commit


def test_deliveries_raise_on_a_permanent_refusal() -> None:
    producer = ScriptedProducer({b"big": [MessageSizeTooLargeError("too large")]})
    deliveries = Deliveries(producer, "detect")
    deliveries.send("t", value=b"big")
    with pytest.raises(DeliveryFailedError, match="MessageSizeTooLargeError"):
        deliveries.settle(threading.Event())


def test_deliveries_on_the_real_broker(vigil_config: VigilConfig) -> None:
    ensure_topics(vigil_config.kafka, vigil_config.topics)
    producer = make_producer(vigil_config.kafka, "test")
    deliveries = Deliveries(producer, "detect")
    for n in range(20):
        deliveries.send(vigil_config.topics.detections.name, key=b"cam", value=b"%d" % n)
    assert deliveries.settle(threading.Event()) and deliveries.resent == 0
    producer.close()
    consumer = make_consumer(vigil_config.kafka, "test", "reader", [vigil_config.topics.detections.name])
    values: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(values) < 20 and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            values.extend(r.value for r in batch)
    consumer.close()
    assert values == [b"%d" % n for n in range(20)]
