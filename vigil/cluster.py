"""A local multi-node Apache Kafka cluster: N embedded KRaft nodes on loopback, one quorum, and
`vigil broker start|stop|status` for one node or several.

Users outgrow one broker first; this is how to try replication on one machine before running a
real cluster: `vigil broker start --nodes 3` (or `kafka.embedded.nodes: 3`), then topics with
`topics.replication_factor: 3` and `min_insync_replicas: 2` survive the loss of any one node.
Node k (from 0) keeps its state in `<state_dir>/node-<k+1>` and listens on `port + 2k` (clients)
and `controller_port + 2k` (KRaft); every node is formatted with the cluster id kept in
`<state_dir>/cluster.id`.

By default every node is broker and controller (combined mode). With `kafka.embedded.controllers:
C` the cluster runs C controllers of their own (node ids N+1 .., state in `controller-<j+1>`,
listening on `controller_port + 2j`) and the N nodes are brokers only, as production clusters
are laid out: losing a broker then costs the session timeout, never a controller election too.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from vigil.broker import BrokerSecurity, BrokerStatus, EmbeddedBroker, NodeRole
from vigil.config import EmbeddedBrokerConfig
from vigil.errors import BrokerError
from vigil.kafka_jars import Progress, new_cluster_id, stderr_progress


@dataclass(frozen=True)
class ClusterStatus:
    nodes: list[BrokerStatus]
    roles: list[str]  # per node: "broker,controller", "broker" or "controller"

    @property
    def running(self) -> bool:
        return all(n.running for n in self.nodes)

    def describe(self) -> str:
        return "\n".join(
            f"node {i + 1} ({role.replace(',', ' + ')}): {n.describe()}"
            for i, (n, role) in enumerate(zip(self.nodes, self.roles, strict=True))
        )


class EmbeddedCluster:
    """`config.nodes` embedded nodes as one KRaft cluster. Nothing is read or written until a
    method is called."""

    def __init__(
        self,
        config: EmbeddedBrokerConfig,
        *,
        state_dir: Path | None = None,
        cache_dir: Path | None = None,
        deploy_dir: Path | None = None,
        progress: Progress | None = stderr_progress,
        security: BrokerSecurity | None = None,
    ) -> None:
        self.config = config
        self.state_dir = (state_dir or Path(config.state_dir)).absolute()
        self._progress = progress
        ports = config.node_ports()
        # Combined mode: every node is a voter. With controllers of their own, those are the voters
        # (node ids after the brokers') and a broker's loss never costs a controller election.
        apart = [(len(ports) + j + 1, port) for j, port in enumerate(config.controller_ports())]
        voter_ports = apart or [(k + 1, controller) for k, (_, controller) in enumerate(ports)]
        voters = ",".join(f"{node_id}@{config.host}:{port}" for node_id, port in voter_ports)

        def node(node_id: int, port: int, controller: int, roles: str, folder: str) -> EmbeddedBroker:
            return EmbeddedBroker(
                config.model_copy(update={"port": port, "controller_port": controller, "nodes": 1, "controllers": 0}),
                state_dir=self.state_dir / folder,
                cache_dir=cache_dir,
                deploy_dir=deploy_dir,
                progress=progress,
                security=security,
                role=NodeRole(
                    node_id, voters, None, len(ports), config.session_timeout_ms, config.controller_timeout_ms, roles
                ),
            )

        brokers = "broker" if apart else "broker,controller"
        self.brokers = [node(k + 1, p, c, brokers, f"node-{k + 1}") for k, (p, c) in enumerate(ports)]
        self.controllers = [node(i, c, c, "controller", f"controller-{i - len(ports)}") for i, c in apart]
        self.nodes = self.brokers + self.controllers

    @property
    def bootstrap(self) -> str:
        return ",".join(self.servers)

    @property
    def servers(self) -> list[str]:
        return [node.bootstrap for node in self.brokers]

    def node(self, node_id: int) -> EmbeddedBroker:
        return self.nodes[node_id - 1]

    def _cluster_id(self) -> str:
        """The id every node is formatted with: kept beside the nodes, so a node whose storage was
        deleted rejoins the same cluster."""
        path = self.state_dir / "cluster.id"
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            cluster_id = new_cluster_id()
            path.write_text(cluster_id + "\n")
            return cluster_id

    def start(self, timeout_s: float = 120.0) -> str:
        """Start every node that is not running (all before waiting: none answers without a
        quorum), then wait until each answers and the cluster lists them all unfenced."""
        deadline = time.monotonic() + timeout_s
        cluster_id = self._cluster_id()
        for node in self.nodes:
            node.role = replace(node.role, cluster_id=cluster_id)
            node.launch()
        try:
            for node in self.nodes:
                node.wait_ready(max(1.0, deadline - time.monotonic()))
            self.wait_all_unfenced(max(1.0, deadline - time.monotonic()))
        except BrokerError:
            self.stop(10.0)
            raise
        return self.bootstrap

    def start_node(self, node_id: int, timeout_s: float = 120.0) -> None:
        """(Re)start one node, e.g. after it was killed, and wait until the cluster has it back."""
        deadline = time.monotonic() + timeout_s
        node = self.node(node_id)
        node.role = replace(node.role, cluster_id=self._cluster_id())
        node._process = None  # a killed child: launch() must not mistake the old handle for it
        node.launch()
        node.wait_ready(max(1.0, deadline - time.monotonic()))
        self.wait_all_unfenced(max(1.0, deadline - time.monotonic()))

    def active_controller(self) -> int | None:
        """The node id of the active KRaft controller as the nodes' quorum-state files last recorded
        it (written on every election), or None when none is known."""
        for node in self.nodes:
            try:
                state = json.loads((node.data_dir / "__cluster_metadata-0" / "quorum-state").read_text())
            except (OSError, ValueError):
                continue
            leader = state.get("leaderId", -1) if isinstance(state, dict) else -1
            if isinstance(leader, int) and leader >= 0:
                return leader
        return None

    def unfenced(self) -> set[int]:
        """Node ids the cluster lists as unfenced brokers (empty when no node answers)."""
        for node in self.brokers:
            try:
                admin = KafkaAdminClient(
                    bootstrap_servers=node.bootstrap, client_id="vigil-cluster-probe",
                    bootstrap_timeout_ms=2000, request_timeout_ms=5000, **node.client_options(),
                )  # fmt: skip
            except KafkaError:
                continue
            try:
                brokers = admin.describe_cluster().get("brokers", [])
            except KafkaError:
                continue
            finally:
                admin.close()
            return {int(b["broker_id"]) for b in brokers if not b.get("is_fenced", False)}
        return set()

    def wait_all_unfenced(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        wanted = {n.role.node_id for n in self.brokers}
        seen: set[int] = set()
        while time.monotonic() < deadline:
            seen = self.unfenced()
            if seen >= wanted:
                return
            time.sleep(0.25)
        raise BrokerError(f"the cluster lists nodes {sorted(seen)} of {sorted(wanted)} within {timeout_s:.0f}s")

    def status(self) -> ClusterStatus:
        return ClusterStatus([node.status() for node in self.nodes], [node.role.process_roles for node in self.nodes])

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop every node, brokers before controllers (a broker's controlled shutdown asks the
        controller); True if any was running."""
        stopped = False
        for node in [*reversed(self.brokers), *self.controllers]:
            stopped |= node.stop(timeout_s)
        return stopped


def embedded_kafka(config: EmbeddedBrokerConfig) -> EmbeddedBroker | EmbeddedCluster:
    """The embedded broker a config asks for: one node, or a cluster of `nodes`."""
    return EmbeddedCluster(config) if config.nodes > 1 else EmbeddedBroker(config)


# ---------------------------------------------------------------------------------------------- CLI


def cli_main(args: argparse.Namespace) -> int:
    """`vigil broker fetch|start|stop|status [--nodes N]`."""
    from vigil.settings import resolve_config

    config = resolve_config(args.config, args.log_level)
    embedded = config.kafka.embedded
    if getattr(args, "nodes", None):
        embedded = EmbeddedBrokerConfig.model_validate(embedded.model_dump() | {"nodes": args.nodes})
    kafka = embedded_kafka(embedded)
    external = not config.kafka.uses_embedded_broker
    servers = ",".join(config.kafka.bootstrap_servers)
    if args.action == "fetch":
        first = kafka.nodes[0] if isinstance(kafka, EmbeddedCluster) else kafka
        print(first.fetch())
        return 0
    if args.action in ("start", "stop") and external:
        print(
            f"vigil broker {args.action}: this config uses the Kafka cluster at {servers} "
            "(kafka.bootstrap_servers), so the embedded broker is not used; remove bootstrap_servers to use it",
            file=sys.stderr,
        )
        return 2
    if args.action == "start":
        started = time.monotonic()
        bootstrap = kafka.start(args.timeout)
        elapsed = time.monotonic() - started
        if isinstance(kafka, EmbeddedCluster):
            print(f"Kafka cluster of {len(kafka.nodes)} nodes ready at {bootstrap} in {elapsed:.1f}s")
            print(kafka.status().describe())
            return 0
        status = kafka.status()
        rss = f"{status.rss_mb:.0f} MB" if status.rss_mb is not None else "unknown"
        print(
            f"Kafka broker ready at {bootstrap} in {elapsed:.1f}s "
            f"(pid {status.pid}, RSS {rss}, state {kafka.state_dir})"
        )
        return 0
    if args.action == "stop":
        print("stopped" if kafka.stop(args.timeout) else f"not running (state {kafka.state_dir})")
        return 0
    state = kafka.status()
    if external:
        print(f"note: this config uses the Kafka cluster at {servers}; the embedded broker is not used by it")
    print(state.describe())
    return 0 if state.running else 3
