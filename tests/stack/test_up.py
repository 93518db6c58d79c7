"""`vigil up` from a clean state: the embedded broker, ingest, a detection worker, the
aggregator and the review service run as one stack; alerts reach a real receiver verified with `standardwebhooks`;
every process serves metrics and goes ready; Ctrl-C leaves no process and no broker behind."""

from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from vigil.scrape import scrape

pytestmark = pytest.mark.broker


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent has not collected it yet.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(") ", 1)[1][0] != "Z"


class Receiver(ThreadingHTTPServer):
    def __init__(self, secret: str) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.webhook = Webhook(secret)
        self.verified: list[dict[str, object]] = []
        self.rejected = 0


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        try:
            self.server.verified.append(self.server.webhook.verify(body, dict(self.headers)))
            self.send_response(204)
        except WebhookVerificationError:
            self.server.rejected += 1
            self.send_response(401)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_vigil_up_runs_the_stack_and_stops_cleanly(tmp_path: Path, shared_data: Path) -> None:
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    receiver = Receiver(secret)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    broker_port, controller_port = free_port(), free_port()
    video = shared_data / "footage" / "TUD-Stadtmitte" / "TUD-Stadtmitte.mp4"
    config = tmp_path / "stack.yaml"
    config.write_text(
        f"""
kafka:
  embedded: {{port: {broker_port}, controller_port: {controller_port}, state_dir: {tmp_path / "kafka"}}}
cameras:
  - id: plaza-cam
    kind: replay
    url: {video}
    fps: 5
    replay: {{realtime: true, loop: true, source_fps: 25}}
    zones:
      - {{name: plaza, units: fraction, polygon: [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]}}
detect: {{model: yolox_nano, batch_size: 2}}
alerts:
  rules:
    - {{name: on-plaza, zone: plaza, classes: [person], min_frames: 2, end_after_s: 1}}
  webhooks:
    - name: receiver
      url: http://127.0.0.1:{receiver.server_address[1]}/hook
      secrets: ["${{TEST_WEBHOOK_SECRET}}"]
      max_backoff_s: 2
web: {{port: {free_port()}}}
metrics: {{port: 0}}
"""
    )
    env = os.environ | {"TEST_WEBHOOK_SECRET": secret}
    up = subprocess.Popen(
        [sys.executable, "-m", "vigil", "up", "--config", str(config), "--progress-every", "1"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    log_lines: list[str] = []
    threading.Thread(target=lambda: log_lines.extend(up.stderr or []), daemon=True).start()
    state_file = tmp_path / ".state" / "up.json"
    try:
        deadline = time.monotonic() + 150
        ready: set[str] = set()
        services: list[dict[str, object]] = []
        counters: dict[str, float] = {}
        while time.monotonic() < deadline:
            assert up.poll() is None, "".join(log_lines[-40:])
            if state_file.exists():
                services = json.loads(state_file.read_text())["services"]
                for service in services:
                    sample = scrape(str(service["url"]))
                    if sample.ready:
                        ready.add(str(service["name"]))
                    for name, value in sample.totals.items():
                        counters[name] = max(counters.get(name, 0.0), value)
            started = [a for a in receiver.verified if a["event"] == "started"]
            if started and len(ready) == len(services) == 4 and counters.get("vigil_alerts_webhook_delivered_total"):
                break
            time.sleep(1)
        assert services and ready == {str(s["name"]) for s in services}, (ready, "".join(log_lines[-40:]))
        assert receiver.rejected == 0
        assert any(a["event"] == "started" and a["camera"] == "plaza-cam" for a in receiver.verified)
        for metric in (
            "vigil_ingest_frames_published_total",
            "vigil_detect_detected_frames_total",
            "vigil_alerts_fired_total",
            "vigil_alerts_webhook_delivered_total",
        ):
            assert counters.get(metric, 0) > 0, (metric, sorted(counters))
        pids = [int(str(s["pid"])) for s in services]
    finally:
        up.send_signal(signal.SIGINT)  # what Ctrl-C sends
        code = up.wait(timeout=60)
        receiver.shutdown()
    assert code == 0, "".join(log_lines[-40:])
    assert not [pid for pid in pids if pid_alive(pid)]
    assert not state_file.exists()
    with socket.socket() as probe:  # the broker is gone: its port is free again
        probe.bind(("127.0.0.1", broker_port))
    broker_pids = subprocess.run(["pgrep", "-f", str(tmp_path / "kafka")], capture_output=True, text=True).stdout
    assert broker_pids.strip() == ""
    assert secret not in "".join(log_lines)
