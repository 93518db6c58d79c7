"""A broker for a benchmark: the one given, else the embedded Apache Kafka broker on spare ports in
a temporary folder, stopped afterwards (so `make bench` needs nothing running); and waiting for a bench
consumer's partitions."""

from __future__ import annotations

import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vigil.broker import EmbeddedBroker
from vigil.config import EmbeddedBrokerConfig

if TYPE_CHECKING:
    from kafka import KafkaConsumer


@contextmanager
def broker_for_bench(bootstrap: str | None) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as state:
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", 0))
            b.bind(("127.0.0.1", 0))
            port, controller = a.getsockname()[1], b.getsockname()[1]
        broker = EmbeddedBroker(
            EmbeddedBrokerConfig(port=port, controller_port=controller, state_dir=state), state_dir=Path(state)
        )
        address = broker.start(180)
        try:
            yield address
        finally:
            broker.stop(30)


def wait_for_assignment(consumer: KafkaConsumer, topic: str, timeout_s: float = 60.0) -> None:
    """Poll until the group gives `consumer` its partitions; a bench that never gets them stops, naming why."""
    deadline = time.monotonic() + timeout_s
    while not consumer.assignment():
        if time.monotonic() > deadline:
            raise SystemExit(f"the consumer was never assigned {topic} in {timeout_s:.0f} s")
        consumer.poll(timeout_ms=100)
