"""The embedded Apache Kafka broker: one KRaft node (broker + controller) on loopback.

`vigil broker start` runs the real Apache Kafka broker, not a Python imitation: the jars are
resolved once from Maven Central with `deploy/kafka/pom.xml` and cached per version, the storage
is formatted once, and the JVM runs detached in its own session with its pid in the state dir,
so `stop` and `status` work from any later process. Production deployments point
`kafka.bootstrap_servers` at their own cluster instead and never touch this module.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import errno
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from vigil.config import EmbeddedBrokerConfig
from vigil.errors import BrokerError

Progress = Callable[[str], None]

_MARKER = ".vigil-complete"
_LOG_TAIL_LINES = 20
# Records up to the producer's max_request_size (8 MiB by default) plus batch overhead.
_MAX_MESSAGE_BYTES = 10 * 1024 * 1024
_MVN_TIMEOUT_S = 600.0
_FORMAT_TIMEOUT_S = 120.0


def _stderr_progress(message: str) -> None:
    print(f"vigil broker: {message}", file=sys.stderr, flush=True)


def default_cache_dir() -> Path:
    """Where fetched jars live: $VIGIL_CACHE_DIR/kafka, else $XDG_CACHE_HOME/vigil/kafka, else
    ~/.cache/vigil/kafka. Read when called, never at import."""
    if root := os.environ.get("VIGIL_CACHE_DIR"):
        return Path(root).expanduser() / "kafka"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "vigil" / "kafka"


def default_deploy_dir() -> Path:
    """`deploy/kafka` of the source tree (pom.xml and log4j2.yaml); $VIGIL_KAFKA_DEPLOY_DIR overrides."""
    if override := os.environ.get("VIGIL_KAFKA_DEPLOY_DIR"):
        return Path(override).expanduser()
    return Path(__file__).resolve().parents[1] / "deploy" / "kafka"


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, base64url without padding (22 characters).

    Like Kafka's own `Uuid.randomUuid()`, never one starting with '-': the storage tool's argument
    parser would take it for an option (about 1 id in 64)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _tail(text: str, lines: int = _LOG_TAIL_LINES) -> str:
    kept = [line for line in text.splitlines() if line.strip()][-lines:]
    return "\n".join(f"    {line}" for line in kept) if kept else "    (no output)"


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Maven's generic advice after every failure; the lines before it say what actually went wrong.
_MVN_BOILERPLATE = ("re-run maven", "to see the full stack trace", "for more information about the errors", "[help ")


def _mvn_summary(output: str) -> str:
    useful = []
    for line in output.splitlines():
        line = _ANSI.sub("", line)
        text = line.removeprefix("[ERROR]").strip().lower()
        if text and not text.startswith(_MVN_BOILERPLATE):
            useful.append(line)
    return _tail("\n".join(useful), 15)


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


def _accepts_tcp(host: str, port: int, timeout_s: float = 0.5) -> bool:
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
        progress: Progress | None = _stderr_progress,
    ) -> None:
        self.config = config
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

    def _say(self, message: str) -> None:
        if self._progress is not None:
            self._progress(message)

    # ------------------------------------------------------------------------------------ fetch

    def fetch(self) -> Path:
        """The folder of broker jars for the configured Kafka version, fetched with Maven on first use."""
        target = self.jars_dir
        if (target / _MARKER).is_file():
            return target
        pom = self.deploy_dir / "pom.xml"
        version = self.config.kafka_version
        fix = (
            "or point vigil at an existing Kafka cluster instead by setting kafka.bootstrap_servers "
            "(e.g. [kafka-1:9092]) in the config"
        )
        if not pom.is_file():
            raise BrokerError(
                f"{pom} not found: the embedded broker needs vigil's source tree (deploy/kafka), or set "
                f"$VIGIL_KAFKA_DEPLOY_DIR to a folder holding pom.xml and log4j2.yaml; {fix}"
            )
        mvn = shutil.which(self._mvn)
        if mvn is None:
            raise BrokerError(
                f"Maven ({self._mvn}) is not on PATH; it is needed once to fetch the Apache Kafka {version} jars "
                f"into {target}. Install Maven (e.g. apt-get install maven), or copy the jars there and create "
                f"{target / _MARKER}; {fix}"
            )
        self._say(f"fetching Apache Kafka {version} jars from Maven Central into {target} ...")
        started = time.monotonic()
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{version}.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        command = [
            mvn, "-q", "-B", "-Dstyle.color=never", "-f", str(pom), "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}", "-DincludeScope=runtime", f"-Dkafka.version={version}",
        ]  # fmt: skip
        try:
            result = subprocess.run(command, capture_output=True, timeout=_MVN_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise BrokerError(
                f"mvn did not finish fetching Kafka {version} within {_MVN_TIMEOUT_S:.0f}s; {fix}"
            ) from exc
        output = (result.stdout + result.stderr).decode("utf-8", "replace")
        jars = sorted(staging.glob("*.jar")) if staging.is_dir() else []
        if result.returncode != 0 or not any(j.name == f"kafka_2.13-{version}.jar" for j in jars):
            shutil.rmtree(staging, ignore_errors=True)
            raise BrokerError(
                f"mvn failed to fetch Apache Kafka {version} (exit {result.returncode}); its last lines:\n"
                f"{_mvn_summary(output)}\nCheck network access to Maven Central and kafka.embedded.kafka_version; {fix}"
            )
        (staging / _MARKER).write_text("\n".join(j.name for j in jars) + "\n")
        try:
            staging.rename(target)
        except OSError:
            # Another process completed the same fetch first; its copy is as good as ours.
            shutil.rmtree(staging, ignore_errors=True)
            if not (target / _MARKER).is_file():
                raise
        self._say(f"fetched {len(jars)} jars in {time.monotonic() - started:.1f}s")
        return target

    # ------------------------------------------------------------------------------------ format

    def server_properties(self) -> str:
        c = self.config
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{c.host}:{c.controller_port}",
            "listeners": f"PLAINTEXT://{c.host}:{c.port},CONTROLLER://{c.host}:{c.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{c.host}:{c.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            # A single node: every internal topic must make do with one replica.
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
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
        return "".join(f"{key}={value}\n" for key, value in settings.items())

    def _java_command(self, jars: Path, main_class: str, *args: str, heap_mb: int) -> list[str]:
        log4j = self.deploy_dir / "log4j2.yaml"
        return [
            self._java, f"-Xmx{heap_mb}m", "-Xms128m", "-XX:+UseG1GC", "-XX:+ExitOnOutOfMemoryError",
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
            jars, "kafka.tools.StorageTool", "format", f"--cluster-id={new_cluster_id()}", "-c", str(self.properties_file),
            heap_mb=256,
        )  # fmt: skip
        try:
            result = subprocess.run(command, capture_output=True, timeout=_FORMAT_TIMEOUT_S, check=False)
        except FileNotFoundError as exc:
            raise BrokerError(f"{self._java} not found: the Kafka broker needs Java 17 or later on PATH") from exc
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"formatting Kafka storage took over {_FORMAT_TIMEOUT_S:.0f}s") from exc
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode("utf-8", "replace")
            raise BrokerError(f"formatting Kafka storage in {self.data_dir} failed:\n{_tail(output)}")
        return True

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
        listening = _accepts_tcp(self.config.host, self.config.port)
        return BrokerStatus(True, pid, self.bootstrap, rss_mb, uptime, self.state_dir, listening)

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        try:
            return _tail(self.log_file.read_text(errors="replace"), lines)
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
        with self._lock():
            if self._running_pid() is not None:
                self.wait_ready(max(1.0, deadline - time.monotonic()))
                return self.bootstrap
            self.pid_file.unlink(missing_ok=True)  # stale: the process it names is gone
            c = self.config
            for port, key in ((c.port, "port"), (c.controller_port, "controller_port")):
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
            try:
                self.wait_ready(max(1.0, deadline - time.monotonic()))
            except BrokerError:
                self._terminate(self._process.pid, 10.0)
                self.pid_file.unlink(missing_ok=True)
                raise
            return self.bootstrap

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
            if _accepts_tcp(self.config.host, self.config.port):
                problem = self._metadata_problem()
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
                bootstrap_timeout_ms=2000, request_timeout_ms=5000,
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


# ---------------------------------------------------------------------------------------------- CLI


def cli_main(args: argparse.Namespace) -> int:
    """`vigil broker fetch|start|stop|status`."""
    from vigil.settings import resolve_config

    config = resolve_config(args.config, args.log_level)
    broker = EmbeddedBroker(config.kafka.embedded)
    external = not config.kafka.uses_embedded_broker
    servers = ",".join(config.kafka.bootstrap_servers)
    if args.action == "fetch":
        print(broker.fetch())
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
        bootstrap = broker.start(args.timeout)
        status = broker.status()
        rss = f"{status.rss_mb:.0f} MB" if status.rss_mb is not None else "unknown"
        print(
            f"Kafka broker ready at {bootstrap} in {time.monotonic() - started:.1f}s "
            f"(pid {status.pid}, RSS {rss}, state {broker.state_dir})"
        )
        return 0
    if args.action == "stop":
        print("stopped" if broker.stop(args.timeout) else f"not running (state {broker.state_dir})")
        return 0
    status = broker.status()
    if external:
        print(f"note: this config uses the Kafka cluster at {servers}; the embedded broker is not used by it")
    print(status.describe())
    return 0 if status.running else 3
