"""The embedded Apache Kafka broker: one KRaft node (broker + controller) on loopback.

`vigil broker start` runs the real Apache Kafka broker, not a Python imitation: the jars are
resolved once from Maven Central (`vigil.kafka_jars`), the storage is formatted once, and the JVM
runs detached in its own session with its pid in the state dir, so `stop` and `status` work from
any later process. `vigil.cluster` runs several of these nodes as one cluster. Production
deployments point `kafka.bootstrap_servers` at their own cluster instead and never touch this module.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from vigil.config import EmbeddedBrokerConfig
from vigil.errors import BrokerError
from vigil.kafka_jars import (
    LOG_TAIL_LINES,
    Progress,
    default_cache_dir,
    default_deploy_dir,
    fetch_jars,
    new_cluster_id,
    stderr_progress,
    tail,
)

# Records up to the producer's max_request_size (8 MiB by default) plus batch overhead.
_MAX_MESSAGE_BYTES = 10 * 1024 * 1024
_FORMAT_TIMEOUT_S = 120.0
_OFFSETS_PARTITIONS = 8
SCRAM_MECHANISM = "SCRAM-SHA-512"


@dataclass(frozen=True)
class BrokerSecurity:
    """A SASL_SSL client listener instead of PLAINTEXT: TLS with a PEM key and certificate chain,
    and SCRAM-SHA-512 users created when the storage is formatted (`kafka-storage --add-scram`).
    The broker talks to itself (inter-broker) as `inter_broker_user` over the same listener."""

    keystore_pem: Path  # the broker's private key (unencrypted PKCS#8) followed by its certificate chain
    truststore_pem: Path  # the CA that signed it
    users: Mapping[str, str] = field(repr=False)  # user name -> password
    inter_broker_user: str = "broker"

    def __post_init__(self) -> None:
        if self.inter_broker_user not in self.users:
            raise BrokerError(f"inter_broker_user {self.inter_broker_user!r} must be one of the SCRAM users")

    def client_options(self) -> dict[str, Any]:
        """kafka-python options of a client that connects as the inter-broker user (the readiness probe)."""
        return {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": SCRAM_MECHANISM,
            "sasl_plain_username": self.inter_broker_user,
            "sasl_plain_password": self.users[self.inter_broker_user],
            "ssl_cafile": str(self.truststore_pem),
        }


@dataclass(frozen=True)
class NodeRole:
    """This node's place in a cluster (`vigil.cluster`): its id, the controller quorum, the cluster
    id every node is formatted with, and the replication of Kafka's internal topics."""

    node_id: int = 1
    voters: str | None = None  # controller.quorum.voters; None: this node alone
    cluster_id: str | None = None  # None: a new id at format time
    internal_replication: int = 1
    # How fast a cluster recovers from a killed node (`kafka.embedded.session_timeout_ms`,
    # `controller_timeout_ms`); None keeps Kafka's defaults (9 s and 2 s), as for a node alone.
    session_timeout_ms: int | None = None
    controller_timeout_ms: int | None = None
    # "broker,controller" (combined), or "broker" / "controller" when the cluster runs its
    # controllers apart (`kafka.embedded.controllers`).
    process_roles: str = "broker,controller"

    @property
    def broker(self) -> bool:
        return "broker" in self.process_roles.split(",")

    @property
    def controller(self) -> bool:
        return "controller" in self.process_roles.split(",")


def _port_in_use(host: str, port: int) -> bool:
    """True when something already listens on host:port. SO_REUSEADDR so the TIME_WAIT sockets
    of a broker that just stopped do not count, exactly as the JVM's own bind ignores them."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise BrokerError(f"cannot bind {host}:{port} ({exc}); check kafka.embedded.host") from exc
    return False


def accepts_tcp(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def _proc_field(pid: int, name: str) -> str | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


@dataclass(frozen=True)
class BrokerStatus:
    """What `vigil broker status` reports. `listening` means the client port accepts connections."""

    running: bool
    pid: int | None
    bootstrap: str
    rss_mb: float | None
    uptime_s: float | None
    state_dir: Path
    listening: bool = False

    def describe(self) -> str:
        if not self.running:
            return f"not running (state {self.state_dir})"
        rss = f"{self.rss_mb:.0f} MB" if self.rss_mb is not None else "unknown"
        up = f"{self.uptime_s:.0f}s" if self.uptime_s is not None else "unknown"
        answer = "listening" if self.listening else "not listening yet"
        return f"running at {self.bootstrap} ({answer}), pid {self.pid}, RSS {rss}, up {up}, state {self.state_dir}"


class EmbeddedBroker:
    """One Apache Kafka node in KRaft mode (broker and controller in one JVM) on loopback.

    All paths are resolved here but nothing is read or written until a method is called.
    """

    def __init__(
        self,
        config: EmbeddedBrokerConfig,
        *,
        state_dir: Path | None = None,
        cache_dir: Path | None = None,
        deploy_dir: Path | None = None,
        mvn: str = "mvn",
        java: str = "java",
        progress: Progress | None = stderr_progress,
        role: NodeRole | None = None,
        security: BrokerSecurity | None = None,
    ) -> None:
        self.config = config
        self.role = role or NodeRole()
        self.security = security
        self.state_dir = (state_dir or Path(config.state_dir)).absolute()
        self._cache_dir = cache_dir
        self._deploy_dir = deploy_dir
        self._mvn = mvn
        self._java = java
        self._progress = progress
        # Kept when this process started the JVM, so stop() can reap it (no zombie left behind).
        self._process: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------------------------ paths

    @property
    def bootstrap(self) -> str:
        return f"{self.config.host}:{self.config.port}"

    @property
    def listen_port(self) -> int:
        """The port that tells this node is up: its client port, or a controller's own port."""
        return self.config.port if self.role.broker else self.config.controller_port

    @property
    def jars_dir(self) -> Path:
        return (self._cache_dir or default_cache_dir()) / self.config.kafka_version

    @property
    def deploy_dir(self) -> Path:
        return self._deploy_dir or default_deploy_dir()

    @property
    def log_file(self) -> Path:
        return self.state_dir / "broker.log"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "broker.pid"

    @property
    def properties_file(self) -> Path:
        return self.state_dir / "server.properties"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / "data"

    def client_options(self) -> dict[str, Any]:
        """Security options a kafka-python client needs for this broker's client listener."""
        return {} if self.security is None else self.security.client_options()

    def _say(self, message: str) -> None:
        if self._progress is not None:
            self._progress(message)

    # ------------------------------------------------------------------------------------ fetch

    def fetch(self) -> Path:
        """The folder of broker jars for the configured Kafka version, fetched with Maven on first use."""
        return fetch_jars(self.jars_dir, self.config.kafka_version, self.deploy_dir, self._mvn, self._progress)

    # ------------------------------------------------------------------------------------ format

    @property
    def protocol(self) -> str:
        return "PLAINTEXT" if self.security is None else "SASL_SSL"

    def server_properties(self) -> str:
        c, role = self.config, self.role
        internal = str(role.internal_replication)
        internal_isr = str(max(1, role.internal_replication - 1))
        client = self.protocol
        listeners = []
        if role.broker:
            listeners.append(f"{client}://{c.host}:{c.port}")
        if role.controller:
            listeners.append(f"CONTROLLER://{c.host}:{c.controller_port}")
        settings = {
            "process.roles": role.process_roles,
            "node.id": str(role.node_id),
            "controller.quorum.voters": role.voters or f"{role.node_id}@{c.host}:{c.controller_port}",
            "listeners": ",".join(listeners),
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": f"{client}:{client},CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            # Kafka's internal topics get as many replicas as there are nodes (one when alone).
            "offsets.topic.replication.factor": internal,
            # Consumer offsets in 8 partitions, not Kafka's 50, for a handful of groups: the first
            # group join creates them all, and fencing a dead node rewrites every partition it
            # replicates (57 instead of 15 took the controller 2.1 s at load 25 on two cores).
            "offsets.topic.num.partitions": str(_OFFSETS_PARTITIONS),
            "transaction.state.log.replication.factor": internal,
            "transaction.state.log.min.isr": internal_isr,
            "share.coordinator.state.topic.replication.factor": internal,
            "share.coordinator.state.topic.min.isr": internal_isr,
            # Consumers join at once instead of waiting 3 s for more members (tests, restarts).
            "group.initial.rebalance.delay.ms": "0",
            "num.partitions": "1",
            # vigil creates its topics with the configured partitions (`ensure_topics`); a typo in a
            # topic name must fail loudly rather than create a one-partition topic silently.
            "auto.create.topics.enable": "false",
            "message.max.bytes": str(_MAX_MESSAGE_BYTES),
            "replica.fetch.max.bytes": str(_MAX_MESSAGE_BYTES),
            # A development broker on someone's disk: keep a day of data, in modest segments.
            "log.retention.hours": "24",
            "log.segment.bytes": str(128 * 1024 * 1024),
            "log.retention.check.interval.ms": "60000",
        }
        if role.broker:
            settings["advertised.listeners"] = f"{client}://{c.host}:{c.port}"
            settings["inter.broker.listener.name"] = client
        if role.session_timeout_ms is not None:
            # Until the controller fences a dead node, every acks=all write to a partition it
            # replicates waits: it is still in the ISR. This is most of the stall a leader loss costs.
            settings["broker.session.timeout.ms"] = str(role.session_timeout_ms)
            settings["broker.heartbeat.interval.ms"] = str(max(100, role.session_timeout_ms // 8))
        if role.controller_timeout_ms is not None:
            # A killed node that was the active controller costs this, an election, and then a whole
            # session timeout more (the new controller starts every node's session afresh).
            half = str(max(100, role.controller_timeout_ms // 2))
            settings["controller.quorum.fetch.timeout.ms"] = str(role.controller_timeout_ms)
            settings["controller.quorum.election.timeout.ms"] = half
            settings["controller.quorum.election.backoff.max.ms"] = half
        if self.security is not None:
            settings |= self._security_properties(self.security)
        return "".join(f"{key}={value}\n" for key, value in settings.items())

    @staticmethod
    def _security_properties(security: BrokerSecurity) -> dict[str, str]:
        user = security.inter_broker_user
        password = security.users[user].replace("\\", "\\\\").replace('"', '\\"')
        jaas = (
            f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{user}" password="{password}";'
        )
        return {
            "sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
            # A password type: Kafka logs it as [hidden].
            f"listener.name.sasl_ssl.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(security.keystore_pem),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(security.truststore_pem),
        }

    def _java_command(self, jars: Path, main_class: str, *args: str, heap_mb: int) -> list[str]:
        # `jvm_options` (serial GC, C1 only by default): on a small shared machine the broker's JIT
        # compiler threads and G1's concurrent threads cost more CPU than the requests it serves
        # (YOLOX-Nano stack, 2 cores: the C2 and C1 compilers were 40 % of the broker's CPU in the
        # steady window, still compiling minutes after start). C1 code is slower, but a broker
        # moving a few MB/s spends its time in system calls, not in compiled Java.
        log4j = self.deploy_dir / "log4j2.yaml"
        return [
            self._java, f"-Xmx{heap_mb}m", "-Xms128m", *self.config.jvm_options, "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true", f"-Dlog4j2.configurationFile={log4j.absolute()}",
            "-cp", f"{jars}/*", main_class, *args,
        ]  # fmt: skip

    def format(self, jars: Path | None = None) -> bool:
        """Write server.properties and format the storage unless already formatted. True if formatted now."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.properties_file.write_text(self.server_properties())
        if (self.data_dir / "meta.properties").is_file():
            return False
        jars = jars or self.fetch()
        self._say(f"formatting broker storage in {self.data_dir} ...")
        command = self._java_command(
            jars, "kafka.tools.StorageTool", "format", f"--cluster-id={self.role.cluster_id or new_cluster_id()}",
            "-c", str(self.properties_file), *self._scram_arguments(), heap_mb=256,
        )  # fmt: skip
        try:
            result = subprocess.run(command, capture_output=True, timeout=_FORMAT_TIMEOUT_S, check=False)
        except FileNotFoundError as exc:
            raise BrokerError(f"{self._java} not found: the Kafka broker needs Java 17 or later on PATH") from exc
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"formatting Kafka storage took over {_FORMAT_TIMEOUT_S:.0f}s") from exc
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode("utf-8", "replace")
            raise BrokerError(f"formatting Kafka storage in {self.data_dir} failed:\n{tail(output)}")
        return True

    def _scram_arguments(self) -> list[str]:
        """`--add-scram` for every user: their credentials are in the cluster's metadata from the start."""
        if self.security is None:
            return []
        args: list[str] = []
        for user, password in self.security.users.items():
            args += ["--add-scram", f"{SCRAM_MECHANISM}=[name={user},password={password}]"]
        return args

    # ------------------------------------------------------------------------------------ process

    def _read_pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def _is_ours(self, pid: int) -> bool:
        """Alive, not a zombie, and the Kafka JVM of this state dir (not a recycled pid)."""
        if self._process is not None and self._process.pid == pid:
            # Our own child: poll() is exact, and /proc/<pid>/cmdline can be briefly empty while
            # the java launcher re-executes itself at start-up.
            return self._process.poll() is None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # exists but belongs to another user: fall through to the cmdline check
        state = _proc_field(pid, "State")
        if state is not None and state.startswith(("Z", "X")):
            return False
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return not Path("/proc").is_dir()  # no procfs (macOS): trust the pid file
        return b"kafka.Kafka" in cmdline and str(self.properties_file).encode() in cmdline

    def _running_pid(self) -> int | None:
        pid = self._read_pid()
        return pid if pid is not None and self._is_ours(pid) else None

    def status(self) -> BrokerStatus:
        pid = self._running_pid()
        if pid is None:
            return BrokerStatus(False, None, self.bootstrap, None, None, self.state_dir)
        rss = _proc_field(pid, "VmRSS")  # "123456 kB"
        rss_mb = int(rss.split()[0]) / 1024 if rss else None
        try:
            uptime: float | None = time.time() - self.pid_file.stat().st_mtime
        except OSError:
            uptime = None
        listening = accepts_tcp(self.config.host, self.listen_port)
        return BrokerStatus(True, pid, self.bootstrap, rss_mb, uptime, self.state_dir, listening)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            return tail(self.log_file.read_text(errors="replace"), lines)
        except OSError:
            return "    (no broker log)"

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise start/stop of the same state dir across processes (two `vigil broker start`)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / ".lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def start(self, timeout_s: float = 90.0) -> str:
        """Start the broker (fetching and formatting first if needed) and wait until it answers.
        Returns the bootstrap address. A broker of this state dir that already runs is reused."""
        deadline = time.monotonic() + timeout_s
        launched = self.launch()
        try:
            self.wait_ready(max(1.0, deadline - time.monotonic()))
        except BrokerError:
            if launched and self._process is not None:
                self._terminate(self._process.pid, 10.0)
                self.pid_file.unlink(missing_ok=True)
            raise
        return self.bootstrap

    def launch(self) -> bool:
        """Start the JVM (fetching and formatting first if needed) without waiting for it to answer,
        as a cluster starts all its nodes before any can answer. False if it already runs."""
        with self._lock():
            if self._running_pid() is not None:
                return False
            self.pid_file.unlink(missing_ok=True)  # stale: the process it names is gone
            c = self.config
            ports = [(c.port, "port")] if self.role.broker else []
            ports += [(c.controller_port, "controller_port")] if self.role.controller else []
            for port, key in ports:
                if _port_in_use(c.host, port):
                    raise BrokerError(
                        f"{c.host}:{port} (kafka.embedded.{key}) is already in use by another process, not the "
                        f"embedded broker of {self.state_dir}. Stop that process or choose another "
                        f"kafka.embedded.{key}; if it is a Kafka broker you want to use, set "
                        f"kafka.bootstrap_servers: ['{c.host}:{port}'] instead"
                    )
            jars = self.fetch()
            self.format(jars)
            if self.log_file.exists():
                self.log_file.replace(self.log_file.with_suffix(".log.1"))
            command = self._java_command(jars, "kafka.Kafka", str(self.properties_file), heap_mb=c.heap_mb)
            self._say(f"starting Apache Kafka {c.kafka_version} at {self.bootstrap} (log {self.log_file}) ...")
            with open(self.log_file, "wb") as log:
                try:
                    # Own session: the broker outlives this command and ignores the terminal's Ctrl-C.
                    self._process = subprocess.Popen(
                        command, cwd=self.state_dir, stdin=subprocess.DEVNULL, stdout=log,
                        stderr=subprocess.STDOUT, start_new_session=True,
                    )  # fmt: skip
                except FileNotFoundError as exc:
                    raise BrokerError(f"{self._java} not found: the Kafka broker needs Java 17 or later") from exc
            self.pid_file.write_text(f"{self._process.pid}\n")
            return True

    def wait_ready(self, timeout_s: float = 90.0) -> None:
        """Wait until the broker answers a metadata request and lists itself unfenced."""
        started = time.monotonic()
        deadline = started + timeout_s
        next_note = started + 5.0
        last_problem = "the client port never accepted a connection"
        while True:
            pid = self._running_pid()
            if pid is None:
                raise BrokerError(
                    f"the Kafka broker ({self.state_dir}) exited during start-up; last lines of {self.log_file}:\n"
                    f"{self.log_tail()}"
                )
            if accepts_tcp(self.config.host, self.listen_port):
                # A controller of its own has no client listener: accepting connections is all it shows.
                problem = self._metadata_problem() if self.role.broker else None
                if problem is None:
                    return
                last_problem = problem
            now = time.monotonic()
            if now >= deadline:
                raise BrokerError(
                    f"the Kafka broker at {self.bootstrap} did not become ready within {timeout_s:.0f}s "
                    f"({last_problem}); last lines of {self.log_file}:\n{self.log_tail()}"
                )
            if now >= next_note:
                self._say(f"waiting for the broker to answer ({now - started:.0f}s) ...")
                next_note = now + 5.0
            time.sleep(0.25)

    def _metadata_problem(self) -> str | None:
        """None when a metadata request answers with this node unfenced, else what was wrong."""
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap, client_id="vigil-broker-probe",
                bootstrap_timeout_ms=2000, request_timeout_ms=5000, **self.client_options(),
            )  # fmt: skip
        except KafkaError as exc:
            return f"metadata request failed: {exc}"
        try:
            brokers = admin.describe_cluster().get("brokers", [])
        except KafkaError as exc:
            return f"describe_cluster failed: {exc}"
        finally:
            admin.close()
        if not any(not b.get("is_fenced", False) for b in brokers):
            return "the broker has not registered with its controller yet"
        return None

    def _terminate(self, pid: int, timeout_s: float) -> bool:
        """SIGTERM (controlled shutdown), then SIGKILL after timeout_s. True if it had to kill."""
        self._signal(pid, signal.SIGTERM)
        if self._wait_gone(pid, timeout_s):
            return False
        self._say(f"broker pid {pid} ignored SIGTERM for {timeout_s:.0f}s; killing it")
        self._signal(pid, signal.SIGKILL)
        if not self._wait_gone(pid, 10.0):
            raise BrokerError(f"broker pid {pid} survived SIGKILL")
        return True

    @staticmethod
    def _signal(pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)

    def _wait_gone(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.pid == pid:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._process.wait(timeout=0.2)
            if not self._is_ours(pid):
                return True
            time.sleep(0.1)
        return not self._is_ours(pid)

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the broker of this state dir. True if one was running."""
        with self._lock():
            pid = self._running_pid()
            if pid is None:
                self.pid_file.unlink(missing_ok=True)
                return False
            self._say(f"stopping the broker (pid {pid}) ...")
            self._terminate(pid, timeout_s)
            self.pid_file.unlink(missing_ok=True)
            self._process = None
            return True
