"""Brokers the fault tests own (so they can kill them): a plain one per test (running, or not yet
started), a three-node cluster and a SASL_SSL broker per module. Each keeps its state, and so its pid file, under
<repo>/.state/test-kafka/, where `.ci/run` finds a broker a crashed session left behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from stack import free_port
from tls import SCRAM_USERS, Pki, make_pki

from vigil.broker import BrokerSecurity, EmbeddedBroker
from vigil.cluster import EmbeddedCluster
from vigil.config import EmbeddedBrokerConfig
from vigil.processes import port_free


def _state(repo_root: Path, kind: str, port: int) -> Path:
    path = repo_root / ".state" / "test-kafka" / f"{kind}-{port}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _cluster_ports(nodes: int) -> tuple[int, int]:
    """A client port p with p .. p + 2 * nodes - 1 all free: node k uses p + 2k and p + 1 + 2k."""
    while True:
        port = free_port()
        if port + 2 * nodes < 65535 and all(port_free(p) for p in range(port, port + 2 * nodes)):
            return port, port + 1


@pytest.fixture
def own_broker(repo_root: Path) -> Iterator[EmbeddedBroker]:
    port, controller = free_port(), free_port()
    state = _state(repo_root, "outage", port)
    broker = EmbeddedBroker(
        EmbeddedBrokerConfig(port=port, controller_port=controller, state_dir=str(state)),
        state_dir=state,
        progress=None,
    )
    broker.start(180)
    try:
        yield broker
    finally:
        broker.stop(30)


@pytest.fixture
def idle_broker(repo_root: Path) -> Iterator[EmbeddedBroker]:
    """A broker of the test's own that is not running yet: the test starts it when it wants to
    (its storage is formatted beforehand, so `start` costs only the JVM's start)."""
    port, controller = free_port(), free_port()
    state = _state(repo_root, "idle", port)
    broker = EmbeddedBroker(
        EmbeddedBrokerConfig(port=port, controller_port=controller, state_dir=str(state)),
        state_dir=state,
        progress=None,
    )
    broker.format()
    try:
        yield broker
    finally:
        broker.stop(30)


@pytest.fixture(scope="module")
def kafka_cluster(repo_root: Path) -> Iterator[EmbeddedCluster]:
    """Three brokers and a KRaft controller of their own, the layout production clusters use: the
    broker a test kills is never also the active controller (see docs/operations.md "Replication")."""
    port, controller = _cluster_ports(3)
    state = _state(repo_root, "cluster", port)
    config = EmbeddedBrokerConfig(
        port=port, controller_port=controller, state_dir=str(state), nodes=3, controllers=1, heap_mb=384
    )
    cluster = EmbeddedCluster(config, state_dir=state, progress=None)
    cluster.start(300)
    try:
        yield cluster
    finally:
        cluster.stop(30)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_broker(repo_root: Path, pki: Pki) -> Iterator[EmbeddedBroker]:
    port, controller = free_port(), free_port()
    state = _state(repo_root, "tls", port)
    broker = EmbeddedBroker(
        EmbeddedBrokerConfig(port=port, controller_port=controller, state_dir=str(state)),
        state_dir=state,
        progress=None,
        security=BrokerSecurity(pki.keystore_pem, pki.ca_pem, SCRAM_USERS, inter_broker_user="broker"),
    )
    broker.start(240)
    try:
        yield broker
    finally:
        broker.stop(30)
