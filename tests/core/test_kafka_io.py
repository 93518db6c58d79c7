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
        assert watched.formatted >= 1  # what QuietSelector saves: kafka-python asks this for every I/O wait

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


def _outcome(selector: selectors.BaseSelector, fileobj: Any) -> str:
    try:
        key = selector.get_key(fileobj)
    except (KeyError, ValueError, RuntimeError) as exc:
        return type(exc).__name__
    return f"key of {'it' if key.fileobj is fileobj else key.fileobj!r}: {key.data}"


@pytest.mark.parametrize("case", ["negative fd", "no fileno", "closed while registered", "closed, never registered"])
def test_quiet_selector_fails_as_the_standard_one(case: str) -> None:
    """kafka-python unregisters sockets that may be closed by then: the answer must be the standard one's."""
    outcomes = []
    for selector in (QuietSelector(), selectors.DefaultSelector()):
        registered, other = socket.socketpair()
        try:
            selector.register(registered, selectors.EVENT_READ, "reader")
            fileobj: Any = {"negative fd": -1, "no fileno": "not a file"}.get(case, registered)
            if case == "closed, never registered":
                fileobj = other
            if case.startswith("closed"):
                fileobj.close()
            outcomes.append(_outcome(selector, fileobj))
        finally:
            selector.close()
            registered.close()
            other.close()
    assert outcomes[0] == outcomes[1], outcomes
    # A closed socket still registered is found by its object (`unregister_event` relies on it); the rest refuse.
    expected = "key" if case == "closed while registered" else "ValueError"
    assert outcomes[0].split()[0] == expected, outcomes


def test_clients_run_without_metrics_on_the_quiet_selector(vigil_config: VigilConfig, unique_name: str) -> None:
    topic = f"{unique_name}-io"
    admin = make_admin(vigil_config.kafka)
    try:
        admin.create_topics([NewTopic(topic, 2, 1)])
    finally:
        admin.close()
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
        # No registry at all, so no sensor is recorded (with metrics on: about 35 a record between the two).
        assert producer.metrics() is None
        assert consumer.metrics() is None
    finally:
        consumer.close()
        producer.close()
