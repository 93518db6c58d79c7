"""Snapshots and clips read back from the frames topic on the real broker, served over real HTTP."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest
from kafka.structs import TopicPartition

from tests.web.conftest import NS, VIEWER_TOKEN, Publisher, make_alert, wait_for
from vigil.config import VigilConfig
from vigil.draw import annotate_alert
from vigil.kafka import make_admin

pytestmark = pytest.mark.broker
FPS = 5.0


def _ended_alert(publisher: Publisher, frames: list[bytes], camera: str, alert_id: str, start: int, end: int,
                 t0: int) -> tuple[Any, list[tuple[Any, int]]]:  # fmt: skip
    refs = publisher.frames(camera, frames, FPS, t0)
    started = make_alert(alert_id, "started", camera, refs[start][0], refs[start][1], refs[start][1])
    publisher.alert(started)
    publisher.alert(make_alert(alert_id, "ended", camera, refs[end][0], refs[start][1], refs[end][1]))
    return started, refs


def test_snapshot_and_clip_from_the_frames_topic(
    web_factory: Any, publisher: Publisher, footage_frames: list[bytes]
) -> None:
    t0 = time.time_ns() - 30 * NS
    started, refs = _ended_alert(publisher, footage_frames, "cam-a", "al_media1", 10, 40, t0)
    # Another camera on the same topic, interleaved in time: its frames must not enter the clip.
    publisher.frames("cam-b", footage_frames[:30], FPS, t0 + NS // 10)
    web = web_factory()
    client = web.client(VIEWER_TOKEN)
    alert = wait_for(lambda: client.get("/api/alerts/al_media1").json().get("state") == "ended" and
                     client.get("/api/alerts/al_media1").json(), what="the alert in the store")  # fmt: skip
    assert alert["box"] == list(started.box) and alert["started_ns"] == refs[10][1] and alert["ended_ns"] == refs[40][1]

    snapshot = client.get(alert["snapshot_url"])
    assert snapshot.status_code == 200 and snapshot.headers["content-type"] == "image/jpeg"
    served = cv2.imdecode(np.frombuffer(snapshot.content, np.uint8), cv2.IMREAD_COLOR)
    expected = cv2.imdecode(np.frombuffer(annotate_alert(footage_frames[10], started), np.uint8), cv2.IMREAD_COLOR)
    raw = cv2.imdecode(np.frombuffer(footage_frames[10], np.uint8), cv2.IMREAD_COLOR)
    assert served.shape == raw.shape
    # The alert's own frame with the alert's box: equal to the core's drawing up to JPEG noise ...
    assert float(np.abs(served.astype(int) - expected.astype(int)).mean()) < 2.0
    # ... and the box is really drawn there: its left edge differs from the raw frame.
    x1, y1, _, y2 = (int(v) for v in started.box)
    edge = np.abs(served[y1 + 30 : y2, x1].astype(int) - raw[y1 + 30 : y2, x1].astype(int)).mean()
    assert edge > 30, edge

    first = time.monotonic()
    clip = client.get(alert["clip_url"])
    first_s = time.monotonic() - first
    assert clip.status_code == 200 and clip.headers["content-type"] == "video/mp4", clip.text[:200]
    with av.open(io.BytesIO(clip.content)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        decoded = [frame for frame in container.decode(stream)]
    pre, post = web.config.web.clip_pre_s, web.config.web.clip_post_s
    event_s = (refs[40][1] - refs[10][1]) / NS
    assert len(decoded) >= (pre + event_s + post) * FPS - 2, len(decoded)
    assert len(decoded) <= 41  # frames 5..45 of cam-a only: none of cam-b's
    assert (decoded[0].width, decoded[0].height) == (640, 480)
    # Presentation times are capture times: 8 s of footage plays for 8 s.
    span = float((decoded[-1].pts - decoded[0].pts) * decoded[0].time_base)
    assert abs(span - (len(decoded) - 1) / FPS) < 0.05, span

    again = time.monotonic()
    cached = client.get(alert["clip_url"])
    assert cached.content == clip.content
    assert time.monotonic() - again < max(first_s, 0.5)
    ranged = client.get(alert["clip_url"], headers={"Range": "bytes=100-299"})
    assert ranged.status_code == 206
    assert ranged.headers["content-range"] == f"bytes 100-299/{len(clip.content)}"
    assert ranged.content == clip.content[100:300]


def test_concurrent_requests_build_a_clip_once(
    web_factory: Any, publisher: Publisher, footage_frames: list[bytes]
) -> None:
    _ended_alert(publisher, footage_frames[:30], "cam-c", "al_media2", 8, 20, time.time_ns() - 20 * NS)
    web = web_factory()
    client = web.client(VIEWER_TOKEN)
    wait_for(lambda: client.get("/api/alerts/al_media2").json().get("state") == "ended", what="stored")

    def builds() -> float:
        text = client.get("/metrics").text
        line = next(
            (x for x in text.splitlines() if x.startswith('vigil_web_media_builds_total{kind="clip",result="built"}')),
            "x 0",
        )
        return float(line.split()[-1])

    before = builds()
    bodies: list[bytes] = []
    threads = [
        threading.Thread(
            target=lambda: bodies.append(web.client(VIEWER_TOKEN).get("/api/alerts/al_media2/clip.mp4").content)
        )
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(bodies) == 4 and len(set(bodies)) == 1 and len(bodies[0]) > 1000
    assert builds() - before == 1


def test_aged_out_frames_answer_410_and_future_post_roll_202(
    web_factory: Any, publisher: Publisher, footage_frames: list[bytes], vigil_config: VigilConfig
) -> None:
    _, refs = _ended_alert(publisher, footage_frames[:20], "cam-d", "al_gone", 5, 15, time.time_ns() - 20 * NS)
    now = time.time_ns()
    later = publisher.frames("cam-d", footage_frames[:5], FPS, now, seq0=100)
    publisher.alert(make_alert("al_recent", "started", "cam-d", later[0][0], now, now))
    publisher.alert(make_alert("al_recent", "ended", "cam-d", later[4][0], now, later[4][1]))
    web = web_factory(clip_post_s=300.0)  # far off, so a slow start cannot eat into the wait it reports
    client = web.client(VIEWER_TOKEN)
    wait_for(lambda: client.get("/api/alerts/al_recent").json().get("state") == "ended", what="stored")
    pending = client.get("/api/alerts/al_recent/clip.mp4")
    assert pending.status_code == 202 and pending.json()["error"] == "clip is still being recorded"
    assert 240 <= pending.json()["retry_after_s"] <= 302 and int(pending.headers["retry-after"]) >= 240

    # Retention deleting the start of the camera's partition is what ages frames out.
    ref = refs[15][0]
    admin = make_admin(vigil_config.kafka)
    try:
        admin.delete_records({TopicPartition(ref.topic, ref.partition): ref.offset + 1})
    finally:
        admin.close()
    for path in ("/api/alerts/al_gone/snapshot.jpg", "/api/alerts/al_gone/clip.mp4"):
        gone = client.get(path)
        assert gone.status_code == 410, (path, gone.text)
        assert "topics.frames.retention_ms" in gone.json()["error"]


def test_clip_cache_stays_under_its_cap(
    web_factory: Any, publisher: Publisher, footage_frames: list[bytes], tmp_path: Path
) -> None:
    t0 = time.time_ns() - 30 * NS
    refs = publisher.frames("cam-e", footage_frames, FPS, t0)
    for n in range(3):
        alert_id = f"al_cap{n}"
        publisher.alert(make_alert(alert_id, "started", "cam-e", refs[10 * n][0], refs[10 * n][1], refs[10 * n][1]))
        publisher.alert(
            make_alert(alert_id, "ended", "cam-e", refs[10 * n + 20][0], refs[10 * n][1], refs[10 * n + 20][1])
        )
    web = web_factory(clip_cache_mb=1)
    client = web.client(VIEWER_TOKEN)
    wait_for(
        lambda: client.get("/api/alerts", params={"camera": "cam-e"}).json()["items"].__len__() == 3, what="stored"
    )
    sizes = []
    for n in range(3):
        response = client.get(f"/api/alerts/al_cap{n}/clip.mp4")
        assert response.status_code == 200
        sizes.append(len(response.content))
    folder = Path(web.config.web.clip_cache_dir)
    total = sum(p.stat().st_size for p in folder.iterdir())
    assert total <= max(1024 * 1024, max(sizes)), (total, sizes)
