"""`vigil serve`: the HTTP detection API answers exactly like `vigil predict`, and only with the token."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.detect.helpers import bomb_jpeg

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
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """URL and pid of a `vigil serve` subprocess."""
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
    yield url, process.pid
    process.terminate()
    _, stderr = process.communicate(timeout=20)
    assert TOKEN not in stderr


@pytest.fixture(scope="module")
def api(served: tuple[str, int]) -> str:
    return served[0]


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1]) / 1024


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
    assert status == 400 and "neither JPEG nor PNG" in str(body["error"])
    header_only = bus_jpg().read_bytes()[:700]  # the frame header is there, the pixels are not
    status, body = post(api, header_only + b"\x00" * 64, TOKEN)
    assert status == 400 and "does not decode" in str(body["error"]), body
    status, body = post(api, b"", TOKEN)
    assert status == 400 and "no bytes" in str(body["error"])


def test_bombs_are_a_413_naming_the_limit_and_cost_no_memory(served: tuple[str, int]) -> None:
    url, pid = served
    assert post(url, bus_jpg().read_bytes(), TOKEN)[0] == 200
    before = peak_rss_mb(pid)
    results: list[tuple[int, dict[str, object]]] = []
    started = time.monotonic()
    # Six at once: each decoded would be 2.7 GB; refused they cost nothing and need no lock or slot.
    threads = [threading.Thread(target=lambda: results.append(post(url, bomb_jpeg(30000, 30000), TOKEN)))
               for _ in range(6)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    elapsed = time.monotonic() - started
    assert [status for status, _ in results] == [413] * 6, results
    error = str(results[0][1]["error"])
    assert "30000x30000 = 900.0 MP, over detect.max_pixels=33177600 (33.2 MP)" in error, error
    assert elapsed < 20, f"refusing 6 bombs took {elapsed:.1f} s (decoding one took ~9-55 s before)"
    assert peak_rss_mb(pid) - before < 200, f"peak RSS grew from {before:.0f} MB to {peak_rss_mb(pid):.0f} MB"
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR" + (100_000).to_bytes(4, "big") * 2 + b"\x08\x02\x00\x00\x00"
    status, body = post(url, png + b"\x00" * 100, TOKEN)
    assert status == 413 and "100000x100000" in str(body["error"])
    assert post(url, bus_jpg().read_bytes(), TOKEN)[0] == 200  # and the server carries on


def test_bomb_is_refused_from_its_header_before_the_body_arrives(api: str) -> None:
    bomb = bomb_jpeg(30000, 30000)
    head = (f"POST /v1/detect HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Type: image/jpeg\r\nContent-Length: {15 * 1024 * 1024}")  # fmt: skip
    # Only the first KB of a 15 MB body is ever sent: a server reading the body before judging it would
    # wait for the rest and this would time out.
    status, body = raw_request(api, head, bomb[:1024])
    assert status == 413 and "detect.max_pixels" in str(body["error"])


def test_refuses_to_start_without_a_token(tmp_path: Path) -> None:
    config = tmp_path / "vigil.yaml"
    config.write_text(f"detect:\n  model: yolox_nano\n  http:\n    port: {free_port()}\nmetrics:\n  port: 0\n")
    result = subprocess.run(
        [sys.executable, "-m", "vigil", "serve", "--config", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "detect.http.token" in result.stderr


def raw_request(url: str, head: str, body: bytes = b"", timeout_s: float = 10) -> tuple[int, dict[str, object]]:
    """Send `head` (request line + headers, no blank line) and `body` on a plain socket; the status and JSON
    body of the answer. A server that waits for more bytes makes this time out (socket.timeout)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout_s) as conn:
        conn.sendall(head.encode() + b"\r\n\r\n" + body)
        answer = b""
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < _length(answer):
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


def _length(answer: bytes) -> int:
    for line in answer.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 1 << 30


def test_negative_content_length_is_a_400_not_a_read_until_close(api: str) -> None:
    head = (f"POST /v1/detect HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: image/jpeg\r\nContent-Length: -1")  # fmt: skip
    # The connection stays open: before the fix the server read until close and this timed out.
    status, body = raw_request(api, head, b"\xff\xd8 a few bytes and no end")
    assert status == 400 and "Content-Length" in str(body["error"])
    status, _ = raw_request(api, head.replace("-1", "12345678901234567890"))
    assert status == 413


def failing_model(directory: Path) -> Path:
    """A real ONNX model (ultralytics layout, 64x64, one class) that infers fine on the all-zero probe but fails
    inside ONNX Runtime on any real image: a Gather whose index grows with the brightest pixel."""
    import onnx
    from onnx import TensorProto, helper

    from models import ModelManifest, sha256_of

    anchors = 8 * 8 + 4 * 4 + 2 * 2  # strides 8, 16, 32 on 64x64
    nodes = [
        helper.make_node("ReduceMax", ["images"], ["peak"], keepdims=0),
        helper.make_node("Mul", ["peak", "thousand"], ["scaled"]),
        helper.make_node("Cast", ["scaled"], ["index"], to=TensorProto.INT64),
        helper.make_node("Gather", ["one_value", "index"], ["picked"]),  # index > 0 is out of bounds
        helper.make_node("Mul", ["zeros", "picked"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "fails_on_real_images",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 5, anchors])],
        initializer=[
            helper.make_tensor("thousand", TensorProto.FLOAT, [], [1000.0]),
            helper.make_tensor("one_value", TensorProto.FLOAT, [1], [0.0]),
            helper.make_tensor("zeros", TensorProto.FLOAT, [1, 5, anchors], [0.0] * 5 * anchors),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    path = directory / "fails.onnx"
    onnx.save(model, str(path))
    manifest = ModelManifest(
        name="fails", version="test", family="ultralytics", path=path.name, input_size=(64, 64),
        channel_order="rgb", scale=1 / 255, letterbox="center", class_names=("thing",), sha256=sha256_of(path),
        licence="test", source="tests/detect/test_detect_http.py",
    )  # fmt: skip
    manifest.save(directory / "fails.yaml")
    return directory / "fails.yaml"


def test_inference_failure_is_a_json_500_and_the_api_keeps_serving(tmp_path: Path) -> None:
    from detect.detector import Detector
    from detect.http_api import DetectionApi
    from models import Registry
    from vigil.config.detect import DetectConfig, HttpApiConfig

    detector = Detector.load(Registry(tmp_path).resolve(str(failing_model(tmp_path))))  # the probe passes
    api = DetectionApi(detector, DetectConfig(http=HttpApiConfig(port=0, token=TOKEN)))  # type: ignore[arg-type]
    api.start()
    try:
        for _ in range(2):  # the server answers again after a failure
            status, body = post(api.url, bus_jpg().read_bytes(), TOKEN)
            assert status == 500 and str(body["error"]).startswith("detection failed: "), body
            assert "out of" in str(body["error"]) or "Gather" in str(body["error"]), body
        status, body = post(api.url, b"not a jpeg", TOKEN)
        assert status == 400
    finally:
        api.stop()


def test_bombs_are_judged_before_the_inference_lock_and_the_decode_slots() -> None:
    """With the one inference lock and every decode slot taken, a bomb is still refused at once, and a
    legitimate image waits for a slot instead of being decoded beside the others."""
    from detect.detector import Detector
    from detect.http_api import DetectionApi
    from vigil.config.detect import DetectConfig, HttpApiConfig

    config = DetectConfig(http=HttpApiConfig(port=0, token=TOKEN), decode_concurrency=1)  # type: ignore[arg-type]
    api = DetectionApi(Detector.from_config(config), config)
    api.start()
    try:
        with api._inference, api.decoder._slots:
            started = time.monotonic()
            status, body = post(api.url, bomb_jpeg(20000, 20000), TOKEN)
            assert status == 413 and time.monotonic() - started < 10, body
            waiting: list[int] = []
            thread = threading.Thread(target=lambda: waiting.append(post(api.url, bus_jpg().read_bytes(), TOKEN)[0]))
            thread.start()
            thread.join(1.5)
            assert thread.is_alive() and not waiting, "a request was decoded while every decode slot was taken"
        thread.join(60)
        assert waiting == [200]
    finally:
        api.stop()
