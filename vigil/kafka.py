"""Kafka helpers: client factories from `KafkaConfig`, topic creation, and dead-lettering.

kafka-python is imported here and nowhere in the pure stage logic, which works on the
`KafkaRecord` protocol (see `vigil.contracts`) so it can be tested without a broker.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, KafkaTimeoutError, TopicAlreadyExistsError
from kafka.structs import TopicPartition

from vigil.broker import accepts_tcp
from vigil.config import KafkaConfig, TopicConfig, TopicsConfig
from vigil.contracts import DeadLetter, KafkaRecord
from vigil.errors import KafkaSecurityError, KafkaUnavailableError, VigilError
from vigil.health import Health
from vigil.kafka_fetch import keep_fetch_sessions_whole
from vigil.kafka_io import QuietSelector
from vigil.logs import log_repeated

log = logging.getLogger(__name__)
T = TypeVar("T")


def _common(config: KafkaConfig, role: str) -> dict[str, Any]:
    options: dict[str, Any] = {
        "bootstrap_servers": config.bootstrap(),
        "client_id": f"{config.client_id}-{role}",
        "security_protocol": config.security_protocol,
        "request_timeout_ms": config.request_timeout_ms,
        # Fail fast with a clear error instead of retrying forever when nothing listens.
        "bootstrap_timeout_ms": config.bootstrap_timeout_ms,
        # kafka-python backs off up to 30 s between reconnects by default: a broker back after an
        # outage went unnoticed that long. A short cap makes every client resume within about a second.
        "reconnect_backoff_ms": config.reconnect_backoff_ms,
        "reconnect_backoff_max_ms": config.reconnect_backoff_max_ms,
        "retry_backoff_ms": config.retry_backoff_ms,
        # A socket's registration check per I/O wait without formatting its repr (see vigil.kafka_io).
        "selector": QuietSelector,
    }
    if config.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = config.sasl_mechanism
        options["sasl_plain_username"] = config.sasl_username
        options["sasl_plain_password"] = config.sasl_password.get_secret_value() if config.sasl_password else None
    if config.security_protocol.endswith("SSL"):
        options["ssl_cafile"] = config.ssl_cafile
        options["ssl_certfile"] = config.ssl_certfile
        options["ssl_keyfile"] = config.ssl_keyfile
        options["ssl_password"] = config.ssl_password.get_secret_value() if config.ssl_password else None
    return options


def crc32c_implementation() -> str:
    """`c` when kafka-python checks record batches' CRC-32C with the `crc32c` C extension, `python` when with
    its pure-Python fallback (about 9 ms of CPU per 50 KB frame, on every produce and every fetch)."""
    from kafka.record import util

    defaults = util.calc_crc32c.__defaults__ or (util.crc32c_py,)  # the implementation is bound at import
    return "python" if defaults[0] is util.crc32c_py else "c"


_crc_checked = False


def check_crc32c() -> bool:
    """Warn, once per process and loudly, when record CRCs are computed in pure Python; True when in C."""
    global _crc_checked
    fast = crc32c_implementation() == "c"
    if not fast and not _crc_checked:
        log.warning(
            "KAFKA IS SLOW HERE: kafka-python computes record CRCs in pure Python (~9 ms of CPU per 50 KB "
            "frame, on every produce and fetch) because the crc32c C extension is missing; install it: "
            "pip install 'kafka-python[crc32c]'"
        )
    _crc_checked = True
    return fast


def transient(exc: BaseException) -> bool:
    """True for failures that a broker coming back (or a leader being elected) cures: no broker
    answered, a connection dropped, a request or a send timed out. Everything else (a record too
    large, an authorisation refused) is permanent and stops the stage."""
    if isinstance(exc, KafkaUnavailableError):
        return True
    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))


class Outage:
    """Logs a Kafka outage once when it starts and once when it ends (with its length), instead of
    once per failed call, and tells how long it has lasted. Outages that come and go within a
    minute are folded into a count (`vigil.logs.log_repeated`)."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._log = logger
        self._what = what
        self.since: float | None = None
        self.count = 0

    def failed(self, exc: BaseException, then: str) -> None:
        if self.since is None:
            self.since = time.monotonic()
            self.count += 1
            log_repeated(
                self._log, logging.WARNING, "kafka_unavailable", self._what, "%s: Kafka unavailable (%s: %s); %s",
                self._what, type(exc).__name__, exc, then,
            )  # fmt: skip

    def recovered(self) -> None:
        if self.since is not None:
            log_repeated(
                self._log, logging.WARNING, "kafka_answers", self._what, "%s: Kafka answers again after %.1fs",
                self._what, time.monotonic() - self.since,
            )  # fmt: skip
            self.since = None


def wait_for_kafka(
    config: KafkaConfig,
    connect: Callable[[], T],
    stop: threading.Event,
    *,
    what: str,
    health: Health | None = None,
    retry_s: float = 1.0,
) -> T | None:
    """`connect()` (create the topics, open the stage's clients) as soon as Kafka answers.

    A stage that starts while no broker answers waits instead of exiting: not ready meanwhile
    (`health` part "kafka" says which servers it waits for and why), the outage logged once
    (`Outage`). Until some bootstrap server accepts TCP nothing else is tried, so each round takes
    about a second whatever `kafka.bootstrap_timeout_ms` is and `stop` is noticed promptly; then a
    `connect()` that fails transiently is retried too. Returns None when `stop` is set first. A
    permanent failure (a refused login, an untrusted certificate) raises at once: waiting cannot
    cure it."""
    servers = config.bootstrap()
    outage = Outage(log, what)
    while not stop.is_set():
        problem: BaseException
        if not any(accepts_tcp(host, int(port)) for host, _, port in (s.rpartition(":") for s in servers)):
            problem = KafkaUnavailableError(f"no broker accepts connections at {','.join(servers)}")
        else:
            try:
                result = connect()
            except (KafkaError, VigilError) as exc:
                if not transient(exc):
                    raise
                problem = exc
            else:
                outage.recovered()
                return result
        if health is not None:
            health.set("kafka", False, f"waiting for Kafka at {','.join(servers)}: {problem}")
        outage.failed(problem, "waiting for it (not ready until it answers)")
        stop.wait(retry_s)
    return None


def _unavailable(config: KafkaConfig, exc: Exception) -> VigilError:
    """The error for a client that could not bootstrap: a refused login or an untrusted certificate
    named by its config key when that is what happened (kafka-python only reports a timeout), else
    no broker answered."""
    problem = security_problem(config)
    if problem is not None:
        return KafkaSecurityError(problem)
    hint = (
        "start the embedded broker with `vigil broker start`"
        if config.uses_embedded_broker
        else "check kafka.bootstrap_servers and that the cluster is reachable"
    )
    return KafkaUnavailableError(f"no Kafka broker answered at {','.join(config.bootstrap())} ({exc}); {hint}")


def security_problem(config: KafkaConfig, timeout_s: float = 3.0) -> str | None:
    """Why a reachable broker refused this client, naming the config key to fix, or None.

    Called only after a client failed to bootstrap: it connects to the first server that accepts TCP,
    checks its certificate against `ssl_cafile` exactly as kafka-python does (hostname included),
    and, when that passes but the client still got nowhere with SASL, it was the login. Never puts
    a password in the message."""
    protocol = config.security_protocol
    if protocol == "PLAINTEXT":
        return None
    for server in config.bootstrap():
        host, _, port = server.rpartition(":")
        try:
            sock = socket.create_connection((host, int(port)), timeout=timeout_s)
        except OSError:
            continue
        with sock:
            if protocol.endswith("SSL"):
                cafile = config.ssl_cafile
                try:
                    context = ssl.create_default_context(cafile=cafile)
                except OSError as exc:
                    return (
                        f"kafka.ssl_cafile {cafile} cannot be read ({exc.strerror or exc}); point it at the CA bundle"
                    )
                try:
                    with context.wrap_socket(sock, server_hostname=host):
                        pass
                except ssl.SSLCertVerificationError as exc:
                    trusted = (
                        f"kafka.ssl_cafile ({cafile})" if cafile else "the system CAs (kafka.ssl_cafile is not set)"
                    )
                    return (
                        f"the broker at {server} presented a certificate that {trusted} does not trust "
                        f"({exc.verify_message}); set kafka.ssl_cafile to the CA that signed the broker's certificate"
                    )
                except (ssl.SSLError, OSError) as exc:
                    return (
                        f"the TLS handshake with {server} failed ({exc}); check kafka.security_protocol ({protocol}) "
                        "and kafka.ssl_cafile"
                    )
        if protocol.startswith("SASL"):
            return (
                f"the broker at {server} refused the SASL {config.sasl_mechanism} login of kafka.sasl_username "
                f"{config.sasl_username!r}: check kafka.sasl_password (and kafka.sasl_mechanism)"
            )
        return None
    return None


def make_producer(config: KafkaConfig, role: str, **overrides: Any) -> KafkaProducer:
    """A producer with the configured acks, batching and security. Keys and values are bytes."""
    check_crc32c()
    p = config.producer
    options = _common(config, role) | {
        "acks": p.acks,
        "linger_ms": p.linger_ms,
        "batch_size": p.batch_size,
        "compression_type": None if p.compression_type == "none" else p.compression_type,
        "max_request_size": p.max_request_size,
        "retries": p.retries,
        "delivery_timeout_ms": p.delivery_timeout_ms,
        "metrics_enabled": False,  # kafka-python's own metrics, read by nothing (vigil.kafka_io)
    }
    # Retries must not reorder a camera's records: the idempotent producer keeps order with up to
    # 5 requests in flight; without acks=all it is unavailable, so allow only one in flight.
    if p.acks == "all":
        options["enable_idempotence"] = True
    else:
        options["max_in_flight_requests_per_connection"] = 1
    options.update(overrides)
    try:
        return KafkaProducer(**options)
    except KafkaTimeoutError as exc:
        raise _unavailable(config, exc) from exc


def make_consumer(
    config: KafkaConfig, role: str, group_id: str | None, topics: Sequence[str] = (), **overrides: Any
) -> KafkaConsumer:
    """A consumer in `group_id` with manual commits: stages commit only what they have finished."""
    check_crc32c()
    c = config.consumer
    options = _common(config, role) | {
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": c.auto_offset_reset,
        "session_timeout_ms": c.session_timeout_ms,
        "heartbeat_interval_ms": c.heartbeat_interval_ms,
        "max_poll_interval_ms": c.max_poll_interval_ms,
        "max_poll_records": c.max_poll_records,
        "fetch_max_bytes": c.fetch_max_bytes,
        # A larger record than this is still returned whole (KIP-74); a small per-partition fetch
        # keeps polls short and measured faster here than 16 MiB.
        "max_partition_fetch_bytes": c.max_partition_fetch_bytes,
        "fetch_min_bytes": c.fetch_min_bytes,
        "fetch_max_wait_ms": c.fetch_max_wait_ms,
        "metrics_enabled": False,  # kafka-python's own metrics, read by nothing (vigil.kafka_io)
    }
    options.update(overrides)
    try:
        consumer = KafkaConsumer(**options)
    except KafkaTimeoutError as exc:
        raise _unavailable(config, exc) from exc
    keep_fetch_sessions_whole(consumer)
    if topics:
        subscribe(consumer, topics)
    return consumer


def gathering_fetches(config: KafkaConfig, wait_ms: int) -> dict[str, int]:
    """Consumer options for a fetch window (`detect.fetch_wait_ms`, `alerts.fetch_wait_ms`): none when 0 (a
    fetch is answered at the first record, `kafka.consumer`'s settings). Otherwise each fetch asks for more
    bytes than that many milliseconds of records hold, so the broker holds it the whole window and answers
    with all of them. A fetch costs about the same CPU in kafka-python and in the broker however few records
    it carries, and answered at the first record it carries one or two."""
    if wait_ms == 0:
        return {}
    return {"fetch_min_bytes": config.consumer.fetch_max_bytes, "fetch_max_wait_ms": wait_ms}


def subscribe(consumer: KafkaConsumer, topics: Sequence[str], listener: Any = None, timeout_s: float = 30.0) -> None:
    """Subscribe, then wait until the consumer's metadata knows every topic's partitions before the
    first poll joins the group.

    A member that joins before the metadata of a just-created topic arrives is assigned nothing, and
    kafka-python 3.0 was seen to wedge in the rejoin that follows (no coordinator found, poll
    spinning at full CPU). Only the subscribed topics' metadata is awaited (`consumer._cluster` is
    kafka-python's own cache; fetching every topic's metadata instead made later refreshes look like
    changes and caused needless rebalances).
    """
    if listener is None:
        consumer.subscribe(list(topics))
    else:
        consumer.subscribe(list(topics), listener=listener)
    cluster = consumer._cluster
    deadline = time.monotonic() + timeout_s
    while missing := [topic for topic in topics if not cluster.partitions_for_topic(topic)]:
        if time.monotonic() > deadline:
            raise KafkaUnavailableError(
                f"topics {missing} have no partitions after {timeout_s:.0f}s; create them with `vigil topics`"
            )
        cluster.request_update()
        time.sleep(0.1)


def make_admin(config: KafkaConfig) -> KafkaAdminClient:
    try:
        return KafkaAdminClient(**_common(config, "admin"))
    except KafkaTimeoutError as exc:
        raise _unavailable(config, exc) from exc


def ensure_topics(
    config: KafkaConfig, topics: TopicsConfig | Sequence[TopicConfig], layout: TopicsConfig | None = None
) -> list[str]:
    """Create the topics that do not exist yet; returns the names created. Existing topics are
    left as they are (partitions are never shrunk), and a mismatch is logged. A list of topics
    takes its replication settings from `layout` (the config's `topics`), else one replica."""
    wanted = topics.all() if isinstance(topics, TopicsConfig) else list(topics)
    settings = topics if isinstance(topics, TopicsConfig) else layout
    replication = settings.replication_factor if settings is not None else 1
    min_isr = settings.min_isr if settings is not None else 1
    admin = make_admin(config)
    try:
        existing = set(admin.list_topics())
        new = [
            NewTopic(
                name=t.name,
                num_partitions=t.partitions,
                replication_factor=replication,
                topic_configs=_topic_configs(t, config, min_isr),
            )
            for t in wanted
            if t.name not in existing
        ]
        created: list[str] = []
        for topic in new:
            try:
                admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass  # created concurrently by another vigil process: that is the goal
        for t in wanted:
            if t.name in existing:
                partitions = admin.describe_topics([t.name])[0].get("partitions", [])
                if len(partitions) != t.partitions:
                    log.warning(
                        "topic %s has %d partitions, config says %d; vigil does not change existing topics",
                        t.name, len(partitions), t.partitions,
                    )  # fmt: skip
        _wait_for_metadata(admin, [t.name for t in wanted])
        return created
    finally:
        admin.close()


def _topic_configs(topic: TopicConfig, config: KafkaConfig, min_isr: int) -> dict[str, str]:
    # Frames can be megabytes: let the topic take whatever the producer may send, whatever the
    # broker's default (1 MiB) is. With acks=all, min.insync.replicas is what makes an
    # acknowledged record survive the loss of a broker (replication 3, min ISR 2: any one).
    configs = {"max.message.bytes": str(config.producer.max_request_size), "min.insync.replicas": str(min_isr)}
    if topic.retention_ms:
        configs["retention.ms"] = str(topic.retention_ms)
    return configs


def _wait_for_metadata(admin: KafkaAdminClient, names: list[str], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        described = admin.describe_topics(names)
        if all(d.get("error_code", 0) == 0 and d.get("partitions") for d in described):
            return
        time.sleep(0.1)
    raise KafkaUnavailableError(f"topics {names} did not become available within {timeout_s:.0f}s")


class LagProbe:
    """Consumer-group lag (end offset minus committed offset, summed over partitions), the figure
    that tells whether a stage keeps up and that KEDA scales detection workers on."""

    def __init__(self, config: KafkaConfig) -> None:
        self._config = config
        self._admin: KafkaAdminClient | None = None
        self._consumer: KafkaConsumer | None = None

    def lag(self, group_id: str, topic: str) -> int | None:
        """Records of `topic` that `group_id` has not committed yet; None before its first commit."""
        if self._admin is None or self._consumer is None:
            self._admin = make_admin(self._config)
            self._consumer = make_consumer(self._config, "lag-probe", None)
        partitions = self._consumer.partitions_for_topic(topic) or set()
        wanted = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not wanted:
            return None
        try:
            committed = self._admin.list_group_offsets({group_id: None}).get(group_id, {})
            ends = self._consumer.end_offsets(wanted)
        except KafkaError as exc:
            # The group coordinator moves or loads (NotCoordinator, CoordinatorLoadInProgress) while
            # a fresh broker starts: the lag is unknown for now, not an error of the caller's.
            log.debug("lag of %s on %s unknown: %s", group_id, topic, exc)
            return None
        if not any(tp in committed for tp in wanted):
            return None if any(ends.values()) else 0
        return sum(max(0, int(ends[tp]) - (int(committed[tp].offset) if tp in committed else 0)) for tp in wanted)

    def close(self) -> None:
        if self._admin is not None:
            self._admin.close()
        if self._consumer is not None:
            self._consumer.close()
        self._admin = self._consumer = None


class DeadLetterPublisher:
    """Publishes records a stage cannot process to the dead-letter topic, counting them. `producer`
    is a KafkaProducer or anything with its `send` (e.g. `vigil.delivery.Deliveries`)."""

    def __init__(self, producer: Any, topic: str, stage: str) -> None:
        self._producer = producer
        self._topic = topic
        self._stage = stage
        self.count = 0

    def publish(self, record: KafkaRecord, reason: str, kind: str = "dead_letter") -> Any:
        """Send `record` with `reason`; returns the send future so callers can wait before committing.
        Logged once per (kind, camera) and then as a count per minute (`vigil.logs.log_repeated`);
        the camera is the record's key, which every vigil topic keys by camera."""
        letter = DeadLetter.of(record, stage=self._stage, reason=reason, time_ns=time.time_ns())
        self.count += 1
        camera = (record.key or b"")[:64].decode("utf-8", "replace") or None
        log_repeated(
            log, logging.WARNING, f"dead_letter:{kind}", camera, "dead-lettered %s/%d/%d (%s): %s",
            record.topic, record.partition, record.offset, self._stage, reason,
        )  # fmt: skip
        return self._producer.send(self._topic, key=letter.key, value=letter.value, headers=letter.to_headers())


__all__ = [
    "DeadLetterPublisher",
    "check_crc32c",
    "crc32c_implementation",
    "LagProbe",
    "Outage",
    "transient",
    "subscribe",
    "wait_for_kafka",
    "KafkaError",
    "ensure_topics",
    "make_admin",
    "gathering_fetches",
    "make_consumer",
    "make_producer",
]
