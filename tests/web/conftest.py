"""Fixtures of the review service tests: a real `vigil web` (uvicorn on a loopback port, a real
SQLite file) on the test broker, and helpers that publish real frames (from the shared footage)
and alert events the way ingest and the aggregator do."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import httpx
import pytest

from vigil.config import VigilConfig
from vigil.contracts import AlertRecord, FrameMeta, FrameRef
from vigil.imaging import encode_jpeg
from vigil.kafka import ensure_topics, make_producer
from vigil.passwords import hash_password
from vigil.processes import free_port

NS = 1_000_000_000
PASSWORDS = {"ana": "ana-admin-password", "vic": "vic-viewer-password"}
ADMIN_TOKEN = "tok-admin-" + "a" * 30
VIEWER_TOKEN = "tok-viewer-" + "b" * 30
MEDIA_KEY = "k" * 40


@pytest.fixture(scope="session")
def password_hashes() -> dict[str, str]:
    return {name: hash_password(password) for name, password in PASSWORDS.items()}


@pytest.fixture(scope="session")
def footage_frames(shared_data: Path) -> list[bytes]:
    """The first 60 frames of TUD-Stadtmitte as JPEG (640x480), read once per session."""
    capture = cv2.VideoCapture(str(shared_data / "footage" / "TUD-Stadtmitte" / "TUD-Stadtmitte.mp4"))
    frames = []
    while len(frames) < 60:
        ok, image = capture.read()
        if not ok:
            break
        frames.append(encode_jpeg(image, 80))
    capture.release()
    assert len(frames) == 60
    return frames


def web_config(base: VigilConfig, folder: Path, hashes: dict[str, str], **web: Any) -> VigilConfig:
    data = base.model_dump(mode="python")

    def reveal(value: Any) -> Any:
        if hasattr(value, "get_secret_value"):
            return value.get_secret_value()
        if isinstance(value, dict):
            return {k: reveal(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [reveal(v) for v in value]
        return value

    data = reveal(data)
    data["web"] = {
        "port": free_port(),
        "group_id": f"{base.alerts.group_id}-web",
        "store": str(folder / "alerts.sqlite3"),
        "clip_cache_dir": str(folder / "media"),
        "users": [
            {"name": "ana", "role": "admin", "password_hash": hashes["ana"]},
            {"name": "vic", "role": "viewer", "password_hash": hashes["vic"]},
        ],
        "tokens": [
            {"name": "script-admin", "role": "admin", "token": ADMIN_TOKEN},
            {"name": "script-viewer", "role": "viewer", "token": VIEWER_TOKEN},
        ],
        "public_url": "http://127.0.0.1:1",
        "media_key": MEDIA_KEY,
        "clip_pre_s": 1.0,
        "clip_post_s": 1.0,
        **web,
    }
    return VigilConfig.model_validate(data)


@dataclass
class RunningWeb:
    config: VigilConfig
    service: Any
    server: Any
    thread: threading.Thread
    base: str
    clients: list[httpx.Client] = field(default_factory=list)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        client = httpx.Client(base_url=self.base, headers=headers, timeout=30)
        self.clients.append(client)
        return client

    def login(self, name: str = "ana") -> tuple[httpx.Client, str]:
        client = self.client()
        response = client.post("/api/login", json={"username": name, "password": PASSWORDS[name]})
        assert response.status_code == 200, response.text
        return client, response.json()["csrf_token"]

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        self.server.should_exit = True
        self.thread.join(timeout=20)
        self.service.stop()


def start_web(config: VigilConfig) -> RunningWeb:
    """`vigil web` in this process: the service's threads plus uvicorn in a thread."""
    import uvicorn

    from web.app import create_app
    from web.service import WebService

    ensure_topics(config.kafka, config.topics)
    service = WebService(config).start()
    server = uvicorn.Server(
        uvicorn.Config(create_app(service), host="127.0.0.1", port=config.web.port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{config.web.port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:  # both followers are up
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.1)  # a 503 too: asking in a tight loop takes the GIL from the start it waits for
    else:
        raise AssertionError(f"vigil web was not ready within 30 s: {service.health.ready().to_json()}")
    return RunningWeb(config, service, server, thread, base)


@pytest.fixture
def web_factory(vigil_config: VigilConfig, tmp_path: Path, password_hashes: dict[str, str]) -> Iterator[Any]:
    running: list[RunningWeb] = []

    def make(config: VigilConfig | None = None, **web: Any) -> RunningWeb:
        server = start_web(config or web_config(vigil_config, tmp_path, password_hashes, **web))
        running.append(server)
        return server

    yield make
    for server in running:
        server.stop()


class Publisher:
    """Frames and alert events on the test topics, as ingest and the aggregator publish them."""

    def __init__(self, config: VigilConfig) -> None:
        self.config = config
        ensure_topics(config.kafka, config.topics)
        self.producer = make_producer(config.kafka, "test-web")

    def frames(
        self, camera: str, jpegs: list[bytes], fps: float, start_ns: int, seq0: int = 0
    ) -> list[tuple[FrameRef, int]]:
        """Publish frames `1/fps` apart in capture time from start_ns; the record timestamp is the
        capture time, as for a live camera. Returns each frame's (ref, capture_ns)."""
        futures = []
        for index, jpeg in enumerate(jpegs):
            capture_ns = start_ns + int(index * NS / fps)
            meta = FrameMeta(camera, seq0 + index, capture_ns, 640, 480, "replay")
            future = self.producer.send(
                self.config.topics.frames.name, key=camera.encode(), value=jpeg, headers=meta.to_headers(),
                timestamp_ms=capture_ns // 1_000_000,
            )  # fmt: skip
            futures.append((future, capture_ns))
        self.producer.flush(timeout=30)
        return [(FrameRef(m.topic, m.partition, m.offset), ns) for f, ns in futures for m in [f.get(timeout=30)]]

    def alert(self, record: AlertRecord) -> None:
        self.producer.send(self.config.topics.alerts.name, key=record.camera_id.encode(), value=record.to_bytes())
        self.producer.flush(timeout=30)

    def raw(self, topic: str, value: bytes, key: bytes = b"x") -> None:
        self.producer.send(topic, key=key, value=value)
        self.producer.flush(timeout=30)

    def close(self) -> None:
        self.producer.close(timeout=5)


@pytest.fixture
def publisher(vigil_config: VigilConfig) -> Iterator[Publisher]:
    pub = Publisher(vigil_config)
    yield pub
    pub.close()


def make_alert(
    alert_id: str, event: str, camera: str, frame: FrameRef, started_ns: int, last_ns: int,
    box: tuple[float, float, float, float] = (200.0, 150.0, 300.0, 420.0), score: float = 0.8,
    rule: str = "r1", zone: str | None = None, update_seq: int = 0,
) -> AlertRecord:  # fmt: skip
    return AlertRecord(
        alert_id=alert_id, event=event, camera_id=camera, rule=rule, zone=zone, class_name="person", class_id=0,  # type: ignore[arg-type]
        track_id=3, confidence=score, box=box, first_seen_ns=started_ns, last_seen_ns=last_ns, frame=frame,
        latency_ms=12.0, snapshot=None, snapshot_kind="frame_ref", update_seq=update_seq,
    )  # fmt: skip


def wait_for(check: Any, timeout_s: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached within {timeout_s} s")


def env_or(name: str, default: str) -> str:
    return os.environ.get(name, default)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """Debian's chromium (deploy/install-system-deps.sh): Playwright cannot download its own browser here."""
    return {**browser_type_launch_args, "executable_path": os.environ.get("VIGIL_CHROMIUM", "/usr/bin/chromium")}
