"""`Health` and `MetricsServer`: real HTTP requests on loopback, no mocks."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from uuid import uuid4

import pytest
from prometheus_client import Counter

from vigil.config import MetricsConfig
from vigil.errors import ConfigError
from vigil.health import Health
from vigil.metrics_server import MetricsServer


def get(url: str) -> tuple[int, str, str]:
    """(status, content type, body) of a GET, including 4xx/5xx answers."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def served() -> Iterator[tuple[MetricsServer, Health]]:
    health = Health()
    server = MetricsServer(MetricsConfig(host="127.0.0.1", port=0), health)
    server.start()
    try:
        yield server, health
    finally:
        server.stop()


# -- Health ------------------------------------------------------------------------------------------


def test_nothing_reported_is_not_ready() -> None:
    report = Health().ready()
    assert report.ready is False
    assert report.components == ()
    assert report.not_ready == ["<no component has reported yet>"]


def test_ready_only_when_every_component_is_ok() -> None:
    health = Health()
    health.set("kafka", True)
    health.set("model", False, "loading yolox_nano")
    report = health.ready()
    assert report.ready is False
    assert report.not_ready == ["model"]
    assert [c.name for c in report.components] == ["kafka", "model"]
    health.set("model", True)
    assert health.ready().ready is True
    health.set("camera:front", False, "reconnecting")
    assert health.ready().not_ready == ["camera:front"]
    health.remove("camera:front")
    assert health.ready().ready is True


def test_since_changes_only_when_ok_flips() -> None:
    health = Health()
    health.set("kafka", False, "connecting")
    first = health.ready().components[0].since
    health.set("kafka", False, "still connecting")
    assert health.ready().components[0].since == first
    assert health.ready().components[0].detail == "still connecting"
    health.set("kafka", True)
    assert health.ready().components[0].since >= first


def test_detail_masks_url_passwords() -> None:
    health = Health()
    health.set("camera:front", False, "cannot open rtsp://admin:hunter2@10.0.0.5/stream")
    detail = health.ready().components[0].detail
    assert "hunter2" not in detail
    assert "rtsp://admin:***@10.0.0.5/stream" in detail


def test_empty_name_is_refused() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        Health().set(" ", True)


# -- MetricsServer -----------------------------------------------------------------------------------


def test_no_socket_before_start() -> None:
    server = MetricsServer(MetricsConfig(port=0), Health())
    assert server.port is None and server.url is None
    server.stop()  # stopping a server that never started is harmless


def test_metrics_exposes_a_counter(served: tuple[MetricsServer, Health]) -> None:
    server, _ = served
    name = f"vigil_test_{uuid4().hex[:8]}"
    counter = Counter(name, "a counter incremented by the test")
    counter.inc(3)
    status, content_type, body = get(f"{server.url}/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    assert f"{name}_total 3.0" in body
    counter.inc()
    assert f"{name}_total 4.0" in get(f"{server.url}/metrics")[2]


def test_healthz_is_ok_while_not_ready(served: tuple[MetricsServer, Health]) -> None:
    server, health = served
    health.set("kafka", False, "connecting")
    assert get(f"{server.url}/healthz") == (200, "text/plain; charset=utf-8", "ok\n")


def test_readyz_503_until_ready(served: tuple[MetricsServer, Health]) -> None:
    server, health = served
    status, content_type, body = get(f"{server.url}/readyz")
    assert (status, content_type) == (503, "application/json")
    assert json.loads(body)["ready"] is False

    health.set("kafka", True)
    health.set("model", False, "loading yolox_nano")
    status, _, body = get(f"{server.url}/readyz")
    report = json.loads(body)
    assert status == 503
    assert report["not_ready"] == ["model"]
    assert report["components"]["model"] == {
        "ok": False,
        "detail": "loading yolox_nano",
        "since": report["components"]["model"]["since"],
    }

    health.set("model", True, "yolox_nano on CPUExecutionProvider")
    status, _, body = get(f"{server.url}/readyz?verbose=1")
    report = json.loads(body)
    assert status == 200
    assert report["ready"] is True and report["not_ready"] == []
    assert set(report["components"]) == {"kafka", "model"}


def test_unknown_path_is_404(served: tuple[MetricsServer, Health]) -> None:
    server, _ = served
    status, _, body = get(f"{server.url}/nope")
    assert status == 404
    assert "/metrics" in body


def test_stop_frees_the_port() -> None:
    server = MetricsServer(MetricsConfig(host="127.0.0.1", port=0), Health())
    server.start()
    port = server.port
    assert port is not None and port > 0
    assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    server.stop()
    assert server.port is None
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
    # SO_REUSEADDR tolerates the closed connections' TIME_WAIT, but on Linux never a socket still
    # listening: so this bind proves the listener is closed, as a restarted server needs.
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))
        probe.listen()
    with MetricsServer(MetricsConfig(host="127.0.0.1", port=port), Health()) as again:
        assert again.port == port
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200


def test_port_offset_and_port_in_use() -> None:
    base = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", base))
        taken.listen()
        clash = MetricsServer(MetricsConfig(host="127.0.0.1", port=base), Health())
        with pytest.raises(ConfigError) as info:
            clash.start()
        assert info.value.issues[0].key == "metrics.port"
        assert f"127.0.0.1:{base}" in str(info.value)
        assert clash.port is None
    # The port was freed by closing `taken`; the next process (offset 1) must take base + 1.
    with MetricsServer(MetricsConfig(host="127.0.0.1", port=base - 1), Health(), port_offset=1) as server:
        assert server.port == base
        assert get(f"http://127.0.0.1:{base}/healthz")[0] == 200


def test_disabled_serves_nothing() -> None:
    server = MetricsServer(MetricsConfig(enabled=False, port=0), Health())
    server.start()
    assert server.port is None
    server.stop()


def test_port_past_65535_is_a_config_error() -> None:
    server = MetricsServer(MetricsConfig(port=65535), Health(), port_offset=1)
    with pytest.raises(ConfigError, match="past 65535"):
        server.start()
