"""Heartbeats on the status topic: the record's contract, rates between beats, a real round trip."""

from __future__ import annotations

import time
from typing import Any

import pytest

from vigil.config import VigilConfig
from vigil.errors import ContractError
from vigil.health import Health
from vigil.heartbeat import Heartbeat
from vigil.kafka import ensure_topics, make_consumer, make_producer
from vigil.status import CameraState, StatusRecord


class _Future:
    def add_callback(self, fn: Any) -> None:
        fn(None)

    def add_errback(self, fn: Any) -> None:
        pass


class _Producer:
    """Records sends; the heartbeat's logic needs nothing else of a producer."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    def send(self, topic: str, key: bytes, value: bytes) -> _Future:
        self.sent.append((topic, key, value))
        return _Future()


def test_status_record_round_trip_and_rates() -> None:
    clock = iter([0, 10 * 10**9, 12 * 10**9]).__next__
    totals = iter([{"frames": 0.0}, {"frames": 50.0}]).__next__
    health = Health()
    health.set("kafka", True, "connected")
    camera = CameraState("door", "reconnecting", since_ns=5, attempt=3, detail="connection refused")
    producer = _Producer()
    beat = Heartbeat(producer, "t.status", "ingest", health, totals=totals, cameras=lambda: [camera], clock=clock)
    beat.beat()
    beat.beat()
    first, second = (StatusRecord.from_bytes(v) for _, _, v in producer.sent)
    assert first.stats == {"frames": 0.0}
    assert second.stats["frames_per_s"] == pytest.approx(50 / 2)
    assert second.ready and second.components[0].name == "kafka"
    assert second.cameras == (camera,)
    assert producer.sent[0][1] == beat.process.encode() and beat.process.startswith("ingest@")


@pytest.mark.parametrize(
    ("patch", "words"),
    [
        ({"stage": "nope"}, "field 'stage'"),
        ({"interval_s": 0}, "interval_s"),
        ({"stats": {"x": "1"}}, "'stats'"),
        ({"cameras": [{"camera": "a", "state": "asleep", "since_ns": 1, "fps": 0}]}, "cameras\\[\\].state"),
    ],
)
def test_malformed_status_is_refused(patch: dict[str, Any], words: str) -> None:
    import json

    good = StatusRecord("p", "detect", "h", 1, 0, 1, 5.0, True).to_json()
    with pytest.raises(ContractError, match=words):
        StatusRecord.from_bytes(json.dumps({**good, **patch}).encode())


@pytest.mark.broker
def test_heartbeat_reaches_the_status_topic(vigil_config: VigilConfig) -> None:
    ensure_topics(vigil_config.kafka, [vigil_config.topics.status])
    producer = make_producer(vigil_config.kafka, "test")
    health = Health()
    health.set("model", True, "loaded")
    beat = Heartbeat(producer, vigil_config.topics.status.name, "detect", health, interval_s=0.2).start()
    time.sleep(0.5)
    beat.stop()
    producer.flush(10)
    producer.close()
    consumer = make_consumer(vigil_config.kafka, "test", None)
    from kafka import TopicPartition

    tp = TopicPartition(vigil_config.topics.status.name, 0)
    consumer.assign([tp])
    consumer.seek_to_beginning(tp)
    records: list[StatusRecord] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (not records or records[-1].ready):
        for batch in consumer.poll(timeout_ms=500).values():
            records += [StatusRecord.from_bytes(r.value) for r in batch]
    consumer.close()
    assert len(records) >= 2 and records[0].ready
    assert not records[-1].ready and "stopping" in [c.name for c in records[-1].components if not c.ok]
