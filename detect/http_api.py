"""On-demand detection over HTTP: `POST /v1/detect` with an image body returns its detections as
JSON, through the same `Detector` as the Kafka worker and `vigil predict`.

    curl -H "Authorization: Bearer $VIGIL_API_TOKEN" --data-binary @bus.jpg \\
         -H "Content-Type: image/jpeg" http://127.0.0.1:8600/v1/detect

Requests without the configured bearer token get 401; there is no anonymous mode, so the API
refuses to start without `detect.http.token`. Hostile bodies cost little: the image's size is read from
the first bytes of the body (JPEG SOF / PNG IHDR) and anything over `detect.max_pixels` is answered 413
before the rest is read, decoded or queued for the one-inference-at-a-time lock; at most
`detect.decode_concurrency` decoded images exist at once, however many requests arrive.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

from detect.detector import Detector
from detect.results import detections_json
from models.onnx_errors import ORT_ERRORS
from vigil.config.detect import DetectConfig
from vigil.errors import ConfigError, ConfigIssue, ContractError, ModelError
from vigil.imaging import BoundedDecoder, ImageInfo, OversizedImageError, check_size, probe_prefix

log = logging.getLogger(__name__)
# What a request's detection may raise besides a bad image: answered with a JSON 500.
RUN_ERRORS: tuple[type[Exception], ...] = (ModelError, *ORT_ERRORS)
# The body is read this much at a time until its header tells the image's size (EXIF can put the
# JPEG frame header some tens of KB in), then at once; a refused body is drained this much at a time.
HEAD_CHUNK = 16 * 1024


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, api: DetectionApi) -> None:
        self.api = api
        super().__init__((api.config.host, api.config.port), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server_version = "vigil"

    @property
    def api(self) -> DetectionApi:
        return cast(_Server, self.server).api

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] == "/healthz":
            self._json(200, {"ok": True})
        else:
            self._json(404, {"error": "not found; POST an image to /v1/detect"})

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != "/v1/detect":
            self._json(404, {"error": "not found; POST an image to /v1/detect"})
            return
        if not self.api.authorised(self.headers.get("Authorization", "")):
            self._json(401, {"error": "missing or wrong bearer token"}, {"WWW-Authenticate": 'Bearer realm="vigil"'})
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._json(411, {"error": "Content-Length is required"})
            return
        if length < 0:
            # rfile.read(-1) would read until the client closes the connection, past any size limit.
            self._json(400, {"error": f"Content-Length must be a byte count >= 0, got {length}"})
            return
        if length > self.api.config.max_image_bytes:
            self._json(413, {"error": f"image is {length} bytes; the limit is detect.http.max_image_bytes"})
            return
        try:
            body = self._read_image(length)
        except OversizedImageError as exc:
            self._refuse(413, str(exc), length)
            return
        except ContractError as exc:
            self._refuse(400, str(exc), length)
            return
        try:
            result = self.api.detect(body)
        except ContractError as exc:
            self._json(400, {"error": str(exc)})
            return
        except RUN_ERRORS as exc:
            # The client gets an answer rather than a dropped connection; the operator gets the traceback.
            log.exception("detection failed for a request")
            reason = (str(exc).splitlines() or [type(exc).__name__])[0][:300]
            self._json(500, {"error": f"detection failed: {reason}"})
            return
        self._json(200, result)

    def _read_image(self, length: int) -> bytearray:
        """The body, read only as far as needed to refuse it: the image's size is checked as soon as its
        header has arrived, so a bomb is refused after a few KB whatever its Content-Length. An accepted
        body is read into one buffer of its length (no copies: bodies count towards memory too)."""
        head = bytearray()
        self._consumed = 0
        info: ImageInfo | None = None
        while info is None and len(head) < length:
            chunk = self.rfile.read1(min(HEAD_CHUNK, length - len(head)))  # what has arrived, without waiting
            if not chunk:
                return head  # the client closed early; what arrived is judged as it is
            head += chunk
            self._consumed = len(head)
            info = probe_prefix(head)
        if info is not None:
            check_size(info, self.api.decoder.max_pixels, self.api.decoder.setting)
        if len(head) == length:
            return head
        body = bytearray(length)
        body[: len(head)] = head
        view, filled = memoryview(body), len(head)
        del head
        while filled < length:
            got = self.rfile.readinto(view[filled:])
            if not got:
                return body[:filled]
            filled += got
            self._consumed = filled
        return body

    def _refuse(self, status: int, error: str, length: int) -> None:
        """Answer, then discard the unread rest of the body (bounded by max_image_bytes, never held), so
        the client reads the answer instead of a reset connection; the connection is closed after."""
        self.close_connection = True
        self._json(status, {"error": error}, {"Connection": "close"})
        left = length - self._consumed
        while left > 0:
            chunk = self.rfile.read(min(HEAD_CHUNK * 4, left))
            if not chunk:
                break
            left -= len(chunk)

    def _json(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class DetectionApi:
    def __init__(self, detector: Detector, config: DetectConfig) -> None:
        self.detector = detector
        self.config = config.http
        self.decoder = BoundedDecoder(config.max_pixels, config.decode_concurrency)
        # One inference at a time: ONNX Runtime already uses every core for one image, so
        # concurrent runs would only make each request slower.
        self._inference = threading.Lock()
        self._server: _Server | None = None

    @property
    def url(self) -> str:
        port = self._server.server_address[1] if self._server else self.config.port
        return f"http://{self.config.host}:{port}"

    def authorised(self, header: str) -> bool:
        token = self.config.token.get_secret_value() if self.config.token else ""
        scheme, _, presented = header.partition(" ")
        # Constant-time comparison: response timing must not reveal how much of a guess was right.
        return bool(token) and scheme.lower() == "bearer" and hmac.compare_digest(presented.strip(), token)

    def detect(self, body: bytes | bytearray) -> dict[str, Any]:
        # The decoded image holds its decode slot until the answer is built: requests waiting for the
        # inference lock never hold more than decode_concurrency images between them.
        with self.decoder.decoded(body, max_bytes=self.config.max_image_bytes) as image:
            with self._inference:
                detections = self.detector([image])[0]
            result = detections_json(self.detector, image, detections, "request")
            del image  # before the slot is released, not when this function returns
        return result

    def start(self) -> None:
        if self.config.token is None:
            raise ConfigError(
                "detect.http",
                [ConfigIssue("detect.http.token", "the detection API needs a token: set it to ${VIGIL_API_TOKEN}")],
            )
        try:
            self._server = _Server(self)
        except OSError as exc:
            raise ConfigError(
                "detect.http",
                [ConfigIssue("detect.http.port", f"cannot listen on {self.config.host}:{self.config.port}: {exc}")],
            ) from exc
        threading.Thread(target=self._server.serve_forever, name="detection-api", daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
