"""Snapshots and clips when Kafka cannot give their frames: a frames topic that no longer exists
answers 410 at once, a broker that does not answer 503 with Retry-After within
`web.media_timeout_s`, and however many media requests are stuck, the API keeps answering."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.web.conftest import NS, VIEWER_TOKEN, Publisher, make_alert, wait_for
from vigil.contracts import FrameRef
from web.media import FrameReader

pytestmark = pytest.mark.broker


class SilentBroker:
    """A TCP listener on loopback that accepts connections and never answers: a broker that hangs
    (a stopped VM, a dead link behind a load balancer), which a refused connection does not show."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.held: list[socket.socket] = []
        self.closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.server.settimeout(0.2)
        while not self.closed.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.held.append(conn)

    def close(self) -> None:
        self.closed.set()
        for conn in self.held:
            conn.close()
        self.server.close()


@pytest.fixture
def silent_broker() -> Iterator[SilentBroker]:
    broker = SilentBroker()
    yield broker
    broker.close()


def test_a_frames_topic_that_is_gone_answers_410_at_once(
    web_factory: Any, publisher: Publisher, footage_frames: list[bytes], unique_name: str
) -> None:
    # The alert's frames were on a topic that is not there any more (topics.frames.name changed,
    # or the topic was deleted): kafka-python's offset lookups for it wait for ever without a bound.
    gone = FrameRef(f"{unique_name}.old-frames", 0, 12)
    t0 = time.time_ns() - 60 * NS
    publisher.alert(make_alert("al_topic_gone", "started", "cam-g", gone, t0, t0))
    publisher.alert(make_alert("al_topic_gone", "ended", "cam-g", gone, t0, t0 + 3 * NS))
    web = web_factory()
    client = web.client(VIEWER_TOKEN)
    wait_for(lambda: client.get("/api/alerts/al_topic_gone").json().get("state") == "ended", what="stored")
    for path in ("/api/alerts/al_topic_gone/snapshot.jpg", "/api/alerts/al_topic_gone/clip.mp4"):
        started = time.monotonic()
        answer = client.get(path)
        took = time.monotonic() - started
        assert answer.status_code == 410, (path, answer.status_code, answer.text[:300])
        assert f"topic {gone.topic}, which does not exist any more" in answer.json()["error"], answer.text
        assert took < 10, f"{path} took {took:.1f} s"  # one metadata answer; loose for a loaded machine
        print(f"{path}: 410 in {took:.2f} s")
    # The camera's frames on the live frames topic still make snapshots (the reader pool recovered).
    refs = publisher.frames("cam-g", footage_frames[:10], 5.0, time.time_ns() - 20 * NS)
    publisher.alert(make_alert("al_here", "started", "cam-g", refs[3][0], refs[3][1], refs[3][1]))
    wait_for(lambda: client.get("/api/alerts/al_here").status_code == 200, what="al_here stored")
    assert client.get("/api/alerts/al_here/snapshot.jpg").status_code == 200


def test_kafka_not_answering_is_503_and_the_api_keeps_answering(
    web_factory: Any, publisher: Publisher, silent_broker: SilentBroker
) -> None:
    t0 = time.time_ns() - 60 * NS
    ids = [f"al_hang{n}" for n in range(6)]
    for n, alert_id in enumerate(ids):
        ref = FrameRef(publisher.config.topics.frames.name, 0, n)
        publisher.alert(make_alert(alert_id, "started", "cam-h", ref, t0 + n * NS, t0 + n * NS))
        publisher.alert(make_alert(alert_id, "ended", "cam-h", ref, t0 + n * NS, t0 + n * NS + 2 * NS))
    web = web_factory(media_workers=2, media_timeout_s=1.0)
    client = web.client(VIEWER_TOKEN)
    wait_for(lambda: len(client.get("/api/alerts", params={"camera": "cam-h"}).json()["items"]) == 6, what="stored")
    # The web process's frame readers now reach a broker that accepts connections and says nothing.
    hung = web.config.model_copy(
        update={"kafka": web.config.kafka.model_copy(update={"bootstrap_servers": [f"127.0.0.1:{silent_broker.port}"]})}
    )
    web.service.reader = FrameReader(hung)

    def get(path: str) -> tuple[int, float, httpx.Response]:
        with httpx.Client(base_url=web.base, headers={"Authorization": f"Bearer {VIEWER_TOKEN}"}, timeout=120) as c:
            started = time.monotonic()
            answer = c.get(path)
            return answer.status_code, time.monotonic() - started, answer

    # More media requests than the web's whole default thread pool (40): before media had a lane of
    # their own, these took every thread and the API below waited for them.
    paths = [f"/api/alerts/{ids[n % 6]}/{'snapshot.jpg' if n % 2 else 'clip.mp4'}" for n in range(48)]
    with ThreadPoolExecutor(len(paths)) as pool:
        media = [pool.submit(get, p) for p in paths]
        time.sleep(1.0)  # they are in flight
        api_started = time.monotonic()
        listed = client.get("/api/alerts", params={"limit": 5})
        me = client.get("/api/me")
        api_s = time.monotonic() - api_started
        answers = [m.result(timeout=120) for m in media]
    assert listed.status_code == 200 and me.status_code == 200
    assert api_s < 5, f"the API waited {api_s:.1f} s behind stuck media requests"
    statuses = [status for status, _, _ in answers]
    assert statuses == [503] * len(paths), statuses
    for _, _, answer in answers:
        assert int(answer.headers["retry-after"]) >= 1 and answer.json()["retry_after_s"] >= 1
    messages = {a.json()["error"].split(" while ")[0].split(" (")[0] for _, _, a in answers}
    assert any("did not answer within 1 s" in a.json()["error"] for _, _, a in answers), messages
    # Each stuck build gives up after about web.media_timeout_s; the slowest waited its turn behind a few.
    slowest = max(seconds for _, seconds, _ in answers)
    print(f"48 media requests against a silent broker: API answered in {api_s:.2f} s, "
          f"slowest media answer {slowest:.1f} s, answers {sorted(messages)}")  # fmt: skip
    assert slowest < 60
