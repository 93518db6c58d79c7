"""The embedded broker: a real Apache Kafka JVM started, used, restarted idempotently and stopped;
clear errors when Maven is missing or fails and when the port is taken."""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vigil.broker import EmbeddedBroker, default_cache_dir, new_cluster_id
from vigil.cli import main as vigil_main
from vigil.config import EmbeddedBrokerConfig, KafkaConfig, TopicConfig
from vigil.errors import BrokerError
from vigil.kafka import ensure_topics, make_consumer, make_producer


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """`vigil broker ...` sets up process logging (a root handler with vigil's secret filter);
    undo it so later tests see the logging they expect."""
    root, kafka_logger = logging.getLogger(), logging.getLogger("kafka")
    handlers, level, kafka_level = list(root.handlers), root.level, kafka_logger.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    kafka_logger.setLevel(kafka_level)


def free_ports(count: int) -> list[int]:
    """Ports nothing listens on now (the kernel's pick), held open together so they differ."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def java_pids_of(state_dir: Path) -> list[int]:
    """Every live process whose command line names this state dir's server.properties."""
    needle = str(state_dir / "server.properties").encode()
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if needle in (entry / "cmdline").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def broker_on_spare_ports(state_dir: Path) -> EmbeddedBroker:
    port, controller = free_ports(2)
    config = EmbeddedBrokerConfig(port=port, controller_port=controller, state_dir=str(state_dir))
    return EmbeddedBroker(config, progress=None)


def config_file(tmp_path: Path, broker: EmbeddedBroker) -> str:
    c = broker.config
    path = tmp_path / "vigil.yaml"
    path.write_text(
        f"kafka:\n  embedded:\n    port: {c.port}\n    controller_port: {c.controller_port}\n"
        f"    state_dir: {broker.state_dir}\n"
    )
    return str(path)


def test_cluster_id_is_kraft_shaped() -> None:
    ids = {new_cluster_id() for _ in range(2000)}
    assert len(ids) == 2000
    # The storage tool's parser takes a leading '-' for an option; 2000 draws would hit ~31 of them.
    assert not any(i.startswith("-") for i in ids)
    assert all(
        len(i) == 22 and set(i) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") for i in ids
    )


@pytest.mark.broker
def test_start_use_restart_stop(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broker = broker_on_spare_ports(tmp_path / "state")
    assert not broker.status().running

    started = time.monotonic()
    bootstrap = broker.start(timeout_s=120)
    assert bootstrap == f"127.0.0.1:{broker.config.port}"
    try:
        status = broker.status()
        assert status.running and status.listening
        assert status.pid is not None and java_pids_of(broker.state_dir) == [status.pid]
        # The JVM runs with the configured options (serial GC, C1 only by default: less CPU per request).
        argv = Path(f"/proc/{status.pid}/cmdline").read_bytes().decode().split("\0")
        assert broker.config.jvm_options == ["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]
        assert set(broker.config.jvm_options) <= set(argv) and "-XX:+UseG1GC" not in argv
        assert status.rss_mb is not None and status.rss_mb > 50
        assert (broker.data_dir / "meta.properties").is_file()
        print(f"broker started in {time.monotonic() - started:.1f}s, RSS {status.rss_mb:.0f} MB")

        # Start again, also from the CLI: the running broker is reused, not a second JVM.
        assert broker.start(timeout_s=30) == bootstrap
        cli_config = config_file(tmp_path, broker)
        assert vigil_main(["broker", "start", "--config", cli_config, "--timeout", "30"]) == 0
        assert f"Kafka broker ready at {bootstrap}" in capsys.readouterr().out
        assert vigil_main(["broker", "status", "--config", cli_config]) == 0
        assert f"running at {bootstrap} (listening), pid {status.pid}" in capsys.readouterr().out
        assert java_pids_of(broker.state_dir) == [status.pid]

        kafka = KafkaConfig(bootstrap_servers=[bootstrap], bootstrap_timeout_ms=5000)
        topic = TopicConfig(name="roundtrip", partitions=2)
        assert ensure_topics(kafka, [topic]) == ["roundtrip"]
        producer = make_producer(kafka, "test")
        big = os.urandom(2 * 1024 * 1024)  # above Kafka's 1 MiB default message.max.bytes
        producer.send("roundtrip", key=b"cam", value=big).get(timeout=30)
        producer.send("roundtrip", key=b"cam", value=b"small").get(timeout=30)
        producer.close()
        consumer = make_consumer(kafka, "test", "roundtrip-group", ["roundtrip"])
        values: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(values) < 2 and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                values.extend(r.value for r in records)
        consumer.close()
        assert values == [big, b"small"]
    finally:
        assert broker.stop(timeout_s=30)

    status = broker.status()
    assert not status.running and status.pid is None
    assert not broker.pid_file.exists()
    assert java_pids_of(broker.state_dir) == []
    assert not broker.stop()  # stopping a stopped broker is a no-op
    assert vigil_main(["broker", "status", "--config", cli_config]) == 3
    assert "not running" in capsys.readouterr().out

    # Formatting is done once: the stored cluster id survives a second format().
    meta = (broker.data_dir / "meta.properties").read_text()
    assert broker.format() is False
    assert (broker.data_dir / "meta.properties").read_text() == meta


@pytest.mark.broker
def test_port_taken_by_another_process(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        (controller,) = free_ports(1)
        config = EmbeddedBrokerConfig(port=taken, controller_port=controller, state_dir=str(tmp_path / "state"))
        with pytest.raises(BrokerError, match=rf"127\.0\.0\.1:{taken} .*already in use.*bootstrap_servers"):
            EmbeddedBroker(config, progress=None).start(timeout_s=10)
    assert java_pids_of(tmp_path / "state") == []


@pytest.mark.broker
def test_cached_jars_need_no_maven(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    broker = EmbeddedBroker(EmbeddedBrokerConfig(), progress=None)
    jars = broker.fetch()  # fetches once if this machine has no cache yet
    assert jars == default_cache_dir() / "4.1.1"
    assert (jars / "kafka_2.13-4.1.1.jar").is_file()
    assert any(j.name.startswith("log4j-slf4j-impl-") for j in jars.glob("*.jar"))
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    assert EmbeddedBroker(EmbeddedBrokerConfig(), progress=None).fetch() == jars


def test_missing_maven_names_the_fixes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    broker = EmbeddedBroker(EmbeddedBrokerConfig(), cache_dir=tmp_path / "cache", progress=None)
    with pytest.raises(BrokerError) as info:
        broker.fetch()
    message = str(info.value)
    assert "Maven (mvn) is not on PATH" in message
    assert str(tmp_path / "cache" / "4.1.1") in message
    assert "kafka.bootstrap_servers" in message
    assert not (tmp_path / "cache" / "4.1.1").exists()


@pytest.mark.broker
def test_maven_failure_quotes_maven(tmp_path: Path) -> None:
    """A Kafka version that does not exist: real mvn fails and its own error reaches the user."""
    config = EmbeddedBrokerConfig(kafka_version="4.0.99")
    broker = EmbeddedBroker(config, cache_dir=tmp_path / "cache", progress=None)
    with pytest.raises(BrokerError) as info:
        broker.fetch()
    message = str(info.value)
    assert "mvn failed to fetch Apache Kafka 4.0.99" in message
    assert "kafka_2.13" in message  # mvn's own line naming the unresolvable artifact
    assert "kafka.bootstrap_servers" in message
    assert list((tmp_path / "cache").iterdir()) == []  # no half-filled cache left behind


def test_cli_refuses_to_start_for_an_external_cluster(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "vigil.yaml"
    path.write_text(f"kafka:\n  bootstrap_servers: [kafka-1:9092]\n  embedded:\n    state_dir: {tmp_path / 'state'}\n")
    for action in ("start", "stop"):
        assert vigil_main(["broker", action, "--config", str(path)]) == 2
        assert "kafka-1:9092" in capsys.readouterr().err
    assert java_pids_of(tmp_path / "state") == []
