"""`kafka` and `topics` sections: where the broker is, how to talk to it, and topic layout."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator, model_validator

from vigil.config.base import FieldError, Section


class EmbeddedBrokerConfig(Section):
    host: str = Field("127.0.0.1", title="Listen address of the embedded broker (loopback by default)")
    port: int = Field(9092, ge=1024, le=65535, title="Client port of the embedded broker")
    controller_port: int = Field(9093, ge=1024, le=65535, title="KRaft controller port of the embedded broker")
    state_dir: str = Field(".state/kafka", title="Directory for the broker's data, logs and pid file")
    heap_mb: int = Field(512, ge=128, le=8192, title="JVM heap of the embedded broker, in MiB")
    jvm_options: list[str] = Field(
        default_factory=lambda: ["-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"],
        max_length=32,
        title="JVM options of the embedded broker (default: serial GC and the C1 JIT only, which cut the broker's CPU "
        "per frame by more than half here: docs/operations.md); [] for the JVM's own defaults",
    )
    kafka_version: str = Field("4.1.1", pattern=r"^4\.\d+\.\d+$", title="Apache Kafka 4.x version fetched from Maven")
    nodes: int = Field(
        1,
        ge=1,
        le=5,
        title="Nodes of the embedded cluster (each broker + controller); node k (from 0) listens on "
        "port + 2k and controller_port + 2k",
    )
    controllers: int = Field(
        0,
        ge=0,
        le=5,
        title="With nodes > 1: KRaft controllers of their own (0: every node is broker and controller); controller "
        "j (from 0) listens on controller_port + 2j, the nodes then are brokers only, on port + 2k",
    )
    session_timeout_ms: int = Field(
        3000,
        ge=1000,
        le=60_000,
        title="With nodes > 1: how long the cluster waits for a node that stopped heartbeating before fencing it "
        "and moving its partition leaderships, ms (broker.session.timeout.ms; nodes heartbeat every eighth of it)",
    )
    controller_timeout_ms: int = Field(
        1000,
        ge=200,
        le=30_000,
        title="With nodes > 1: how long the controller quorum waits for a silent active controller before electing "
        "another, ms (controller.quorum.fetch.timeout.ms; elections time out, and back off, within half of it)",
    )

    @field_validator("jvm_options")
    @classmethod
    def _jvm_options(cls, options: list[str]) -> list[str]:
        # Anything else would be read by `java` as the main class, and the broker would not start.
        bad = [option for option in options if not option.startswith("-") or any(c.isspace() for c in option)]
        if bad:
            raise ValueError(f"each JVM option is one flag starting with '-' (e.g. -XX:+UseSerialGC), got {bad}")
        return options

    @model_validator(mode="after")
    def _ports_differ(self) -> EmbeddedBrokerConfig:
        if self.port == self.controller_port:
            raise FieldError("controller_port", "port and controller_port must differ")
        return self

    @model_validator(mode="after")
    def _node_ports_fit(self) -> EmbeddedBrokerConfig:
        if self.port == self.controller_port:
            return self  # `_ports_differ` names the problem
        voters = self.controllers or self.nodes
        clients = set(range(self.port, self.port + 2 * self.nodes, 2))
        controllers = set(range(self.controller_port, self.controller_port + 2 * voters, 2))
        if clients & controllers:
            raise FieldError(
                "nodes",
                f"{self.nodes} nodes on ports {self.port} + 2k and controller ports {self.controller_port} + 2k "
                "overlap; choose ports an odd distance apart (e.g. 9092 and 9093)",
            )
        if max(clients | controllers) > 65535:
            raise FieldError(
                "nodes", f"{self.nodes} nodes from port {min(self.port, self.controller_port)} run past 65535"
            )
        if self.controllers and self.nodes == 1:
            raise FieldError(
                "controllers", "controllers of their own need nodes > 1 (a node alone is its own controller)"
            )
        return self

    def node_ports(self) -> list[tuple[int, int]]:
        """(client port, controller port) of each node; with `controllers`, the nodes are brokers
        only and the controller port is not listened on."""
        return [(self.port + 2 * k, self.controller_port + 2 * k) for k in range(self.nodes)]

    def controller_ports(self) -> list[int]:
        """The controller port of each controller of its own (none in combined mode)."""
        return [self.controller_port + 2 * j for j in range(self.controllers)]


class ProducerConfig(Section):
    acks: Literal[0, 1, "all"] = Field("all", title="Acknowledgements a produce request waits for")
    linger_ms: int = Field(5, ge=0, le=10_000, title="How long the producer waits to fill a batch, ms")
    frames_linger_ms: int = Field(
        5,
        ge=0,
        le=10_000,
        title="linger_ms of ingest's frames producer, ms: fewer produce requests for as much latency",
    )
    batch_size: int = Field(262_144, ge=1024, le=64 * 1024 * 1024, title="Producer batch size, bytes")
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "none", title="Compression; JPEG frames do not compress, so none by default"
    )
    max_request_size: int = Field(
        8 * 1024 * 1024, ge=65_536, le=256 * 1024 * 1024, title="Largest produce request, bytes"
    )
    retries: int = Field(5, ge=0, le=1000, title="Retries of a failed produce before it counts as failed")
    delivery_timeout_ms: int = Field(
        120_000, ge=1000, le=600_000, title="Upper bound on a send, ms; above linger_ms + kafka.request_timeout_ms"
    )


class ConsumerConfig(Section):
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", title="Where a new consumer group starts; earliest loses nothing on first start"
    )
    session_timeout_ms: int = Field(10_000, ge=1000, le=300_000, title="Group session timeout, ms")
    heartbeat_interval_ms: int = Field(3000, ge=100, le=100_000, title="Group heartbeat interval, ms")
    max_poll_interval_ms: int = Field(300_000, ge=1000, le=3_600_000, title="Max time between polls, ms")
    max_poll_records: int = Field(64, ge=1, le=10_000, title="Records returned by one poll at most")
    fetch_max_bytes: int = Field(52_428_800, ge=65_536, le=512 * 1024 * 1024, title="Max bytes per fetch")
    max_partition_fetch_bytes: int = Field(
        8_388_608,
        ge=65_536,
        le=512 * 1024 * 1024,
        title="Max bytes per partition per fetch (larger records still arrive)",
    )
    fetch_min_bytes: int = Field(
        1, ge=1, le=64 * 1024 * 1024, title="Bytes the broker waits for before answering a fetch (1: answer at once)"
    )
    fetch_max_wait_ms: int = Field(
        500,
        ge=0,
        le=60_000,
        title="Longest the broker holds a fetch while fewer than fetch_min_bytes are there, ms",
    )

    @model_validator(mode="after")
    def _heartbeat_below_session(self) -> ConsumerConfig:
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise FieldError(
                "heartbeat_interval_ms", "heartbeat_interval_ms must be at most a third of session_timeout_ms"
            )
        return self


class KafkaConfig(Section):
    bootstrap_servers: list[str] = Field(
        default_factory=list,
        title="host:port of the Kafka cluster; empty means the embedded broker that `vigil broker start` runs",
    )
    client_id: str = Field("vigil", min_length=1, max_length=64, title="Client id prefix sent to Kafka")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", title="Kafka security protocol"
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, title="SASL mechanism, required with SASL_* protocols"
    )
    sasl_username: str | None = Field(None, min_length=1, max_length=256, title="SASL user name")
    sasl_password: SecretStr | None = Field(None, title="SASL password; write ${ENV_VAR} rather than the secret")
    ssl_cafile: str | None = Field(None, title="CA bundle for SSL")
    ssl_certfile: str | None = Field(None, title="Client certificate for mutual TLS")
    ssl_keyfile: str | None = Field(None, title="Client key for mutual TLS")
    ssl_password: SecretStr | None = Field(None, title="Password of the client key")
    request_timeout_ms: int = Field(30_000, ge=1000, le=600_000, title="Request timeout, ms")
    bootstrap_timeout_ms: int = Field(
        10_000, ge=500, le=600_000, title="How long a client tries to reach the cluster before giving up, ms"
    )
    reconnect_backoff_ms: int = Field(
        50, ge=10, le=60_000, title="First wait before reconnecting to a broker that went away, ms"
    )
    reconnect_backoff_max_ms: int = Field(
        1000,
        ge=10,
        le=300_000,
        title="Longest wait between reconnects, ms; bounds how long a client takes to notice a broker is back",
    )
    retry_backoff_ms: int = Field(100, ge=10, le=60_000, title="Wait before retrying a failed request, ms")
    producer: ProducerConfig = Field(default_factory=ProducerConfig, title="Producer settings")
    consumer: ConsumerConfig = Field(default_factory=ConsumerConfig, title="Consumer settings")
    embedded: EmbeddedBrokerConfig = Field(
        default_factory=EmbeddedBrokerConfig, title="The local broker used when bootstrap_servers is empty"
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_port(cls, servers: list[str]) -> list[str]:
        for server in servers:
            host, sep, port = server.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"bootstrap server {server!r} must be host:port, e.g. kafka-1:9092")
        return servers

    @model_validator(mode="after")
    def _security_complete(self) -> KafkaConfig:
        if self.security_protocol.startswith("SASL"):
            missing = [
                name for name in ("sasl_mechanism", "sasl_username", "sasl_password") if getattr(self, name) is None
            ]
            if missing:
                raise FieldError(
                    missing[0],
                    f"security_protocol {self.security_protocol} needs {', '.join(missing)} "
                    "(put the password in an environment variable and write sasl_password: ${KAFKA_PASSWORD})",
                )
        return self

    @field_validator("reconnect_backoff_max_ms")
    @classmethod
    def _backoff_ordered(cls, value: int, info: ValidationInfo) -> int:
        # A field validator, so the error names this key (reconnect_backoff_ms is validated first).
        first = info.data.get("reconnect_backoff_ms")
        if first is not None and value < first:
            raise ValueError(f"must be at least reconnect_backoff_ms ({first})")
        return value

    @model_validator(mode="after")
    def _delivery_covers_request(self) -> KafkaConfig:
        # The producer refuses to start otherwise (kafka-python and the Java client alike).
        for name in ("linger_ms", "frames_linger_ms"):
            linger = getattr(self.producer, name)
            if self.producer.delivery_timeout_ms <= linger + self.request_timeout_ms:
                raise FieldError(
                    ("producer", "delivery_timeout_ms"),
                    f"producer.delivery_timeout_ms ({self.producer.delivery_timeout_ms}) must be greater than "
                    f"producer.{name} + request_timeout_ms ({linger + self.request_timeout_ms})",
                )
        return self

    @model_validator(mode="after")
    def _request_outlasts_fetch_wait(self) -> KafkaConfig:
        # kafka-python refuses a consumer whose requests would time out while the broker holds a fetch.
        if self.consumer.fetch_max_wait_ms >= self.request_timeout_ms:
            raise FieldError(
                ("consumer", "fetch_max_wait_ms"),
                f"consumer.fetch_max_wait_ms ({self.consumer.fetch_max_wait_ms}) must be less than "
                f"request_timeout_ms ({self.request_timeout_ms})",
            )
        return self

    @property
    def uses_embedded_broker(self) -> bool:
        return not self.bootstrap_servers

    def bootstrap(self) -> list[str]:
        if self.bootstrap_servers:
            return list(self.bootstrap_servers)
        return [f"{self.embedded.host}:{port}" for port, _ in self.embedded.node_ports()]


class TopicConfig(Section):
    name: str = Field(..., pattern=r"^[A-Za-z0-9._-]{1,249}$", title="Kafka topic name")
    partitions: int = Field(..., ge=1, le=1024, title="Partitions; bounds how many workers share the topic")
    retention_ms: int | None = Field(None, ge=60_000, title="Retention override for the topic, ms")


class TopicsConfig(Section):
    frames: TopicConfig = Field(
        default_factory=lambda: TopicConfig(name="vigil.frames", partitions=6, retention_ms=3_600_000),
        title="JPEG frames, keyed by camera",
    )
    detections: TopicConfig = Field(
        default_factory=lambda: TopicConfig(name="vigil.detections", partitions=6),
        title="Detections per frame, keyed by camera",
    )
    alerts: TopicConfig = Field(
        default_factory=lambda: TopicConfig(name="vigil.alerts", partitions=3), title="Alert lifecycle events"
    )
    dead_letter: TopicConfig = Field(
        default_factory=lambda: TopicConfig(name="vigil.dead-letter", partitions=1),
        title="Records a stage could not process, with the reason",
    )
    status: TopicConfig = Field(
        default_factory=lambda: TopicConfig(name="vigil.status", partitions=1, retention_ms=3_600_000),
        title="Heartbeats of every process: readiness, camera states, headline figures",
    )
    replication_factor: int = Field(1, ge=1, le=7, title="Replication factor for topics vigil creates")
    min_insync_replicas: int | None = Field(
        None,
        ge=1,
        le=7,
        title="min.insync.replicas of the topics vigil creates: replicas that must have a record before acks=all "
        "answers; default replication_factor - 1 (at least 1)",
    )

    @model_validator(mode="after")
    def _names_unique(self) -> TopicsConfig:
        fields = ("frames", "detections", "alerts", "dead_letter", "status")
        names = [getattr(self, f).name for f in fields]
        for index, name in enumerate(names):
            first = names.index(name)
            if first != index:  # pinned to the second topic of the name
                raise FieldError((fields[index], "name"), f"topic {name!r} is already the {fields[first]} topic")
        return self

    @field_validator("min_insync_replicas")
    @classmethod
    def _min_isr_fits(cls, value: int | None, info: ValidationInfo) -> int | None:
        replication = info.data.get("replication_factor")
        if value is not None and replication is not None and value > replication:
            # Every acks=all send would be refused (NotEnoughReplicas) even with every broker up.
            raise ValueError(f"must not exceed replication_factor ({replication}): no acks=all send could ever succeed")
        return value

    @property
    def min_isr(self) -> int:
        """The min.insync.replicas vigil sets on its topics."""
        if self.min_insync_replicas is not None:
            return self.min_insync_replicas
        return max(1, self.replication_factor - 1)

    def all(self) -> list[TopicConfig]:
        return [self.frames, self.detections, self.alerts, self.dead_letter, self.status]
