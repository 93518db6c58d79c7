"""Fixtures shared by every stage's tests: the real Kafka broker, unique names, a per-test config.

`kafka_bootstrap` uses $VIGIL_TEST_BOOTSTRAP (host:port of a running broker) when set; otherwise
it starts vigil's embedded Apache Kafka broker for the session on $VIGIL_TEST_BROKER_PORT
(default 39092, controller on the next port) with a fresh state dir under <repo>/.state/test-kafka,
and stops it at the end. Nothing here imports a stage.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from vigil.broker import EmbeddedBroker
from vigil.config import EmbeddedBrokerConfig, VigilConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
# Concurrent pytest sessions (several people or agents on one machine) each need their own broker:
# a session that finds the default port pair locked moves on to the next pair.
_PORT_ATTEMPTS = 8


SKIP_CLUSTER_REASON = (
    "a multi-broker or TLS test: skipped by --skip-cluster / VIGIL_SKIP_CLUSTER=1 (they always run when CI=true)"
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--skip-cluster",
        action="store_true",
        help="skip the tests marked `cluster` (three-node cluster, SASL_SSL broker); ignored when CI=true",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """One flag skips the slow multi-broker tests locally, each with the reason shown by -ra; CI
    (CI=true) runs them whatever the flag says."""
    wanted = config.getoption("--skip-cluster") or os.environ.get("VIGIL_SKIP_CLUSTER") == "1"
    if not wanted:
        return
    if os.environ.get("CI") == "true":
        print("--skip-cluster / VIGIL_SKIP_CLUSTER ignored: CI=true runs every test")
        return
    skip = pytest.mark.skip(reason=SKIP_CLUSTER_REASON)
    for item in items:
        if "cluster" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data(repo_root: Path) -> Path:
    """<repo>/../shared/data: models and footage shared read-only between checkouts (CI lays it beside the clone)."""
    path = repo_root.parent / "shared" / "data"
    if not (path / "footage").is_dir():
        pytest.fail(f"shared test data not found at {path}: place the shared/ folder beside the repository clone")
    return path


def _answers(bootstrap: str, timeout_s: float) -> str | None:
    """None if a metadata request to `bootstrap` answers within timeout_s, else the last error."""
    deadline = time.monotonic() + timeout_s
    problem = "no attempt"
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, bootstrap_timeout_ms=2000, client_id="vigil-tests")
        except KafkaError as exc:
            problem = str(exc)
            time.sleep(0.5)
            continue
        try:
            admin.describe_cluster()
            return None
        except KafkaError as exc:
            problem = str(exc)
        finally:
            admin.close()
    return problem


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _claim_broker(base_port: int, root: Path) -> tuple[EmbeddedBroker, IO[str]]:
    """A broker on the first port pair (base_port + 2k, +1) that no other test session holds (a
    lock file) and no other process listens on; a broker left by a killed session is stopped."""
    root.mkdir(parents=True, exist_ok=True)
    for attempt in range(_PORT_ATTEMPTS):
        port = base_port + 2 * attempt
        handle = open(root / f"{port}.lock", "w")  # held open (locked) for the whole session
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        state_dir = root / str(port)
        broker = EmbeddedBroker(
            EmbeddedBrokerConfig(port=port, controller_port=port + 1, state_dir=str(state_dir)), state_dir=state_dir
        )
        broker.stop(30.0)  # left over from a session that was killed before its teardown
        if _listening(port) or _listening(port + 1):
            handle.close()  # someone else's process: leave it alone, try the next pair
            continue
        shutil.rmtree(state_dir, ignore_errors=True)
        return broker, handle
    pytest.fail(
        f"ports {base_port}..{base_port + 2 * _PORT_ATTEMPTS - 1} are all taken by other test sessions or processes; "
        "set VIGIL_TEST_BROKER_PORT to a free port, or VIGIL_TEST_BOOTSTRAP=host:port to use a running broker"
    )


@pytest.fixture(scope="session")
def kafka_bootstrap(repo_root: Path) -> Iterator[str]:
    """host:port of a real Apache Kafka broker for the whole test session."""
    given = os.environ.get("VIGIL_TEST_BOOTSTRAP")
    if given:
        problem = _answers(given, 15.0)
        if problem is not None:
            pytest.fail(
                f"VIGIL_TEST_BOOTSTRAP={given} does not answer ({problem}); start that broker, or unset the "
                "variable so the tests start the embedded broker themselves"
            )
        yield given
        return
    base_port = int(os.environ.get("VIGIL_TEST_BROKER_PORT", "39092"))
    broker, lock = _claim_broker(base_port, repo_root / ".state" / "test-kafka")
    try:
        yield broker.start(180.0)
    finally:
        broker.stop(30.0)
        lock.close()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A fresh name per test, valid as a topic, group or camera id: '<test-name>-<8 hex>'."""
    stem = re.sub(r"[^A-Za-z0-9]+", "-", request.node.name).strip("-")[:30].strip("-") or "t"
    return f"{stem}-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def vigil_config(kafka_bootstrap: str, unique_name: str) -> VigilConfig:
    """Defaults, but on the test broker, with this test's own topics and consumer groups.
    Topics are not created here: call `vigil.kafka.ensure_topics` as the stages do."""
    return VigilConfig.model_validate(
        {
            "kafka": {"bootstrap_servers": [kafka_bootstrap], "bootstrap_timeout_ms": 5000},
            "topics": {
                "frames": {"name": f"{unique_name}.frames", "partitions": 3},
                "detections": {"name": f"{unique_name}.detections", "partitions": 3},
                "alerts": {"name": f"{unique_name}.alerts", "partitions": 1},
                "dead_letter": {"name": f"{unique_name}.dead-letter", "partitions": 1},
                "status": {"name": f"{unique_name}.status", "partitions": 1},
            },
            "detect": {"group_id": f"{unique_name}-detect"},
            "alerts": {"group_id": f"{unique_name}-alerts"},
            # Tests run many processes side by side: let each metrics server take any free port.
            "metrics": {"port": 0},
        }
    )
