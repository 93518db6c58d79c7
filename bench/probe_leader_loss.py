"""Where the time goes when a partition leader dies: a timeline of every hop, relative to the kill.

Starts a three-node embedded KRaft cluster (`vigil.cluster`) in a temporary folder, creates a topic
with replication 3 and min.insync.replicas 2, and runs against it, with vigil's client settings
(`make_producer` / `make_consumer` from a `KafkaConfig`, overrides with --set):

* a producer sending one small record keyed by camera every --interval-ms, timing each acknowledgement;
* a consumer in a group reading them and committing after every poll, as the detect worker does,
  timing each commit;
* a watcher asking the cluster every 100 ms who leads the camera's partition, which replicas are in
  its ISR, and which node coordinates the group.

Then it SIGKILLs the leader of the camera's partition (--kill leader, optionally choosing a leader
that is also the active KRaft controller or the group coordinator, by restarting the probe until the
layout fits: --want controller|coordinator|neither) and prints, relative to the kill: the producer's
and consumer's longest gaps and their errors, every change the watcher saw, the client libraries'
warnings, and the surviving nodes' own milestones (fencing, elections, coordinator loads) from their
logs at INFO. The killed node is restarted afterwards and its return to the ISR timed. Ends with one
JSON line of the figures.

    .venv/bin/python bench/probe_leader_loss.py
    .venv/bin/python bench/probe_leader_loss.py --controllers 1   # the layout tests/faults/test_cluster.py uses
    .venv/bin/python bench/probe_leader_loss.py --session-timeout-ms 9000 --set producer.retries=5
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kafka import TopicPartition
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2
from kafka.structs import OffsetAndMetadata

from vigil.cluster import EmbeddedCluster
from vigil.config import EmbeddedBrokerConfig, KafkaConfig, TopicConfig, TopicsConfig
from vigil.kafka import ensure_topics, make_admin, make_consumer, make_producer
from vigil.kafka_jars import default_deploy_dir
from vigil.processes import port_free

CAMERA = b"plaza"
# Broker loggers worth a line each during a leader loss (the embedded broker logs WARN otherwise).
BROKER_LOGGERS = (
    "org.apache.kafka.controller",  # fencing, partition leader elections
    "org.apache.kafka.raft",  # controller quorum elections
    "kafka.server.metadata",  # brokers applying the new metadata
    "org.apache.kafka.coordinator.group",  # group coordinator loads and rebalances
    "kafka.coordinator.group",
    "kafka.cluster.Partition",  # ISR changes, becoming leader
)
MILESTONES = re.compile(
    r"fenc|elect|leader|isr|coordinator|loading|loaded|rebalanc|candidate|transition|session|unfenc",
    re.IGNORECASE,
)


@dataclass
class Timeline:
    """Events as (monotonic time, source, text)."""

    events: list[tuple[float, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, source: str, text: str, at: float | None = None) -> None:
        with self.lock:
            self.events.append((time.monotonic() if at is None else at, source, text))


class TimelineHandler(logging.Handler):
    def __init__(self, timeline: Timeline) -> None:
        super().__init__(logging.INFO)
        self.timeline = timeline

    def emit(self, record: logging.LogRecord) -> None:
        self.timeline.add(f"client:{record.name}", f"{record.levelname} {record.getMessage()[:300]}")


def free_ports(count: int) -> int:
    """A port p with p .. p + count - 1 all free."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port + count < 65535 and all(port_free(p) for p in range(port, port + count)):
            return port


def verbose_deploy_dir(target: Path) -> Path:
    """A copy of deploy/kafka whose log4j2.yaml also logs BROKER_LOGGERS at INFO."""
    source = default_deploy_dir()
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(source / "pom.xml", target / "pom.xml")
    text = (source / "log4j2.yaml").read_text()
    extra = "".join(f"      - name: {name}\n        level: INFO\n" for name in BROKER_LOGGERS)
    (target / "log4j2.yaml").write_text(text.rstrip("\n") + "\n" + extra)
    return target


def override(config: KafkaConfig, assignments: list[str]) -> KafkaConfig:
    data = config.model_dump(mode="json")
    for assignment in assignments:
        key, _, raw = assignment.partition("=")
        *path, last = key.split(".")
        target = data
        for part in path:
            target = target[part]
        try:
            target[last] = json.loads(raw)
        except ValueError:
            target[last] = raw
    return KafkaConfig.model_validate(data)


def coordinator_of(admin: Any, group: str) -> int:
    """The group's coordinator asked afresh (the admin client caches it otherwise)."""
    admin._manager.cluster._coordinators.clear()
    return int(admin._manager.run(admin._find_coordinator_ids, [group])[group])


class Watcher(threading.Thread):
    """Leader and ISR of the partition, and the group's coordinator, every 100 ms; logs changes."""

    def __init__(self, config: KafkaConfig, topic: str, partition: int, group: str, timeline: Timeline) -> None:
        super().__init__(daemon=True, name="watcher")
        self.config, self.topic, self.partition, self.group = config, topic, partition, group
        self.timeline = timeline
        self.stop = threading.Event()
        self.errors = 0

    def run(self) -> None:
        admin = make_admin(self.config)
        seen: dict[str, Any] = {}
        while not self.stop.wait(0.1):
            try:
                described = admin.describe_topics([self.topic])[0]["partitions"]
                mine = next(p for p in described if p["partition_index"] == self.partition)
                layout = (mine["leader_id"], tuple(sorted(mine["isr_nodes"])))
                node = coordinator_of(admin, self.group)
                state = admin.describe_groups([self.group], group_coordinator_id=node)[self.group].get("group_state")
                coordinator = (node, state)
            except (KafkaError, StopIteration, IndexError, KeyError) as exc:
                self.errors += 1
                if seen.get("error") != type(exc).__name__:
                    self.timeline.add("watcher", f"describe failed: {type(exc).__name__}: {exc}")
                seen["error"] = type(exc).__name__
                continue
            seen["error"] = None
            if layout != seen.get("layout"):
                self.timeline.add("watcher", f"partition {self.partition}: leader {layout[0]}, ISR {list(layout[1])}")
                seen["layout"] = layout
            if coordinator != seen.get("coordinator"):
                self.timeline.add("watcher", f"group coordinator {coordinator}")
                seen["coordinator"] = coordinator
        admin.close()


class Producer(threading.Thread):
    def __init__(
        self, config: KafkaConfig, topic: str, interval_s: float, timeline: Timeline, options: dict[str, Any]
    ) -> None:
        super().__init__(daemon=True, name="producer")
        self.producer = make_producer(config, "probe", **options)
        self.topic, self.interval_s, self.timeline = topic, interval_s, timeline
        self.stop = threading.Event()
        self.acks: list[tuple[float, float]] = []  # (sent, acknowledged)
        self.failures: list[tuple[float, float, str]] = []
        self.lock = threading.Lock()

    def run(self) -> None:
        payload = b"x" * 10_000
        while not self.stop.wait(self.interval_s):
            sent = time.monotonic()
            try:
                future = self.producer.send(self.topic, key=CAMERA, value=payload)
            except KafkaError as exc:
                self._failed(sent, exc)
                continue
            future.add_callback(lambda _meta, sent=sent: self._acked(sent))
            future.add_errback(lambda exc, sent=sent: self._failed(sent, exc))
        self.producer.flush(timeout=30)
        self.producer.close(timeout=10)

    def _acked(self, sent: float) -> None:
        with self.lock:
            self.acks.append((sent, time.monotonic()))

    def _failed(self, sent: float, exc: BaseException) -> None:
        now = time.monotonic()
        with self.lock:
            first = not self.failures
            self.failures.append((sent, now, f"{type(exc).__name__}: {exc}"))
        if first:
            self.timeline.add(
                "producer", f"first failed send (sent {now - sent:.2f}s before): {type(exc).__name__}: {exc}"
            )


class Consumer(threading.Thread):
    def __init__(self, config: KafkaConfig, topic: str, group: str, timeline: Timeline) -> None:
        super().__init__(daemon=True, name="consumer")
        self.consumer = make_consumer(config, "probe", group, [topic])
        self.timeline = timeline
        self.stop = threading.Event()
        self.received: list[float] = []
        self.commits: list[tuple[float, float, str]] = []  # (started, ended, outcome)

    def run(self) -> None:
        while not self.stop.is_set():
            asked = time.monotonic()
            try:
                polled = self.consumer.poll(timeout_ms=200, max_records=64)
            except KafkaError as exc:
                self.timeline.add("consumer", f"poll failed: {type(exc).__name__}: {exc}")
                time.sleep(0.1)
                continue
            if not polled and time.monotonic() - asked < 0.01:
                time.sleep(0.1)  # no coordinator: poll returns at once (as the detect worker does)
            now = time.monotonic()
            offsets: dict[TopicPartition, OffsetAndMetadata] = {}
            for tp, records in polled.items():
                self.received.extend(now for _ in records)
                offsets[tp] = OffsetAndMetadata(records[-1].offset + 1, "", -1)
            if offsets:
                started = time.monotonic()
                try:
                    self.consumer.commit(offsets)
                    outcome = "ok"
                except KafkaError as exc:
                    outcome = f"{type(exc).__name__}: {exc}"
                ended = time.monotonic()
                self.commits.append((started, ended, outcome))
                if outcome != "ok" or ended - started > 1.0:
                    self.timeline.add("consumer", f"commit took {ended - started:.2f}s: {outcome}", at=ended)
        self.consumer.close(autocommit=False)


def longest_gap(times: list[float], since: float, until: float) -> tuple[float, float]:
    """(longest gap between consecutive times within [since, until], where it began)."""
    inside = sorted(t for t in times if since <= t <= until)
    points = [since, *inside, until]
    gaps = [(b - a, a) for a, b in zip(points, points[1:], strict=False)]
    return max(gaps) if gaps else (until - since, since)


def broker_milestones(cluster: EmbeddedCluster, killed_wall: float, killed_mono: float, until_wall: float) -> list:
    events = []
    for node in cluster.nodes:
        for path in (node.log_file, node.log_file.with_suffix(".log.1")):
            try:
                lines = path.read_text(errors="replace").splitlines()
            except OSError:
                continue
            for line in lines:
                match = re.match(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\] (\w+) (.*)", line)
                if not match or not MILESTONES.search(match.group(3)):
                    continue
                wall = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                if killed_wall - 2 <= wall <= until_wall:
                    text = match.group(3)[:260]
                    events.append((killed_mono + (wall - killed_wall), f"node-{node.role.node_id}", text))
    return events


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = EmbeddedBrokerConfig()
    parser.add_argument("--session-timeout-ms", type=int, default=defaults.session_timeout_ms,
                        help="kafka.embedded.session_timeout_ms of the cluster")  # fmt: skip
    parser.add_argument("--controller-timeout-ms", type=int, default=defaults.controller_timeout_ms,
                        help="kafka.embedded.controller_timeout_ms of the cluster")  # fmt: skip
    parser.add_argument("--controllers", type=int, default=0,
                        help="kafka.embedded.controllers: KRaft controllers of their own (0: combined nodes)")  # fmt: skip
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a kafka config key, e.g. producer.retries=5 or request_timeout_ms=30000")  # fmt: skip
    parser.add_argument("--producer-option", action="append", default=[], metavar="KEY=VALUE",
                        help="a kafka-python producer option over vigil's, e.g. enable_idempotence=false "
                        "max_in_flight_requests_per_connection=1 (what live ingest uses)")  # fmt: skip
    parser.add_argument("--want", choices=("any", "controller", "coordinator", "neither"), default="any",
                        help="kill only a leader that is (not) the active controller / the group coordinator; "
                        "other layouts are re-rolled with a new topic")  # fmt: skip
    parser.add_argument("--interval-ms", type=int, default=50)
    parser.add_argument("--observe-s", type=float, default=30.0)
    parser.add_argument("--heap-mb", type=int, default=384)
    parser.add_argument("--log", type=Path, help="write the whole timeline here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="vigil-probe-") as tmp:
        port = free_ports(6)
        embedded = EmbeddedBrokerConfig(
            port=port, controller_port=port + 1, state_dir=str(Path(tmp) / "state"), nodes=3, heap_mb=args.heap_mb,
            controllers=args.controllers, session_timeout_ms=args.session_timeout_ms,
            controller_timeout_ms=args.controller_timeout_ms,
        )  # fmt: skip
        cluster = EmbeddedCluster(
            embedded, state_dir=Path(tmp) / "state", deploy_dir=verbose_deploy_dir(Path(tmp) / "deploy"),
            progress=None,
        )  # fmt: skip
        started = time.monotonic()
        cluster.start(300)
        layout = f"{args.controllers} controllers apart" if args.controllers else "combined"
        up = time.monotonic() - started
        print(f"cluster of 3 brokers ({layout}) up in {up:.1f}s at {cluster.bootstrap}", file=sys.stderr)
        try:
            return probe(cluster, args)
        finally:
            cluster.stop(30)


def probe(cluster: EmbeddedCluster, args: argparse.Namespace) -> int:
    config = override(KafkaConfig(bootstrap_servers=cluster.servers, bootstrap_timeout_ms=5000), args.set)
    layout = TopicsConfig(replication_factor=3, min_insync_replicas=2)
    timeline = Timeline()
    producer_options = {k: json.loads(v) for k, _, v in (o.partition("=") for o in args.producer_option)}
    for attempt in range(12):
        topic = f"probe-{attempt}-{os.getpid()}"
        group = f"{topic}-group"
        ensure_topics(config, [TopicConfig(name=topic, partitions=2)], layout)
        partition = (murmur2(CAMERA) & 0x7FFFFFFF) % 2
        consumer = Consumer(config, topic, group, timeline)
        consumer.start()
        producer = Producer(config, topic, args.interval_ms / 1000, timeline, producer_options)
        producer.start()
        time.sleep(4)  # the group forms, the producer warms up
        admin = make_admin(config)
        try:
            mine = next(p for p in admin.describe_topics([topic])[0]["partitions"] if p["partition_index"] == partition)
            coordinator = coordinator_of(admin, group)
        finally:
            admin.close()
        leader, controller = int(mine["leader_id"]), cluster.active_controller()
        fits = {
            "any": True,
            "controller": leader == controller,
            "coordinator": leader == coordinator and leader != controller,
            "neither": leader not in (controller, coordinator),
        }[args.want]
        if fits and consumer.received:
            break
        producer.stop.set()
        consumer.stop.set()
        producer.join(30)
        consumer.join(30)
        timeline = Timeline()
    else:
        print(f"no layout fitting --want {args.want} in 12 tries", file=sys.stderr)
        return 2
    roles = [r for r, n in (("controller", controller), ("group coordinator", coordinator)) if n == leader]
    watcher = Watcher(config, topic, partition, group, timeline)
    watcher.start()
    time.sleep(1)
    logging.getLogger("kafka").setLevel(logging.WARNING)
    logging.getLogger("kafka").addHandler(TimelineHandler(timeline))
    pid = cluster.node(leader).status().pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    killed, killed_wall = time.monotonic(), time.time()
    timeline.add(
        "probe", f"SIGKILL node {leader} (leader of {topic}/{partition}; also {', '.join(roles) or 'nothing else'})"
    )
    time.sleep(args.observe_s)
    end, end_wall = time.monotonic(), time.time()
    restarted = time.monotonic()
    cluster.start_node(leader, 240)
    back = time.monotonic() - restarted
    producer.stop.set()
    consumer.stop.set()
    watcher.stop.set()
    for thread in (producer, consumer, watcher):
        thread.join(60)

    ack_gap, ack_from = longest_gap([a for _, a in producer.acks], killed - 1, end)
    recv_gap, recv_from = longest_gap(consumer.received, killed - 1, end)
    after = [a - s for s, a in producer.acks if s >= killed]
    slow_commits = [e - s for s, e, _ in consumer.commits if s >= killed - 1]
    events = sorted(timeline.events + broker_milestones(cluster, killed_wall, killed, end_wall))
    lines = [f"{t - killed:+8.3f}s  {source:<24} {text}" for t, source, text in events if t >= killed - 2]
    if args.log:
        args.log.write_text("\n".join(lines) + "\n")
    for line in lines:
        print(line)
    figures = {
        "killed_node": leader,
        "killed_roles": roles,
        "controllers": args.controllers,
        "session_timeout_ms": args.session_timeout_ms,
        "controller_timeout_ms": args.controller_timeout_ms,
        "overrides": args.set + args.producer_option,
        "producer_longest_ack_gap_s": round(ack_gap, 2),
        "producer_gap_from_s": round(ack_from - killed, 2),
        "producer_failed_sends": len([f for f in producer.failures if f[1] >= killed]),
        "first_send_after_kill_latency_s": round(after[0], 2) if after else None,
        "consumer_longest_gap_s": round(recv_gap, 2),
        "consumer_gap_from_s": round(recv_from - killed, 2),
        "longest_commit_s": round(max(slow_commits, default=0.0), 2),
        "killed_node_back_s": round(back, 1),
        "load_average_1m": round(os.getloadavg()[0], 1),
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
