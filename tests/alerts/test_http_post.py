"""`KeptConnection`, what a webhook deliverer posts with, against real HTTP servers on loopback: one connection
for a burst, a fresh one when the receiver closed it, nothing followed, nothing hostile read, proxies honoured."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from alerts.http_post import BODY_HEAD, KeptConnection
from tests.faults.tls import make_pki

TOKEN = "sekrit-token-123"


@dataclass
class Reply:
    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    hang_up: bool = False  # close the connection after answering without saying so (an idle timeout)


@dataclass
class Server:
    url: str
    posts: list[tuple[int, bytes]] = field(default_factory=list)  # (client port, body)
    gets: list[str] = field(default_factory=list)
    reply: Reply = field(default_factory=Reply)


@contextmanager
def serving(tls: ssl.SSLContext | None = None) -> Iterator[Server]:
    """A receiver on loopback (HTTPS when `tls` is given) that records every POST and answers `reply`."""
    state = Server("")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            state.posts.append((self.client_address[1], self.rfile.read(int(self.headers["content-length"]))))
            reply = state.reply
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(reply.body)))
            self.end_headers()
            try:
                self.wfile.write(reply.body)
            except (ConnectionResetError, BrokenPipeError):
                self.close_connection = True  # the client hung up on a long body, as it should
                return
            self.close_connection = reply.hang_up

        def do_GET(self) -> None:
            state.gets.append(self.path)
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    scheme = "https" if tls is not None else "http"
    state.url = f"{scheme}://127.0.0.1:{httpd.server_address[1]}/hook/{TOKEN}?x=1"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    with serving() as state:
        yield state


def test_a_burst_of_posts_goes_over_one_connection(server: Server) -> None:
    kept = KeptConnection(server.url)
    attempts = [kept(server.url, f'{{"n": {n}}}'.encode(), {"webhook-id": f"id{n}"}, 5.0) for n in range(5)]
    kept.close()
    assert [a.status for a in attempts] == [204] * 5
    assert [body for _, body in server.posts] == [f'{{"n": {n}}}'.encode() for n in range(5)]
    assert kept.connections == 1 and len({port for port, _ in server.posts}) == 1


def test_a_connection_the_receiver_closed_is_reopened_and_the_post_arrives_once(server: Server) -> None:
    server.reply = Reply(hang_up=True)
    kept = KeptConnection(server.url)
    attempts = [kept(server.url, f"{n}".encode(), {}, 5.0) for n in range(3)]
    kept.close()
    assert [a.status for a in attempts] == [204] * 3
    assert [body for _, body in server.posts] == [b"0", b"1", b"2"]  # each once, in order
    assert kept.connections == 3


def test_a_long_response_is_not_read_the_connection_is_dropped_instead(server: Server) -> None:
    server.reply = Reply(200, body=b"x" * (4 * 1024 * 1024))
    kept = KeptConnection(server.url)
    first = kept(server.url, b"{}", {}, 5.0)
    server.reply = Reply(204)
    second = kept(server.url, b"{}", {}, 5.0)
    kept.close()
    assert first.ok and first.body_head == b"x" * BODY_HEAD
    assert second.ok and kept.connections == 2


def test_a_redirect_comes_back_with_its_location_reduced_and_is_not_followed(server: Server) -> None:
    server.reply = Reply(302, {"Location": "https://elsewhere.example:8443/new/secret-path"})
    attempt = KeptConnection(server.url)(server.url, b"{}", {}, 5.0)
    assert attempt.status == 302 and attempt.redirected
    assert attempt.location == "https://elsewhere.example:8443"
    assert server.gets == [] and len(server.posts) == 1


def test_a_retry_after_comes_back_with_the_status(server: Server) -> None:
    server.reply = Reply(429, {"Retry-After": "7"}, b"slow down")
    attempt = KeptConnection(server.url)(server.url, b"{}", {}, 5.0)
    assert (attempt.status, attempt.retry_after, attempt.body_head) == (429, "7", b"slow down")


def test_a_refused_connection_is_an_attempt_without_status_and_without_the_token() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once the probe closes
    url = f"http://127.0.0.1:{port}/hook/{TOKEN}"
    attempt = KeptConnection(url)(url, b"{}", {}, 2.0)
    assert attempt.status is None and "ConnectionRefusedError" in attempt.error
    assert TOKEN not in attempt.error


def test_a_configured_proxy_is_used(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("no_proxy", "")
    monkeypatch.delenv("NO_PROXY", raising=False)
    attempt = KeptConnection(server.url)(server.url, b"{}", {}, 2.0)
    # Sent to the (dead) proxy as urllib does, not straight to the receiver.
    assert attempt.status is None and server.posts == []
    assert TOKEN not in attempt.error


def test_https_posts_share_one_verified_tls_connection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pki = make_pki(tmp_path / "pki")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(pki.keystore_pem)
    with serving(tls) as https:
        untrusted = KeptConnection(https.url)(https.url, b"{}", {}, 5.0)
        assert untrusted.status is None and "CERTIFICATE_VERIFY_FAILED" in untrusted.error, untrusted.error
        assert TOKEN not in untrusted.error
        monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_pem))  # what the system's CA store would hold
        kept = KeptConnection(https.url)
        attempts = [kept(https.url, f"{n}".encode(), {}, 5.0) for n in range(3)]
        kept.close()
    assert [a.status for a in attempts] == [204] * 3
    assert [body for _, body in https.posts] == [b"0", b"1", b"2"] and kept.connections == 1
