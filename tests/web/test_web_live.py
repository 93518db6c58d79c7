"""Live state over real HTTP: cameras from ingest heartbeats and frame arrival, the newest frame
with its detections, server-sent events, the system page's figures."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest

from tests.web.conftest import NS, VIEWER_TOKEN, Publisher, make_alert, wait_for, web_config
from vigil.config import VigilConfig
from vigil.contracts import DeadLetter, DetectionsRecord, ModelRef, StubRecord
from vigil.detections import Detections
from vigil.status import CameraState, StatusRecord

pytestmark = pytest.mark.broker
ZONE = {"name": "door", "units": "fraction", "polygon": [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]]}


def live_config(vigil_config: VigilConfig, tmp_path: Path, hashes: dict[str, str]) -> VigilConfig:
    data = vigil_config.model_dump(mode="json")
    data["cameras"] = [
        {"id": "cam-live", "kind": "replay", "url": "/dev/null", "fps": 5, "zones": [ZONE]},
        {"id": "cam-idle", "kind": "replay", "url": "/dev/null", "fps": 5},
    ]
    data.pop("web")
    return web_config(VigilConfig.model_validate(data), tmp_path, hashes)


class EventReader:
    """An SSE client in a thread, collecting (event, data) pairs."""

    def __init__(self, base: str, query: str = "") -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {VIEWER_TOKEN}"}, timeout=None)
        self.open = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(query,), daemon=True)
        self.thread.start()
        assert self.open.wait(10)

    def _run(self, query: str) -> None:
        try:
            with self.client.stream("GET", f"/api/events{query}") as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                self.open.set()
                kind = None
                for line in response.iter_lines():
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: ") and kind:
                        self.events.append((kind, json.loads(line[6:])))
        except httpx.HTTPError:
            pass

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [data for k, data in self.events if k == kind]

    def close(self) -> None:
        self.client.close()


def detections_for(ref: Any, seq: int, capture_ns: int) -> DetectionsRecord:
    det = Detections(
        xyxy=np.array([[100, 250, 200, 470]], np.float32),
        confidence=np.array([0.9], np.float32),
        class_id=np.array([0], np.int32),
    )
    return DetectionsRecord("cam-live", seq, capture_ns, ref, ModelRef("yolox_nano", "1"), 640, 480, det, ("person",))


def status(stage: str, state: str, process: str = "ingest@test:1", **extra: Any) -> StatusRecord:
    cameras = (
        (CameraState("cam-live", state, time.time_ns() - 5 * NS, 5.0, None, 2, "connection refused"),)
        if stage == "ingest"
        else ()
    )  # type: ignore[arg-type]
    return StatusRecord(process, stage, "test", 1, time.time_ns(), time.time_ns(), 5.0, True, cameras=cameras, **extra)  # type: ignore[arg-type]


def test_cameras_frames_detections_and_events(
    web_factory: Any,
    publisher: Publisher,
    footage_frames: list[bytes],
    vigil_config: VigilConfig,
    tmp_path: Path,
    password_hashes: Any,
) -> None:
    web = web_factory(live_config(vigil_config, tmp_path, password_hashes))
    client = web.client(VIEWER_TOKEN)
    cameras = {c["id"]: c for c in client.get("/api/cameras").json()["items"]}
    assert set(cameras) == {"cam-live", "cam-idle"} and cameras["cam-live"]["latest"] is None
    assert cameras["cam-live"]["state"] == "unknown"
    assert client.get("/api/cameras/cam-live/latest.jpg").status_code == 503
    assert client.get("/api/cameras/nope/latest.jpg").status_code == 404

    reader = EventReader(web.base)
    quiet = EventReader(web.base, "?frames=0")
    refs = publisher.frames("cam-live", footage_frames[:3], 5.0, time.time_ns())
    record = detections_for(refs[2][0], 2, refs[2][1])
    publisher.raw(publisher.config.topics.detections.name, record.to_bytes(), b"cam-live")
    frame = wait_for(lambda: [e for e in reader.of("frame") if e["seq"] == 2 and e["detections"]], what="frame event")[
        0
    ]
    assert frame["detections"][0] == {
        "box": [100.0, 250.0, 200.0, 470.0],
        "class_name": "person",
        "class_id": 0,
        "score": 0.9,
    }
    assert frame["image_url"] == "/api/cameras/cam-live/latest.jpg?seq=2"

    latest = client.get("/api/cameras/cam-live/latest.json").json()
    assert latest["seq"] == 2 and latest["width"] == 640 and len(latest["detections"]) == 1
    raw = client.get("/api/cameras/cam-live/latest.jpg?seq=1")
    assert raw.headers["x-vigil-seq"] == "1" and raw.content == footage_frames[1]
    drawn = client.get("/api/cameras/cam-live/latest.jpg?boxes=1&zones=1")
    assert drawn.headers["x-vigil-seq"] == "2" and drawn.headers["x-vigil-capture-ns"] == str(refs[2][1])
    image = cv2.imdecode(np.frombuffer(drawn.content, np.uint8), cv2.IMREAD_COLOR)
    plain = cv2.imdecode(np.frombuffer(footage_frames[2], np.uint8), cv2.IMREAD_COLOR)
    assert np.abs(image[300:460, 100].astype(int) - plain[300:460, 100].astype(int)).mean() > 30  # the box
    assert (
        np.abs(image[239:242, 300:600].astype(int) - plain[239:242, 300:600].astype(int)).mean() > 30
    )  # the zone edge

    camera = next(c for c in client.get("/api/cameras").json()["items"] if c["id"] == "cam-live")
    assert camera["state"] == "streaming" and "frame arrival" in camera["detail"]
    assert camera["zones"][0]["polygon_px"] == [[0.0, 240.0], [640.0, 240.0], [640.0, 480.0], [0.0, 480.0]]
    assert 4.0 < camera["fps"] < 6.0 and camera["latest"]["seq"] == 2

    # Ingest's heartbeat is the authority on camera state once it arrives.
    publisher.raw(publisher.config.topics.status.name, status("ingest", "reconnecting").to_bytes(), b"ingest@test:1")
    changed = wait_for(
        lambda: [e for e in reader.of("camera") if e["id"] == "cam-live" and e["state"] == "reconnecting"],
        what="camera event",
    )
    assert changed[0]["detail"] == "connection refused"
    assert (
        next(c for c in client.get("/api/cameras").json()["items"] if c["id"] == "cam-live")["state"] == "reconnecting"
    )

    publisher.alert(make_alert("al_live", "started", "cam-live", refs[2][0], refs[2][1], refs[2][1]))
    alert = wait_for(lambda: [e for e in reader.of("alert") if e["id"] == "al_live"], what="alert event")[0]
    assert alert["state"] == "active" and alert["camera"] == "cam-live"
    wait_for(
        lambda: [e for e in reader.of("camera") if e["id"] == "cam-live" and e["alert_active"]], what="alert_active"
    )
    assert wait_for(lambda: [e for e in quiet.of("alert") if e["id"] == "al_live"], what="alert on the quiet stream")
    assert not quiet.of("frame")  # frames=0: the review page gets no frames

    letter = DeadLetter.of(StubRecord("t", 0, 5, b"k", b"v"), "detect", "undecodable JPEG (123 bytes)")
    publisher.producer.send(publisher.config.topics.dead_letter.name, key=b"k", value=b"v", headers=letter.to_headers())
    publisher.raw(
        publisher.config.topics.status.name, status("detect", "", "detect@test:2", stats={"fps": 3.0}).to_bytes(), b"d"
    )
    system = wait_for(
        lambda: (s := client.get("/api/system").json())["dead_letters"]
        and {"ingest", "detect", "web"} <= {p["stage"] for p in s["processes"]} and s,
        what="system",
    )  # fmt: skip
    assert system["dead_letters"] == {"detect: undecodable JPEG (N bytes)": 1}
    detect = next(p for p in system["processes"] if p["stage"] == "detect")
    assert detect["stats"] == {"fps": 3.0} and not detect["gone"]
    assert system["detect"]["fps"] > 0  # from the detections record published above
    assert web.config.web.group_id in wait_for(lambda: client.get("/api/system").json()["lag"], what="lags")

    def clients() -> float:
        line = next(x for x in client.get("/metrics").text.splitlines() if x.startswith("vigil_web_sse_clients "))
        return float(line.split()[-1])

    assert clients() == 2
    reader.close()
    quiet.close()
    wait_for(lambda: clients() == 0, timeout_s=30, what="disconnected clients removed")
