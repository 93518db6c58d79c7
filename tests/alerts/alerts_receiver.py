"""A real HTTP webhook receiver on loopback with programmable responses, verifying every delivery
with the `standardwebhooks` reference library as any vigil user would."""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    status: int
    verified: bool
    error: str
    at: float


@dataclass
class Receiver:
    secret: str
    port: int = 0
    path: str = "/hook?token=sekrit-token-123"
    responses: deque[tuple[int, dict[str, str], bytes]] = field(default_factory=deque)
    # Seconds to hold the next POSTs before answering (a slow receiver), one per request.
    delays: deque[float] = field(default_factory=deque)
    deliveries: list[Delivery] = field(default_factory=list)
    gets: list[str] = field(default_factory=list)  # paths requested with GET (a followed redirect)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def reserve_port(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    Webhook(receiver.secret).verify(body, headers)
                    verified, error = True, ""
                except WebhookVerificationError as exc:
                    verified, error = False, str(exc)
                with receiver._lock:
                    delay = receiver.delays.popleft() if receiver.delays else 0.0
                if delay:
                    time.sleep(delay)
                with receiver._lock:
                    status, extra, reply = receiver.responses.popleft() if receiver.responses else (200, {}, b"ok")
                    receiver.deliveries.append(Delivery(headers, body, status, verified, error, time.monotonic()))
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def do_GET(self) -> None:
                # What urllib sends after following a 301/302/303 of a POST: a GET without body.
                with receiver._lock:
                    receiver.gets.append(self.path)
                self.send_response(200)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def acked_ids(self) -> list[str]:
        with self._lock:
            return [d.headers["webhook-id"] for d in self.deliveries if 200 <= d.status < 300]

    def wait_for(self, count: int, timeout_s: float, distinct: bool = False) -> list[str]:
        """The acknowledged webhook ids once `count` deliveries (`distinct`: `count` different ids, for an
        at-least-once test where a repeat must not stand in for a missing event) arrived, or at the timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ids = self.acked_ids()
            if len(set(ids) if distinct else ids) >= count:
                break
            time.sleep(0.05)
        return self.acked_ids()
