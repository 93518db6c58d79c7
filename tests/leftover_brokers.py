"""Stop the embedded brokers a test session left running (`.ci/run` calls this after pytest).

Every broker the tests start keeps its state, pid file included, under <repo>/.state/test-kafka/
(the session broker of tests/conftest.py, the fault tests' own brokers and cluster nodes). Each is
ended by the pid its state dir recorded, and only after `EmbeddedBroker.stop` has checked that the
pid is still that broker (its command line names this state dir's server.properties): never by a
process-name pattern, so a CI run cannot touch another checkout's broker.

    python tests/leftover_brokers.py [.state/test-kafka]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vigil.broker import EmbeddedBroker
from vigil.config import EmbeddedBrokerConfig


def stop_leftovers(root: Path) -> list[Path]:
    stopped = []
    for pid_file in sorted(root.glob("**/broker.pid")):
        state = pid_file.parent
        broker = EmbeddedBroker(EmbeddedBrokerConfig(state_dir=str(state)), state_dir=state, progress=None)
        if broker.stop(30.0):
            stopped.append(state)
    return stopped


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / ".state" / "test-kafka")
    for state in stop_leftovers(root):
        print(f"stopped the test broker a crashed session left running ({state})")
