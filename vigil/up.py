"""`vigil up`: the whole stack on one machine, and `vigil status`.

CLI wiring like `vigil/cli.py`: it runs the stages as child processes (`vigil ingest`, N × `vigil
detect`, `vigil alerts`, `vigil web`), exactly as a deployment runs them, and never imports them. The embedded
broker is started when the config names no Kafka cluster, and stopped again only if `up` started
it. Children that crash are restarted with backoff; Ctrl-C (or SIGTERM) stops them all, escalating
to SIGKILL, so no process is left behind.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import IO

from vigil.broker import EmbeddedBroker
from vigil.cluster import EmbeddedCluster, embedded_kafka
from vigil.config import VigilConfig
from vigil.errors import VigilError
from vigil.kafka import LagProbe, ensure_topics
from vigil.processes import free_port, port_free, signal_group
from vigil.progress import Progress, startup_block, status_report
from vigil.scrape import Sample, scrape
from vigil.settings import resolve_config

log = logging.getLogger(__name__)
STATE_FILE = Path(".state") / "up.json"


@dataclass
class Service:
    name: str
    argv: list[str]
    port: int
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    finished: bool = False  # exited 0 by itself (ingest after its recordings ended)
    started_at: float = 0.0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ended(self) -> bool:
        """Finished, or ingest exited 0 and the supervisor has not seen it yet (the progress line may come
        first: it said 'ingest not answering' for a tick after the recordings ended)."""
        exited_ok = self.process is not None and self.process.poll() == 0
        return self.finished or (self.name == "ingest" and exited_ok)


def runs_web(config: VigilConfig) -> bool:
    """The review service runs when enabled and its extra (fastapi, uvicorn, av) is installed."""
    return config.web.enabled and all(importlib.util.find_spec(m) for m in ("fastapi", "uvicorn", "av"))


def plan_services(config: VigilConfig, config_path: str, workers: int, log_level: str) -> list[Service]:
    """The child processes of the stack, each with its own metrics port (from metrics.port on)."""
    names = []
    if any(c.enabled for c in config.cameras):
        names.append(("ingest", ["ingest"]))
    names += [(f"detect-{i + 1}", ["detect"]) for i in range(workers)]
    names.append(("alerts", ["alerts"]))
    if runs_web(config):
        names.append(("web", ["web"]))
    elif config.web.enabled:
        print("web: not started (web.enabled): install the `web` extra, pip install 'vigil[web]'", file=sys.stderr)
    services, port = [], config.metrics.port
    for name, command in names:
        if config.metrics.port == 0:
            chosen = free_port()
        else:
            while not port_free(port):
                port += 1
            chosen, port = port, port + 1
        argv = [sys.executable, "-m", "vigil", "--log-level", log_level, "--metrics-port", str(chosen)]
        services.append(Service(name, [*argv, *command, "--config", config_path], chosen))
    return services


def _pump(prefix: str, stream: IO[bytes]) -> None:
    """Copy a child's log lines to our stderr, prefixed with the service name."""
    for raw in iter(stream.readline, b""):
        sys.stderr.write(f"{prefix:>9} | {raw.decode('utf-8', 'replace')}")
    stream.close()


def stack_lags(config: VigilConfig, probe: LagProbe) -> dict[str, int | None]:
    """Lag of each consumer group of the stack: detection workers, aggregator, webhook endpoints."""
    topics, alerts = config.topics, config.alerts
    lags = {
        "frames": probe.lag(config.detect.group_id, topics.frames.name),
        "detections": probe.lag(alerts.group_id, topics.detections.name),
    }
    for hook in alerts.webhooks:
        lags[f"webhook {hook.name}"] = probe.lag(f"{alerts.group_id}.webhook.{hook.name}", topics.alerts.name)
    if runs_web(config):
        lags["web"] = probe.lag(config.web.group_id, topics.alerts.name)
    return lags


def all_done(services: list[Service], samples: dict[str, Sample], lags: dict[str, int | None]) -> bool:
    """True once the recordings ended, every consumer group is drained and the aggregator holds no
    open alert: its idle sweep ends those `end_after_s` after the last frame, and the `ended`
    events must be delivered too (the webhook lags are read after this scrape, so they count them)."""
    ingest_done = all(s.finished for s in services if s.name == "ingest")
    drained = all(v == 0 for v in lags.values())
    alerts = samples.get("alerts")
    settled = alerts is not None and alerts.ok and alerts.get("vigil_alerts_cameras_with_open_alerts") == 0
    return ingest_done and drained and settled


class Stack:
    def __init__(self, config: VigilConfig, config_path: str, workers: int, log_level: str) -> None:
        self.config = config
        self.config_path = config_path
        self.services = plan_services(config, config_path, workers, log_level)
        self.stop_event = threading.Event()
        self.broker: EmbeddedBroker | EmbeddedCluster | None = None
        self.started_broker = False

    def start(self) -> None:
        if self.config.kafka.uses_embedded_broker:
            self.broker = embedded_kafka(self.config.kafka.embedded)
            self.started_broker = not self.broker.status().running
            print(f"kafka: {'starting' if self.started_broker else 'using'} the embedded broker", file=sys.stderr)
            self.broker.start()
        created = ensure_topics(self.config.kafka, self.config.topics)
        if created:
            print(f"kafka: created topics {', '.join(created)}", file=sys.stderr)
        for service in self.services:
            self._spawn(service)
        if any(s.name == "web" for s in self.services):
            web = self.config.web
            host = "127.0.0.1" if web.host in ("0.0.0.0", "::") else web.host
            print(f"web: console and API on http://{host}:{web.port}/", file=sys.stderr)
        STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
        STATE_FILE.write_text(
            json.dumps(
                {
                    "config": self.config_path,
                    "services": [
                        {"name": s.name, "url": s.url, "pid": s.process.pid if s.process else None}
                        for s in self.services
                    ],
                }
            )
        )

    def _spawn(self, service: Service) -> None:
        # A session of its own: the terminal's Ctrl-C reaches only `up`, which stops children in order.
        process = subprocess.Popen(
            service.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
        )
        service.process = process
        service.started_at = time.monotonic()
        assert process.stdout is not None
        threading.Thread(target=_pump, args=(service.name, process.stdout), daemon=True).start()
        log.debug("started %s (pid %d, metrics %s)", service.name, process.pid, service.url)

    def supervise(self) -> str | None:
        """One supervision step: restart crashed children (backoff 1, 2, 4 ... 30 s). Returns an
        error when a child keeps crashing, so `up` stops instead of looping forever."""
        now = time.monotonic()
        for service in self.services:
            process = service.process
            if service.finished or process is None:
                if process is None and not service.finished and now >= service.next_start:
                    self._spawn(service)
                continue
            code = process.poll()
            if code is None:
                # Crashes far apart are not a crash loop: a minute up earns a clean slate.
                if service.restarts and now - service.started_at > 60:
                    service.restarts = 0
                continue
            if code == 0 and service.name == "ingest":
                service.finished = True
                print("ingest: every camera's recording has ended", file=sys.stderr)
                continue
            service.restarts += 1
            if service.restarts > 5:
                return f"{service.name} exited with code {code} {service.restarts} times; see its log lines above"
            delay = min(30.0, 2.0 ** (service.restarts - 1))
            print(f"{service.name}: exited with code {code}; restarting in {delay:.0f}s", file=sys.stderr)
            service.process, service.next_start = None, now + delay
        return None

    def stop(self, timeout_s: float = 20.0) -> None:
        live = [s.process for s in self.services if s.process is not None and s.process.poll() is None]
        for process in live:
            signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for process in live:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"pid {process.pid} did not stop in {timeout_s:.0f}s: killing it", file=sys.stderr)
                signal_group(process.pid, signal.SIGKILL)
                process.wait()
        if self.broker is not None and self.started_broker:
            self.broker.stop()
        STATE_FILE.unlink(missing_ok=True)


def print_progress(
    progress: Progress, services: list[Service], samples: dict[str, Sample], lags: dict[str, int | None], t: float
) -> None:
    """Readiness changes (a line each), then the progress line (see vigil.progress)."""
    down = [s.name for s in services if not s.ended and (s.process is None or s.process.poll() is not None)]
    ended = any(s.name == "ingest" for s in services) and all(s.ended for s in services if s.name == "ingest")
    for change in progress.changes(samples):
        print(f"[{t:6.1f}s] {change}", file=sys.stderr)
    print(f"[{t:6.1f}s] {progress.line(samples, lags, down, ingest_finished=ended)}", file=sys.stderr)


def up_main(args: argparse.Namespace) -> int:
    config = resolve_config(args.config, args.log_level)
    # `vigil --log-level DEBUG up` debugs the children too (FFmpeg's and OpenCV's lines included).
    child_level = args.child_log_level or ("DEBUG" if args.log_level == "DEBUG" else "WARNING")
    stack = Stack(config, args.config, args.workers, child_level)
    print("vigil up: where things go", file=sys.stderr)
    print(startup_block(config, {s.name: s.port for s in stack.services}), file=sys.stderr, flush=True)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        print(f"\nsignal {signum}: stopping the stack", file=sys.stderr)
        stack.stop_event.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    error: str | None = None
    probe = LagProbe(config.kafka)
    progress = Progress(has_rules=bool(config.alerts.rules))
    idle_checks = 0
    try:
        stack.start()
        next_report = time.monotonic() + args.progress_every
        while not stack.stop_event.wait(0.5):
            error = stack.supervise()
            if error:
                break
            if time.monotonic() < next_report:
                continue
            next_report += args.progress_every
            samples = {s.name: scrape(s.url) for s in stack.services if not s.finished}
            lags = stack_lags(config, probe)
            print_progress(progress, stack.services, samples, lags, time.monotonic() - started)
            idle_checks = idle_checks + 1 if all_done(stack.services, samples, lags) else 0
            if args.exit_when_done and idle_checks >= 2:
                print("every frame processed, every alert ended and delivered: stopping", file=sys.stderr)
                break
            if args.duration and time.monotonic() - started >= args.duration:
                break
    except VigilError as exc:
        error = str(exc)
    finally:
        probe.close()
        stack.stop()
    print(f"vigil up: stopped after {time.monotonic() - started:.1f}s", file=sys.stderr)
    if error:
        print(f"vigil up: error: {error}", file=sys.stderr)
        return 1
    return 0


def status_main(args: argparse.Namespace) -> int:
    """Readiness and key counters of each process of a running `vigil up`, plus consumer lag."""
    config = resolve_config(args.config, args.log_level)
    if not STATE_FILE.is_file():
        print(f"no running `vigil up` found ({STATE_FILE} is missing)", file=sys.stderr)
        return 3
    state = json.loads(STATE_FILE.read_text())
    all_ready = True
    for service in state["services"]:
        sample = scrape(service["url"])
        all_ready &= sample.ready
        print("\n".join(status_report(service["name"], service["pid"], service["url"], sample)))
    probe = LagProbe(config.kafka)
    try:
        for topic, lag in stack_lags(config, probe).items():
            print(f"lag {topic}: {'-' if lag is None else lag}")
    finally:
        probe.close()
    return 0 if all_ready else 1
