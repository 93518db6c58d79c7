"""On-demand detection over HTTP: `POST /v1/detect` with an image body returns its detections as
JSON, through the same `Detector` as the Kafka worker and `vigil predict`.

    curl -H "Authorization: Bearer $VIGIL_API_TOKEN" --data-binary @bus.jpg \\
         -H "Content-Type: image/jpeg" http://127.0.0.1:8600/v1/detect

Requests without the configured bearer token get 401; there is no anonymous mode, so the API
refuses to start without `detect.http.token`.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, cast

from detect.detector import Detector
from detect.preprocess import decode_jpeg
from detect.results import detections_json
from models.onnx_errors import ORT_ERRORS
from vigil.config.detect import HttpApiConfig
from vigil.errors import ConfigError, ConfigIssue, ContractError, ModelError

log = logging.getLogger(__name__)
# What a request's detection may raise besides a bad image: answered with a JSON 500.
RUN_ERRORS: tuple[type[Exception], ...] = (ModelError, *ORT_ERRORS)


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
        body = self.rfile.read(length)
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
    def __init__(self, detector: Detector, config: HttpApiConfig) -> None:
        self.detector = detector
        self.config = config
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

    def detect(self, body: bytes) -> dict[str, Any]:
        image = decode_jpeg(body, self.config.max_image_bytes)
        with self._inference:
            detections = self.detector([image])[0]
        return detections_json(self.detector, image, detections, "request")

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
