"""`/metrics`, `/healthz` and `/readyz` of a vigil process, on a small stdlib HTTP server.

- `/metrics`: Prometheus text exposition of the default `prometheus_client` registry, plus the
  process's readiness as gauges (`vigil_ready`, `vigil_component_ready{component}`), so alerting
  rules see what `/readyz` says.
- `/healthz`: 200 `ok` while the process serves at all (liveness: restart only a hung process).
- `/readyz`: 200 with the JSON `HealthReport` when every part reported ok, else 503 with the same
  JSON naming what is not ready (readiness: keep traffic and dashboards honest while Kafka is away).

    server = MetricsServer(config.metrics, health, port_offset=index)
    server.start()          # binds and serves from a daemon thread
    ...
    server.stop()           # frees the port
"""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import cast

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Gauge, generate_latest

from vigil.config import MetricsConfig
from vigil.errors import ConfigError, ConfigIssue
from vigil.health import Health, HealthReport

log = logging.getLogger(__name__)


def readiness_metrics(report: HealthReport) -> bytes:
    """The readiness of this process in the text exposition format (a registry per scrape: the
    values come from `Health`, several servers may run in one process, e.g. in tests)."""
    registry = CollectorRegistry()
    Gauge("vigil_ready", "1 while /readyz answers 200: every part of the process is ok", registry=registry).set(
        1.0 if report.ready else 0.0
    )
    parts = Gauge(
        "vigil_component_ready", "1 per part of the process that is ok (kafka, model, camera:ID)", ["component"],
        registry=registry,
    )  # fmt: skip
    for component in report.components:
        parts.labels(component=component.name).set(1.0 if component.ok else 0.0)
    return generate_latest(registry)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    health: Health

    def __init__(self, address: tuple[str, int], health: Health) -> None:
        # An IPv6 literal such as "::" needs an AF_INET6 socket; the class attribute is read at bind.
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.health = health
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server_version = "vigil"

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            report = cast(_Server, self.server).health.ready()
            self._reply(200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY) + readiness_metrics(report))
        elif path == "/healthz":
            self._reply(200, "text/plain; charset=utf-8", b"ok\n")
        elif path == "/readyz":
            report = cast(_Server, self.server).health.ready()
            self._reply(200 if report.ready else 503, "application/json", report.to_json().encode() + b"\n")
        else:
            self._reply(404, "text/plain; charset=utf-8", b"not found; try /metrics, /healthz or /readyz\n")

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        # Probes and scrapes arrive every few seconds; the stdlib would print each one to stderr.
        log.debug("%s " + format, self.address_string(), *args)


class MetricsServer:
    """Serves the endpoints for one process. Port = `config.port + port_offset` (0: any free port),
    so several processes on one host (e.g. `detect` workers) each take the next port."""

    def __init__(self, config: MetricsConfig, health: Health, port_offset: int = 0) -> None:
        self.config = config
        self.health = health
        self.port_offset = port_offset
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int | None:
        """The bound port once started (the real one when 0 was asked for), else None."""
        return int(self._server.server_address[1]) if self._server is not None else None

    @property
    def url(self) -> str | None:
        if self._server is None:
            return None
        host = self.config.host if ":" not in self.config.host else f"[{self.config.host}]"
        return f"http://{host}:{self.port}"

    def _wanted_port(self) -> int:
        if self.config.port == 0:
            return 0
        port = self.config.port + self.port_offset
        if not 0 < port <= 65535:
            raise ConfigError(
                "metrics",
                [ConfigIssue("metrics.port", f"port {self.config.port} + offset {self.port_offset} is past 65535")],
            )
        return port

    def start(self) -> None:
        """Bind and serve from a daemon thread. Does nothing when `metrics.enabled` is false or
        when already started. A port in use raises `ConfigError` naming `metrics.port`."""
        if self._server is not None:
            return
        if not self.config.enabled:
            log.info("metrics server disabled (metrics.enabled: false); no /metrics, /healthz or /readyz")
            return
        port = self._wanted_port()
        try:
            server = _Server((self.config.host, port), self.health)
        except OSError as exc:
            raise ConfigError(
                "metrics",
                [
                    ConfigIssue(
                        "metrics.port",
                        f"cannot listen on {self.config.host}:{port}: {exc.strerror or exc}; "
                        "choose a free port (or 0 for any) or another metrics.host",
                    )
                ],
            ) from exc
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name=f"metrics:{self.port}", daemon=True)
        self._thread.start()
        log.info("serving %s/metrics, /healthz and /readyz", self.url)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop serving and close the socket so the port is free again. Safe to call twice."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout_s)

    def __enter__(self) -> MetricsServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()


def serve_process_metrics(
    config: MetricsConfig, health: Health, port: int | None = None, attempts: int = 16
) -> MetricsServer:
    """Start the endpoints for one vigil process and return the running server.

    `port` (from `vigil --metrics-port`) pins the port, as a supervisor such as `vigil up` does.
    Otherwise the first free port from `metrics.port` is taken, so several workers started by hand
    on one host do not collide; the chosen URL is logged."""
    if port is not None:
        server = MetricsServer(config.model_copy(update={"port": port}), health)
        server.start()
        return server
    last_error: ConfigError | None = None
    for offset in range(1 if config.port == 0 else attempts):
        server = MetricsServer(config, health, port_offset=offset)
        try:
            server.start()
        except ConfigError as exc:
            last_error = exc
            continue
        return server
    assert last_error is not None
    raise last_error
