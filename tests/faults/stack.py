"""A whole vigil stack under `vigil up` against a broker the test controls (so the test can kill
it), a verifying webhook receiver, per-process counters sampled while it runs, and the topics read
back afterwards to count what was lost."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from kafka import TopicPartition
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from alerts.cli import new_secret
from vigil.config import KafkaConfig, VigilConfig
from vigil.config.loader import parse_config
from vigil.contracts import AlertRecord, DetectionsRecord, FrameMeta
from vigil.kafka import make_consumer
from vigil.scrape import scrape

# The figure each process moves forward when it is working (what "resumed" means per process).
PROGRESS = {
    "ingest": "vigil_ingest_frames_published_total",
    "detect-1": "vigil_detect_detected_frames_total",
    "alerts": "vigil_alerts_records_total",
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Receiver(ThreadingHTTPServer):
    """Verifies every delivery with the `standardwebhooks` library; keeps the webhook ids."""

    def __init__(self, secret: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.webhook = Webhook(secret)
        self.ids: set[str] = set()
        self.rejected = 0
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/hook"


class _Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        try:
            self.server.webhook.verify(body, dict(self.headers))
            self.server.ids.add(self.headers["webhook-id"])
            self.send_response(204)
        except WebhookVerificationError:
            self.server.rejected += 1
            self.send_response(401)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def stack_config(
    tmp: Path,
    name: str,
    kafka: dict[str, Any],
    receiver: Receiver,
    *,
    video: Path,
    loop: bool = True,
    max_age_s: float = 10.0,
    **topics: Any,
) -> Path:
    """One paced replay camera with a zone rule, yolox_nano, one webhook endpoint; its own topics."""
    document = {
        "kafka": kafka,
        "topics": {
            "frames": {"name": f"{name}.frames", "partitions": 2},
            "detections": {"name": f"{name}.detections", "partitions": 2},
            "alerts": {"name": f"{name}.alerts", "partitions": 1},
            "dead_letter": {"name": f"{name}.dead-letter", "partitions": 1},
            "status": {"name": f"{name}.status", "partitions": 1},
            **topics,
        },
        "cameras": [
            {
                "id": "plaza",
                "kind": "replay",
                "url": str(video),
                "fps": 5,
                "replay": {"realtime": True, "loop": loop, "source_fps": 25},
                "zones": [{"name": "plaza", "units": "fraction", "polygon": [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]}],
            }
        ],
        "detect": {"model": "yolox_nano", "batch_size": 2, "group_id": f"{name}-detect", "max_age_s": max_age_s},
        "alerts": {
            "group_id": f"{name}-alerts",
            "rules": [{"name": "on-plaza", "zone": "plaza", "classes": ["person"], "min_frames": 2, "end_after_s": 1}],
            "webhooks": [
                {"name": "receiver", "url": receiver.url, "secrets": ["${TEST_WEBHOOK_SECRET}"], "max_backoff_s": 2}
            ],
        },
        "metrics": {"port": 0},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@dataclass
class Stack:
    """`vigil up` running a config, its log, and its services' counters."""

    config_path: Path
    cwd: Path
    env: dict[str, str]
    process: subprocess.Popen[str] | None = None
    log: list[str] = field(default_factory=list)

    @classmethod
    def up(cls, config_path: Path, cwd: Path, env: dict[str, str], *extra: str) -> Stack:
        stack = cls(config_path, cwd, os.environ | env)
        stack.process = subprocess.Popen(
            [sys.executable, "-m", "vigil", "up", "--config", str(config_path), "--progress-every", "1", *extra],
            cwd=cwd,
            env=stack.env,
            stderr=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=lambda: stack.log.extend(stack.process.stderr or []), daemon=True).start()
        return stack

    @property
    def config(self) -> VigilConfig:
        return parse_config(self.config_path.read_text(), str(self.config_path), self.env)

    def tail(self, lines: int = 60) -> str:
        return "".join(self.log[-lines:])

    def around(self, text: str, lines: int = 40) -> str:
        """The log lines of every process before the first line holding `text` (why it happened), else the tail."""
        at = next((i for i, line in enumerate(self.log) if text in line), None)
        return self.tail(lines) if at is None else "".join(self.log[max(0, at - lines) : at + 3])

    def services(self) -> dict[str, dict[str, Any]]:
        state = self.cwd / ".state" / "up.json"
        if not state.exists():
            return {}
        return {s["name"]: s for s in json.loads(state.read_text())["services"]}

    def progress(self) -> dict[str, float]:
        """Each process's progress counter now (missing while it does not answer)."""
        found = {}
        for name, service in self.services().items():
            sample = scrape(str(service["url"]), timeout_s=1.0)
            if sample.ok and name in PROGRESS:
                found[name] = sample.get(PROGRESS[name])
        return found

    def metric(self, service: str, name: str) -> float:
        return scrape(str(self.services()[service]["url"])).get(name)

    def wait_warm(self, receiver: Receiver, timeout_s: float = 240.0) -> None:
        """Until every process made progress and a webhook was delivered."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.tail()
            values = self.progress()
            if len(values) == len(PROGRESS) and all(v >= 4 for v in values.values()) and receiver.ids:
                return
            time.sleep(1)
        raise AssertionError(f"the stack never got going: {self.progress()}\n{self.tail()}")

    def stop_ingest(self) -> None:
        """SIGTERM ingest alone: it flushes and exits 0, so `up` counts the recording as ended and
        `--exit-when-done` waits for the rest to drain and every alert to end and be delivered."""
        os.kill(int(self.services()["ingest"]["pid"]), signal.SIGTERM)

    def wait(self, timeout_s: float) -> int:
        assert self.process is not None
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout=60)
            raise AssertionError(f"vigil up did not stop by itself within {timeout_s:.0f}s\n{self.tail()}") from None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()


def watch_resume(stack: Stack, since: float, timeout_s: float) -> dict[str, float]:
    """Seconds from `since` until each process's counter moved past its value at `since`."""
    base = stack.progress()
    resumed: dict[str, float] = {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(resumed) < len(PROGRESS):
        for name, value in stack.progress().items():
            if name not in resumed and value > base.get(name, value):
                resumed[name] = round(time.monotonic() - since, 2)
        time.sleep(0.2)
    return resumed


def read_topic(kafka: KafkaConfig, topic: str) -> list[Any]:
    """Every record of `topic`, from the beginning to the end offsets of now."""
    consumer = make_consumer(kafka, "test-reader", None)
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or set())
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        records: list[Any] = []
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        return records
    finally:
        consumer.close()


@dataclass(frozen=True)
class Losses:
    frames: int  # records on the frames topic
    undetected: list[tuple[str, int]]  # (frame ref, capture_ns) of frames without a detections record
    alerts: int  # alert events on the alerts topic
    undelivered: list[str]  # webhook ids the receiver never verified


def losses(config: VigilConfig, receiver: Receiver) -> Losses:
    frames = read_topic(config.kafka, config.topics.frames.name)
    detected = {
        DetectionsRecord.from_bytes(r.value).frame_key for r in read_topic(config.kafka, config.topics.detections.name)
    }
    refs = [(f"{r.topic}/{r.partition}/{r.offset}", FrameMeta.from_headers(r.headers).capture_ns) for r in frames]
    alerts = [AlertRecord.from_bytes(r.value) for r in read_topic(config.kafka, config.topics.alerts.name)]
    return Losses(
        frames=len(frames),
        undetected=[(ref, capture_ns) for ref, capture_ns in refs if ref not in detected],
        alerts=len(alerts),
        undelivered=sorted({a.webhook_id for a in alerts} - receiver.ids),
    )


def webhook_secret() -> str:
    return new_secret()
