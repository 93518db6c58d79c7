"""`vigil serve`: the HTTP detection API answers exactly like `vigil predict`, and only with the token."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

TOKEN = "test-token-0123456789abcdef"


def bus_jpg() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("ultralytics")
    if spec is None or spec.origin is None:
        pytest.fail("ultralytics is not installed: `make test` installs the export extra that ships bus.jpg")
    return Path(spec.origin).parent / "assets" / "bus.jpg"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    config = tmp_path_factory.mktemp("serve") / "vigil.yaml"
    config.write_text(
        f"detect:\n  model: yolox_nano\n  http:\n    port: {port}\n    token: ${{VIGIL_API_TOKEN}}\n"
        "metrics:\n  port: 0\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "vigil", "serve", "--config", str(config)],
        env={"VIGIL_API_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"},
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{url}/healthz", timeout=1).read()
            break
        except OSError:
            if process.poll() is not None:
                pytest.fail(f"vigil serve exited: {process.stderr.read() if process.stderr else ''}")
            time.sleep(0.2)
    yield url
    process.terminate()
    _, stderr = process.communicate(timeout=20)
    assert TOKEN not in stderr


def post(url: str, body: bytes, token: str | None) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(f"{url}/v1/detect", data=body, method="POST")
    request.add_header("Content-Type", "image/jpeg")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.mark.parametrize("token", [None, "wrong-token-0123456789", ""])
def test_rejects_missing_or_wrong_token(api: str, token: str | None) -> None:
    status, body = post(api, bus_jpg().read_bytes(), token)
    assert status == 401 and "token" in str(body["error"])


def test_same_boxes_as_vigil_predict(api: str) -> None:
    status, body = post(api, bus_jpg().read_bytes(), TOKEN)
    assert status == 200
    predicted = subprocess.run(
        [sys.executable, "-m", "vigil", "predict", str(bus_jpg()), "--model", "yolox_nano", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    expected = json.loads(predicted.stdout.splitlines()[0])
    for key in ("boxes", "class_names", "scores", "width", "height", "model"):
        assert body[key] == expected[key], key
    assert "bus" in expected["class_names"]


def test_undecodable_image_is_a_400(api: str) -> None:
    status, body = post(api, b"definitely not a jpeg", TOKEN)
    assert status == 400 and "not a decodable image" in str(body["error"])


def test_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    config = tmp_path / "vigil.yaml"
    config.write_text(f"detect:\n  model: yolox_nano\n  http:\n    port: {free_port()}\nmetrics:\n  port: 0\n")
    result = subprocess.run(
        [sys.executable, "-m", "vigil", "serve", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "detect.http.token" in result.stderr
