"""Cameras often sit on networks that reach nothing else: no page, script, stylesheet or document
the review service serves may make the browser fetch anything from another host (no CDN)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.web.conftest import PASSWORDS
from web.app import STATIC

pytestmark = pytest.mark.broker

# An absolute URL (scheme://host) or a protocol-relative one in an attribute, CSS url() or import.
ABSOLUTE = re.compile(r"\b(?:https?|wss?|ftp)://([^/\s\"'`)<>]+)", re.IGNORECASE)
RELATIVE_TO_SCHEME = re.compile(
    r"""(?:\b(?:src|href|action|srcset|poster)\s*=\s*["']?|url\(\s*["']?|\bfrom\s*["']|import\(\s*["']|@import\s*["'])//""",
    re.IGNORECASE,
)


def off_host(text: str, host: str) -> list[str]:
    found = [m.group(0) for m in ABSOLUTE.finditer(text) if m.group(1).lower() != host.lower()]
    return found + [m.group(0) for m in RELATIVE_TO_SCHEME.finditer(text)]


def test_no_page_or_document_references_another_host(web_factory: Any) -> None:
    web = web_factory()
    client, _ = web.login("ana")
    host = web.base.split("://", 1)[1]
    served: dict[str, str] = {}
    for path in ["/login", "/", "/cameras/cam-x", "/review", "/zones/cam-x", "/system", "/api/docs",
                 "/api/openapi.json"]:  # fmt: skip
        answer = client.get(path)
        assert answer.status_code == 200, (path, answer.status_code)
        served[path] = answer.text
    # Every file the pages may load, fetched the way the browser does.
    for file in sorted(p for p in STATIC.rglob("*") if p.is_file()):
        path = "/static/" + file.relative_to(STATIC).as_posix()
        answer = client.get(path)
        assert answer.status_code == 200, (path, answer.status_code)
        served[path] = answer.text
    assert "/static/js/api.js" in served and len(served) > 20, sorted(served)
    problems = {path: refs for path, text in served.items() if (refs := off_host(text, host))}
    assert not problems, problems
    # The API page is the local one, and it links the OpenAPI document it renders.
    assert 'src="/static/js/api.js"' in served["/api/docs"] and "/api/openapi.json" in served["/api/docs"]
    assert "swagger" not in served["/api/docs"].lower()
    # The checker itself finds what it is there to find.
    assert off_host('<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js">', host)
    assert off_host("<link href='//fonts.googleapis.com/css'>", host) and not off_host(f"http://{host}/x", host)


def test_the_api_page_lists_every_endpoint(web_factory: Any, browser: Any, tmp_path: Path) -> None:
    web = web_factory()
    context = browser.new_context(base_url=web.base)
    try:
        answer = context.request.post("/api/login", data={"username": "ana", "password": PASSWORDS["ana"]})
        assert answer.status == 200
        requests: list[str] = []
        page = context.new_page()
        page.on("request", lambda r: requests.append(r.url))
        errors: list[str] = []
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.goto("/api/docs")
        page.locator("body[data-endpoints]").wait_for(timeout=15_000)
        documented = context.request.get("/api/openapi.json").json()
        expected = sum(len(ops) for ops in documented["paths"].values())
        assert int(page.locator("body").get_attribute("data-endpoints") or 0) == expected >= 15
        text = page.locator("#out").inner_text()
        for path in ("/api/alerts/{alert_id}/clip.mp4", "/api/login", "/api/system"):
            assert path in text, path
        assert "Set an alert's review state (admin)" in text and "reviewed boolean (required)" in text
        assert all(url.startswith(web.base) or url.startswith("data:") for url in requests), requests
        assert not errors, errors
        page.screenshot(path=str(tmp_path / "api.png"), full_page=True)  # for a person debugging the page
    finally:
        context.close()
