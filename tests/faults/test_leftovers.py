"""`.ci/run`'s clean-up (tests/leftover_brokers.py) ends a broker only by the pid its state dir
recorded and only while that pid is still that broker: a recycled pid or a process that merely
looks like a test broker is left alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from leftover_brokers import stop_leftovers


def lookalike(properties: Path) -> subprocess.Popen[bytes]:
    """A process whose command line reads like a Kafka broker's (`kafka.Kafka <server.properties>`)."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "kafka.Kafka", str(properties)])


def test_only_the_recorded_broker_is_stopped(tmp_path: Path) -> None:
    root = tmp_path / "test-kafka"
    ours, recycled = root / "39092", root / "39094"
    for state in (ours, recycled):
        state.mkdir(parents=True)
    broker = lookalike(ours / "server.properties")  # stands in for the JVM of `ours`
    stranger = lookalike(tmp_path / "other-checkout" / "server.properties")  # same look, not recorded anywhere
    impostor = lookalike(tmp_path / "elsewhere" / "server.properties")
    (ours / "broker.pid").write_text(f"{broker.pid}\n")
    (recycled / "broker.pid").write_text(f"{impostor.pid}\n")  # the pid now belongs to something else
    try:
        stopped = stop_leftovers(root)
        assert stopped == [ours]
        assert broker.wait(timeout=30) is not None
        assert stranger.poll() is None and impostor.poll() is None
        assert not (ours / "broker.pid").exists()
    finally:
        for process in (broker, stranger, impostor):
            process.kill()
            process.wait()
