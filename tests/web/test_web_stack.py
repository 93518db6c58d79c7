"""The review service in the real stack: `vigil up` replays a shared clip through ingest, detect,
alerts and web on the test broker; webhooks carry signed links; then the store is checked against
the alerts topic, across a `vigil web` restart and a `vigil web rebuild`, and the media it serves
is checked against the alerts."""

from __future__ import annotations

import base64
import io
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import av
import cv2
import httpx
import numpy as np
import pytest
from kafka.structs import TopicPartition
from standardwebhooks.webhooks import Webhook

from tests.web.conftest import ADMIN_TOKEN, MEDIA_KEY, NS, VIEWER_TOKEN, wait_for
from vigil.config.loader import load_config
from vigil.contracts import AlertRecord, FrameMeta
from vigil.draw import annotate_alert
from vigil.kafka import make_consumer
from vigil.processes import free_port
from vigil.signing import media_path, sign
from web.media import alert_record
from web.store import AlertStore

pytestmark = [pytest.mark.broker, pytest.mark.timeout(900)]
REPO = Path(__file__).resolve().parents[2]
FPS = 5


class Receiver(ThreadingHTTPServer):
    def __init__(self, secret: str) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.webhook = Webhook(secret)
        self.payloads: list[dict[str, Any]] = []


class Handler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.server.payloads.append(self.server.webhook.verify(body, dict(self.headers)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def write_config(folder: Path, bootstrap: str, video: Path, receiver_port: int, web_port: int, stem: str) -> Path:
    path = folder / "stack.yaml"
    path.write_text(
        f"""
kafka: {{bootstrap_servers: ["{bootstrap}"], bootstrap_timeout_ms: 5000}}
topics:
  frames: {{name: {stem}.frames, partitions: 2, retention_ms: 3600000}}
  detections: {{name: {stem}.detections, partitions: 2}}
  alerts: {{name: {stem}.alerts, partitions: 2}}
  dead_letter: {{name: {stem}.dead-letter, partitions: 1}}
  status: {{name: {stem}.status, partitions: 1}}
cameras:
  - id: plaza
    kind: replay
    url: {video}
    fps: {FPS}
    replay: {{realtime: true, loop: true, source_fps: 25}}
    zones:
      - {{name: lower, units: fraction, polygon: [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]}}
detect: {{model: yolox_nano, models_dir: {REPO / "models"}, batch_size: 2, group_id: {stem}-detect}}
alerts:
  group_id: {stem}-alerts
  rules:
    - {{name: on-plaza, zone: lower, classes: [person], min_frames: 2, end_after_s: 1, cooldown_s: 5}}
  webhooks:
    - name: receiver
      url: http://127.0.0.1:{receiver_port}/hook
      secrets: ["${{TEST_WEBHOOK_SECRET}}"]
      max_backoff_s: 2
web:
  port: {web_port}
  group_id: {stem}-web
  store: {folder / "webdata" / "alerts.sqlite3"}
  clip_cache_dir: {folder / "webdata" / "media"}
  users: [{{name: ana, role: admin, password_hash: "${{TEST_ANA_HASH}}"}}]
  tokens:
    - {{name: admin-script, role: admin, token: "${{TEST_ADMIN_TOKEN}}"}}
    - {{name: viewer-script, role: viewer, token: "${{TEST_VIEWER_TOKEN}}"}}
  public_url: http://127.0.0.1:{web_port}
  media_key: "${{TEST_MEDIA_KEY}}"
  clip_pre_s: 1
  clip_post_s: 1
metrics: {{port: 0}}
"""
    )
    return path


def topic_alerts(config: Any) -> tuple[set[str], list[AlertRecord]]:
    consumer = make_consumer(config.kafka, "test-read", None)
    topic = config.topics.alerts.name
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    ends = consumer.end_offsets(partitions)
    records: list[AlertRecord] = []
    while any(consumer.position(tp) < ends[tp] for tp in partitions):
        for batch in consumer.poll(timeout_ms=1000).values():
            records += [AlertRecord.from_bytes(r.value) for r in batch]
    consumer.close()
    return {r.alert_id for r in records}, records


def first_frame_ns(config: Any) -> int:
    consumer = make_consumer(config.kafka, "test-read", None)
    topic = config.topics.frames.name
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    first = None
    deadline = time.monotonic() + 30
    while first is None and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=1000, max_records=1).values():
            first = FrameMeta.from_headers(batch[0].headers).capture_ns
    consumer.close()
    assert first is not None
    return first


def start_web(config_path: Path, env: dict[str, str], cwd: Path, base: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-m", "vigil", "web", "--config", str(config_path)], cwd=cwd, env=env)
    wait_for(lambda: _ready(base), timeout_s=90, what="vigil web ready")
    return process


def _ready(base: str) -> bool:
    try:
        return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def stop(process: subprocess.Popen[Any], timeout_s: float = 60) -> int:
    process.send_signal(signal.SIGINT)
    return process.wait(timeout=timeout_s)


def all_alerts(client: httpx.Client) -> list[dict[str, Any]]:
    items, cursor = [], None
    while True:
        page = client.get("/api/alerts", params={"limit": 7, **({"cursor": cursor} if cursor else {})}).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items


def test_web_in_the_stack(
    tmp_path: Path, shared_data: Path, kafka_bootstrap: str, password_hashes: dict[str, str]
) -> None:
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()
    receiver = Receiver(secret)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    web_port = free_port()
    base = f"http://127.0.0.1:{web_port}"
    video = shared_data / "footage" / "TUD-Stadtmitte" / "TUD-Stadtmitte.mp4"
    stem = f"webstack-{secrets.token_hex(4)}"
    config_path = write_config(tmp_path, kafka_bootstrap, video, receiver.server_address[1], web_port, stem)
    env = os.environ | {
        "TEST_WEBHOOK_SECRET": secret, "TEST_ANA_HASH": password_hashes["ana"], "TEST_ADMIN_TOKEN": ADMIN_TOKEN,
        "TEST_VIEWER_TOKEN": VIEWER_TOKEN, "TEST_MEDIA_KEY": MEDIA_KEY, "YOLO_OFFLINE": "1",
    }  # fmt: skip
    config = load_config(config_path, env)
    up = subprocess.Popen(
        [sys.executable, "-m", "vigil", "up", "--config", str(config_path), "--progress-every", "5"],
        cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    log_lines: list[str] = []
    threading.Thread(target=lambda: log_lines.extend(up.stderr or []), daemon=True).start()
    viewer = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {VIEWER_TOKEN}"}, timeout=60)
    admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=60)
    try:
        wait_for(lambda: up.poll() is None and _ready(base), timeout_s=180, what="web in vigil up")
        assert any("web: console and API on http://127.0.0.1:" in line for line in log_lines)

        first_ns = first_frame_ns(config)

        def enough() -> bool:
            assert up.poll() is None, "".join(log_lines[-40:])
            # An ended alert whose pre-roll and post-roll frames are all on the topic.
            whole = [a for a in all_alerts(viewer) if a["state"] == "ended" and a["started_ns"] - NS >= first_ns
                     and a["ended_ns"] + 3 * NS < time.time_ns()]  # fmt: skip
            ended_hooks = [p for p in receiver.payloads if p["event"] == "ended"]
            return len(whole) >= 2 and len(ended_hooks) >= 3

        wait_for(enough, timeout_s=400, what="ended alerts with their whole clip in the store and at the receiver")
        reviewed_id = all_alerts(viewer)[-1]["id"]
        answer = admin.post(f"/api/alerts/{reviewed_id}/review", json={"reviewed": True, "verdict": "false_positive"})
        assert answer.status_code == 200
    finally:
        code = stop(up, 90)
    assert code == 0, "".join(log_lines[-40:])
    assert MEDIA_KEY not in "".join(log_lines) and secret not in "".join(log_lines)

    # Every webhook carried signed links to this service.
    assert receiver.payloads
    for payload in receiver.payloads:
        for kind, name in (("snapshot.jpg", "snapshot_url"), ("clip.mp4", "clip_url")):
            assert payload[name].startswith(f"{base}{media_path(payload['id'], kind)}?exp="), payload

    # The store: one row per alert id of the topic.
    ids, records = topic_alerts(config)
    store = AlertStore(config.web.store).open()
    assert store.ids() == ids and store.count() == len(ids)
    store.close()

    web = start_web(config_path, env, tmp_path, base)
    try:
        items = all_alerts(viewer)
        assert {a["id"] for a in items} == ids and len(items) == len(ids)  # the same after a restart
        assert next(a for a in items if a["id"] == reviewed_id)["verdict"] == "false_positive"
        refused = subprocess.run([sys.executable, "-m", "vigil", "web", "rebuild", "--config", str(config_path)],
                                 cwd=tmp_path, env=env, capture_output=True, text=True)  # fmt: skip
        assert refused.returncode == 2 and "in use by another `vigil web`" in refused.stderr

        last_ns = max(r.last_seen_ns for r in records)
        candidates = [
            a
            for a in items
            if a["state"] == "ended" and a["started_ns"] - NS >= first_ns and a["ended_ns"] + NS <= last_ns
        ]
        assert candidates, (first_ns, [(a["started_ns"], a["ended_ns"]) for a in items])
        alert = max(candidates, key=lambda a: a["duration_s"])

        # Snapshot: the alert's frame with the alert's box, as the core draws it.
        snapshot = viewer.get(alert["snapshot_url"])
        assert snapshot.status_code == 200
        served = cv2.imdecode(np.frombuffer(snapshot.content, np.uint8), cv2.IMREAD_COLOR)
        started = next(r for r in records if r.alert_id == alert["id"] and r.event == "started")
        assert list(started.box) == alert["box"]
        frame_consumer = make_consumer(config.kafka, "test-frame", None)
        tp = TopicPartition(started.frame.topic, started.frame.partition)
        frame_consumer.assign([tp])
        frame_consumer.seek(tp, started.frame.offset)
        raw_jpeg = wait_for(
            lambda: next(iter(frame_consumer.poll(timeout_ms=1000, max_records=1).values()), [None])[0], what="frame"
        )
        frame_consumer.close()
        stored_alert = AlertStore(config.web.store).open()
        row = stored_alert.get(alert["id"])
        stored_alert.close()
        assert row is not None
        from web.service import WebService

        zone = WebService.__new__(WebService)
        zone.config = config
        expected = annotate_alert(raw_jpeg.value, alert_record(row), zone._zone(row, 640, 480))
        expected_image = cv2.imdecode(np.frombuffer(expected, np.uint8), cv2.IMREAD_COLOR)
        assert float(np.abs(served.astype(int) - expected_image.astype(int)).mean()) < 2.0

        # Clip: H.264 with (pre + event + post) x fps - 2 frames at least; Range gives 206.
        clip = viewer.get(alert["clip_url"])
        assert clip.status_code == 200, clip.text[:300]
        with av.open(io.BytesIO(clip.content)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264"
            count = sum(1 for _ in container.decode(stream))
        assert count >= (1 + alert["duration_s"] + 1) * FPS - 2, (count, alert["duration_s"])
        ranged = viewer.get(alert["clip_url"], headers={"Range": "bytes=0-1023"})
        assert ranged.status_code == 206 and len(ranged.content) == 1024

        # A webhook's signed link opens without a session; tampered or expired ones do not.
        payload = next(p for p in receiver.payloads if p["id"] == alert["id"])
        anonymous = httpx.Client(timeout=60)
        assert anonymous.get(payload["snapshot_url"]).content == snapshot.content
        assert anonymous.get(payload["clip_url"]).status_code == 200
        other = next(a["id"] for a in items if a["id"] != alert["id"])
        assert anonymous.get(payload["clip_url"].replace(alert["id"], other)).status_code == 403
        old = sign(MEDIA_KEY.encode(), media_path(alert["id"], "snapshot.jpg"), int(time.time()) - 5)
        expired = anonymous.get(base + old)
        assert expired.status_code == 403 and "expired" in expired.json()["error"]
        assert anonymous.get(base + alert["snapshot_url"]).status_code == 401  # the API path needs a login
        anonymous.close()
    finally:
        assert stop(web) == 0

    rebuilt = subprocess.run([sys.executable, "-m", "vigil", "web", "rebuild", "--config", str(config_path)],
                             cwd=tmp_path, env=env, capture_output=True, text=True)  # fmt: skip
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert f"{len(ids)} alerts" in rebuilt.stderr and "1 reviews kept" in rebuilt.stderr
    web = start_web(config_path, env, tmp_path, base)
    try:
        items = all_alerts(viewer)
        assert {a["id"] for a in items} == ids  # the same after a rebuild
        assert next(a for a in items if a["id"] == reviewed_id)["verdict"] == "false_positive"
        facets = viewer.get("/api/alerts/facets").json()
        assert facets == {"cameras": ["plaza"], "rules": ["on-plaza"], "labels": ["person"]}
        assert json.loads(json.dumps(viewer.get("/api/system").json()))["store"]["alerts"] == len(ids)
    finally:
        assert stop(web) == 0
        viewer.close()
        admin.close()
        receiver.shutdown()
