"""Who gets in, over real HTTP: sessions, tokens, roles, CSRF, the login limit, expiry, body limit,
pages, and signed media links."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from tests.web.conftest import ADMIN_TOKEN, MEDIA_KEY, NS, PASSWORDS, VIEWER_TOKEN, Publisher, make_alert, wait_for
from vigil.config.web import WebConfig
from vigil.passwords import parse_hash, verify_password
from vigil.signing import media_links, media_path, sign, verify

pytestmark = pytest.mark.broker


def test_every_api_path_needs_a_login(web_factory: Any) -> None:
    web = web_factory()
    anonymous = web.client()
    for path in ("/api/me", "/api/cameras", "/api/alerts", "/api/alerts/facets", "/api/alerts/x", "/api/system",
                 "/api/alerts/x/snapshot.jpg", "/api/alerts/x/clip.mp4", "/api/events", "/api/openapi.json",
                 "/api/cameras/a/latest.jpg"):  # fmt: skip
        response = anonymous.get(path)
        assert response.status_code == 401, path
        assert "log in" in response.json()["error"]
    assert anonymous.post("/api/alerts/x/review", json={"reviewed": True}).status_code == 401
    assert web.client("not-a-token-but-long-enough-xxxx").get("/api/me").status_code == 401
    # The OpenAPI document is there for those who are in.
    schema = web.client(VIEWER_TOKEN).get("/api/openapi.json").json()
    assert "/api/alerts" in schema["paths"] and "/api/login" in schema["paths"]
    # Health and static files need no login.
    assert anonymous.get("/healthz").status_code == 200
    assert anonymous.get("/metrics").status_code == 200


def test_session_login_me_csrf_roles_and_logout(web_factory: Any, publisher: Publisher) -> None:
    publisher.alert(make_alert("al_auth", "started", "cam", publisher_frame(publisher), time.time_ns(), time.time_ns()))
    web = web_factory()
    admin, csrf = web.login("ana")
    cookie = next(c for c in admin.cookies.jar if c.name == "vigil_session")
    assert cookie.has_nonstandard_attr("HttpOnly") and cookie.path == "/"
    me = admin.get("/api/me").json()
    assert me["name"] == "ana" and me["role"] == "admin" and me["auth"] == "session" and me["csrf_token"] == csrf
    wait_for(lambda: admin.get("/api/alerts/al_auth").status_code == 200, what="stored")
    body = {"reviewed": True, "verdict": "true_positive"}
    assert admin.post("/api/alerts/al_auth/review", json=body).status_code == 403  # no CSRF header
    assert admin.post("/api/alerts/al_auth/review", json=body, headers={"X-CSRF-Token": "wrong"}).status_code == 403
    done = admin.post("/api/alerts/al_auth/review", json=body, headers={"X-CSRF-Token": csrf})
    assert done.status_code == 200 and done.json()["reviewed"] and done.json()["reviewed_by"] == "ana"

    viewer, viewer_csrf = web.login("vic")
    refused = viewer.post("/api/alerts/al_auth/review", json=body, headers={"X-CSRF-Token": viewer_csrf})
    assert refused.status_code == 403 and "viewer" in refused.json()["error"]
    assert web.client(VIEWER_TOKEN).post("/api/alerts/al_auth/review", json=body).status_code == 403
    # A bearer token needs no CSRF header: no cookie is involved.
    token_review = web.client(ADMIN_TOKEN).post("/api/alerts/al_auth/review", json={"reviewed": False, "verdict": None})
    assert token_review.status_code == 200 and token_review.json()["reviewed_by"] == "script-admin"
    bulk = web.client(ADMIN_TOKEN).post("/api/alerts/review", json={"ids": ["al_auth", "al_nope"], "reviewed": True})
    assert bulk.json() == {"updated": 1, "missing": ["al_nope"]}

    assert admin.post("/api/logout").status_code == 403  # logout changes state: CSRF too
    assert admin.post("/api/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    stale = web.client()
    stale.cookies.set("vigil_session", cookie.value or "")
    assert stale.get("/api/me").status_code == 401  # ended server-side, not only in the browser


def publisher_frame(publisher: Publisher) -> Any:
    from vigil.contracts import FrameRef

    return FrameRef(publisher.config.topics.frames.name, 0, 0)


def test_sixth_failed_login_is_429_per_user_and_per_address(web_factory: Any) -> None:
    web = web_factory(login_window_s=60)
    client = web.client()
    for _ in range(5):
        assert client.post("/api/login", json={"username": "ana", "password": "wrong"}).status_code == 401
    limited = client.post("/api/login", json={"username": "ana", "password": PASSWORDS["ana"]})
    assert limited.status_code == 429  # even the right password: the limit comes first
    assert 50 <= int(limited.headers["retry-after"]) <= 60 and limited.json()["retry_after_s"] >= 50
    assert "too many failed logins" in limited.json()["error"]
    # Per address too: other user names from the same address are limited as well.
    assert client.post("/api/login", json={"username": "vic", "password": PASSWORDS["vic"]}).status_code == 429
    unknown = web.client().post("/api/login", json={"username": "nobody", "password": "x"})
    assert unknown.status_code == 429 and unknown.json()["error"].startswith("too many")


def test_sessions_survive_a_restart_and_expire(
    web_factory: Any, vigil_config: Any, tmp_path: Any, password_hashes: Any
) -> None:
    from tests.web.conftest import web_config

    # The session must outlive a stop and a start (consumer group and all, seconds on a loaded box).
    ttl_s = 12
    config = web_config(vigil_config, tmp_path, password_hashes, session_ttl_s=ttl_s)
    first = web_factory(config)
    client, _ = first.login("ana")
    logged_in = time.monotonic()
    cookie = client.cookies.get("vigil_session")
    first.stop()
    second = web_factory(config)
    again = second.client()
    again.cookies.set("vigil_session", cookie or "")
    assert again.get("/api/me").json()["name"] == "ana"  # kept in SQLite across the restart
    time.sleep(max(0.0, logged_in + ttl_s + 0.5 - time.monotonic()))
    assert again.get("/api/me").status_code == 401


def test_pages_send_a_browser_to_login_and_serve_static(web_factory: Any) -> None:
    web = web_factory()
    anonymous = web.client()
    for path in ("/", "/cameras/front", "/review", "/zones/front", "/system"):
        response = anonymous.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"] == "/login?next=" + httpx.URL(path).raw_path.decode().replace("/", "%2F")
    assert anonymous.get("/login").status_code == 200 and "<title>" in anonymous.get("/login").text
    assert anonymous.get("/static/pages/login.html").status_code == 200
    user, _ = web.login("vic")
    for path in ("/", "/cameras/front", "/review", "/zones/front", "/system"):
        page = user.get(path)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), path


def test_oversized_bodies_are_refused_before_reading(web_factory: Any) -> None:
    web = web_factory(max_body_bytes=2048)
    client = web.client()
    big = client.post("/api/login", content=b"{" + b" " * 5000 + b"}", headers={"content-type": "application/json"})
    assert big.status_code == 413 and "web.max_body_bytes" in big.json()["error"]

    def chunks() -> Any:
        for _ in range(10):
            yield b" " * 1000

    chunked = client.post("/api/login", content=chunks(), headers={"content-type": "application/json"})
    assert chunked.status_code == 413


def test_hash_password_cli_and_config_refusal(tmp_path: Any) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vigil", "web", "hash-password"], input="s3cret word\n", capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    printed = result.stdout.strip()
    assert verify_password("s3cret word", parse_hash(printed)) and not verify_password("other", parse_hash(printed))
    assert WebConfig.model_validate({"users": [{"name": "a", "password_hash": printed}]}).users[0].name == "a"
    bad_hash, no_key = tmp_path / "bad-hash.yaml", tmp_path / "no-key.yaml"
    bad_hash.write_text("web:\n  users:\n    - name: ana\n      password_hash: plain-text-password\n")
    no_key.write_text("web:\n  public_url: https://vigil.example.org\n")
    check = subprocess.run(
        [sys.executable, "-m", "vigil", "config", "validate", str(bad_hash), str(no_key)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 1
    assert (
        "line 4: web.users[0].password_hash: password_hash is not a hash `vigil web hash-password` prints"
        in check.stderr
    )
    assert "line 1: web.media_key: web.public_url is set, so links must be signed" in check.stderr
    assert "plain-text-password" not in check.stderr


def test_signing_round_trip() -> None:
    key = b"k" * 40
    path = media_path("al_1", "clip.mp4")
    link = sign(key, path, 2_000_000_000)
    exp, sig = link.split("?")[1].split("&")
    exp, sig = exp.split("=")[1], sig.split("=")[1]
    assert verify(key, path, exp, sig, now=1_900_000_000) is None
    assert "expired" in (verify(key, path, exp, sig, now=2_000_000_001) or "")
    assert "does not match" in (verify(key, media_path("al_2", "clip.mp4"), exp, sig, now=0) or "")
    assert "does not match" in (verify(key, path, str(int(exp) + 1), sig, now=0) or "")
    assert "does not match" in (verify(b"x" * 40, path, exp, sig, now=0) or "")
    assert verify(key, path, None, sig) is not None


def test_signed_links_open_without_login(web_factory: Any, publisher: Publisher, footage_frames: list[bytes]) -> None:
    now = time.time_ns()
    refs = publisher.frames("cam-s", footage_frames[:10], 5.0, now - 20 * NS)
    publisher.alert(make_alert("al_signed", "started", "cam-s", refs[3][0], refs[3][1], refs[3][1]))
    publisher.alert(make_alert("al_old", "started", "cam-s", refs[3][0], refs[3][1] - 30 * 86_400 * NS, refs[3][1]))
    web = web_factory(link_ttl_s=3600, keep_days=3650)
    wait_for(lambda: web.client(VIEWER_TOKEN).get("/api/alerts/al_old").status_code == 200, what="stored")
    links = media_links(web.config.web, "al_signed", refs[3][1])
    anonymous = web.client()
    local = links["snapshot_url"].replace(web.config.web.public_url or "", "")
    opened = anonymous.get(local)
    assert opened.status_code == 200 and opened.headers["content-type"] == "image/jpeg"
    tampered = anonymous.get(local.replace("al_signed", "al_old"))
    assert tampered.status_code == 403 and "does not match" in tampered.json()["error"]
    forged = anonymous.get(local[:-4] + ("0000" if not local.endswith("0000") else "1111"))
    assert forged.status_code == 403
    expired = media_links(web.config.web, "al_old", refs[3][1] - 30 * 86_400 * NS)["snapshot_url"]
    refused = anonymous.get(expired.replace(web.config.web.public_url or "", ""))
    assert refused.status_code == 403 and "expired" in refused.json()["error"]
    assert MEDIA_KEY not in opened.text + tampered.text + refused.text
