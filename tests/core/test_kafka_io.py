"""kafka-python's per-record costs vigil turns off (vigil/kafka_io.py): the selector's lookups without a repr,
and no client metrics, on the real broker."""

from __future__ import annotations

import selectors
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kafka.admin import NewTopic
from kafka.metrics.stats.sensor import Sensor

from vigil.config import VigilConfig
from vigil.kafka import make_admin, make_consumer, make_producer
from vigil.kafka_io import QuietSelector


class _Watched:
    """A file object that counts how often it is formatted."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.formatted = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def __repr__(self) -> str:
        self.formatted += 1
        return "<watched>"


@pytest.fixture
def sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def test_quiet_selector_answers_like_the_standard_one_without_formatting(
    sockets: tuple[socket.socket, socket.socket],
) -> None:
    watched = _Watched(sockets[0])
    selector = QuietSelector()
    standard = selectors.DefaultSelector()
    try:
        with pytest.raises(KeyError) as missing:
            selector.get_key(watched)
        assert watched.formatted == 0  # the standard selector formats it twice
        assert missing.value.args == (watched,)  # the error still names what was not registered

        with pytest.raises(KeyError):
            standard.get_key(watched)
        assert watched.formatted == 2  # what QuietSelector saves: kafka-python asks this for every I/O wait

        selector.register(watched, selectors.EVENT_READ, "reader")
        key = selector.get_key(watched)
        assert (key.fileobj, key.events, key.data) == (watched, selectors.EVENT_READ, "reader")
        assert selector.get_key(sockets[0].fileno()) is key  # by descriptor too, as the standard one
        selector.unregister(watched)
        with pytest.raises(KeyError):
            selector.get_key(watched)
    finally:
        selector.close()
        standard.close()
    with pytest.raises(RuntimeError, match="closed"):  # a closed selector refuses as the standard one does
        selector.get_key(watched)


def test_clients_run_without_metrics_on_the_quiet_selector(
    vigil_config: VigilConfig, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorded: list[str] = []
    original = Sensor.record

    def record(self: Sensor, *args: Any, **kwargs: Any) -> None:
        recorded.append(self.name)
        original(self, *args, **kwargs)

    monkeypatch.setattr(Sensor, "record", record)
    topic = f"{unique_name}-io"
    admin = make_admin(vigil_config.kafka)
    try:
        admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        admin.close()
    recorded.clear()  # kafka-python's admin client has no metrics switch (and is not on the records' path)
    producer = make_producer(vigil_config.kafka, "test")
    consumer = make_consumer(vigil_config.kafka, "test", f"{topic}-group", [topic])
    try:
        for client in (producer, consumer):
            assert client.config["metrics_enabled"] is False
            assert client.config["selector"] is QuietSelector
        sent = [f"frame-{i}".encode() for i in range(20)]
        for i, value in enumerate(sent):
            producer.send(topic, key=b"cam%d" % (i % 2), value=value)
        producer.flush(30)
        received: list[bytes] = []
        deadline = time.monotonic() + 60
        while len(received) < len(sent) and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=200).values():
                received.extend(r.value for r in records)
        assert sorted(received) == sorted(sent)
    finally:
        consumer.close()
        producer.close()
    # With metrics on, a produce and its fetch record about 35 sensors per record.
    assert recorded == [], sorted(set(recorded))
