"""A broker for a benchmark: the one given, else the embedded Apache Kafka broker on spare ports in
a temporary folder, stopped afterwards (so `make bench` needs nothing running)."""

from __future__ import annotations

import socket
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vigil.broker import EmbeddedBroker
from vigil.config import EmbeddedBrokerConfig


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
