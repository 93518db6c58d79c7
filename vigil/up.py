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
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

from vigil.broker import EmbeddedBroker
from vigil.cluster import EmbeddedCluster, embedded_kafka
from vigil.config import VigilConfig
from vigil.errors import VigilError
from vigil.kafka import LagProbe, ensure_topics
from vigil.processes import free_port, port_free, signal_group
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


@dataclass
class Progress:
    """Rates between two scrapes, rendered as one status line."""

    last: dict[str, Sample] = field(default_factory=dict)
    last_t: float = 0.0

    def line(self, services: list[Service], samples: dict[str, Sample], lags: dict[str, int | None]) -> str:
        now = time.monotonic()
        dt = max(1e-3, now - self.last_t) if self.last_t else 0.0

        def rate(name: str, metric: str, camera: str | None = None) -> float:
            if not dt or name not in self.last:
                return 0.0
            new, old = samples[name], self.last[name]
            if camera is not None:
                return (
                    new.by_camera.get(camera, {}).get(metric, 0) - old.by_camera.get(camera, {}).get(metric, 0)
                ) / dt
            return (new.get(metric) - old.get(metric)) / dt

        parts = []
        ingest = samples.get("ingest")
        if ingest is not None and ingest.ok:
            cams = ", ".join(
                f"{cam} {rate('ingest', 'vigil_ingest_frames_published_total', cam):.1f}/s"
                for cam in sorted(ingest.by_camera)
            )
            parts.append(f"cameras: {cams or '-'}")
        detect = [n for n in samples if n.startswith("detect-") and samples[n].ok]
        if detect:
            fps = sum(rate(n, "vigil_detect_detected_frames_total") for n in detect)
            frames = sum(samples[n].get("vigil_detect_detected_frames_total") for n in detect)
            count = sum(samples[n].get("vigil_detect_inference_seconds_count") for n in detect)
            total = sum(samples[n].get("vigil_detect_inference_seconds_sum") for n in detect)
            infer = f", infer {1000 * total / count:.0f} ms/batch" if count else ""
            parts.append(f"detect: {frames:.0f} frames, {fps:.1f}/s{infer}")
        alerts = samples.get("alerts")
        if alerts is not None and alerts.ok:
            fired = alerts.get("vigil_alerts_fired_total") or alerts.get("vigil_alerts_fired")
            delivered = alerts.get("vigil_alerts_webhook_delivered_total") or alerts.get(
                "vigil_alerts_webhook_delivered"
            )
            parts.append(f"alerts: {fired:.0f} events, {delivered:.0f} delivered")
        parts.append("lag " + ", ".join(f"{k} {'-' if v is None else v}" for k, v in lags.items()))
        down = [s.name for s in services if not s.finished and (s.process is None or s.process.poll() is not None)]
        if down:
            parts.append(f"restarting: {', '.join(down)}")
        self.last, self.last_t = dict(samples), now
        return " | ".join(parts)


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


def up_main(args: argparse.Namespace) -> int:
    config = resolve_config(args.config, args.log_level)
    stack = Stack(config, args.config, args.workers, args.child_log_level)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        print(f"\nsignal {signum}: stopping the stack", file=sys.stderr)
        stack.stop_event.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    error: str | None = None
    probe = LagProbe(config.kafka)
    progress = Progress()
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
            print(
                f"[{time.monotonic() - started:6.1f}s] {progress.line(stack.services, samples, lags)}", file=sys.stderr
            )
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
        state_text = (
            "ready"
            if sample.ready
            else ("not ready: " + "; ".join(sample.not_ready) if sample.ok else f"down ({sample.error})")
        )
        print(f"{service['name']:>10}  pid {service['pid']}  {service['url']}  {state_text}")
        for name, value in sorted(sample.totals.items()):
            if name.endswith("_total") and value:
                print(f"{'':>12}{name} {value:.0f}")
    probe = LagProbe(config.kafka)
    try:
        for topic, lag in stack_lags(config, probe).items():
            print(f"lag {topic}: {'-' if lag is None else lag}")
    finally:
        probe.close()
    return 0 if all_ready else 1
