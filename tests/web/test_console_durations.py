"""How long an alert lasted, from the alerts topic through the store and the API to the review
page (Debian's chromium driven by Playwright against a real `vigil web` on the test broker).

An ended alert lasts from its start to its end (the `ended` event's last sighting); an active one
from its start until now, growing on the page while the API's `duration_s` is its newest event's
last sighting minus its start. Sub-second alerts are common (a person at the edge of the frame for
the `min_frames` it takes to start one) and must not read "0 s"."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.web.conftest import NS, PASSWORDS, VIEWER_TOKEN, Publisher, make_alert, wait_for

pytestmark = pytest.mark.broker


def test_durations_in_the_api_and_on_the_review_page(
    web_factory: Any, publisher: Publisher, footage_frames: list[bytes], browser: Any
) -> None:
    now = time.time_ns()
    refs = publisher.frames("cam-d", footage_frames[:10], 5.0, now - 30 * NS)
    long_start, short_start, active_start = now - 30 * NS, now - 20 * NS, now - 5 * NS
    events = [
        make_alert("al_long", "started", "cam-d", refs[0][0], long_start, long_start),
        make_alert("al_long", "updated", "cam-d", refs[1][0], long_start, long_start + NS, update_seq=1),
        make_alert("al_long", "ended", "cam-d", refs[2][0], long_start, long_start + 2_450_000_000),
        make_alert("al_short", "started", "cam-d", refs[3][0], short_start, short_start),
        make_alert("al_short", "ended", "cam-d", refs[3][0], short_start, short_start + 320_000_000),
        make_alert("al_active", "started", "cam-d", refs[4][0], active_start, active_start),
        make_alert("al_active", "updated", "cam-d", refs[5][0], active_start, active_start + NS, update_seq=1),
    ]
    for event in events:
        publisher.alert(event)
    web = web_factory()
    api = web.client(VIEWER_TOKEN)
    wait_for(lambda: api.get("/api/alerts/al_active").json().get("updates") == 1, what="the alerts stored")

    # Store and API: ended = end - start; active = newest last sighting - start.
    long, short, active = (api.get(f"/api/alerts/{i}").json() for i in ("al_long", "al_short", "al_active"))
    assert (long["state"], long["ended_ns"], long["duration_s"]) == ("ended", long_start + 2_450_000_000, 2.45)
    assert (short["state"], short["duration_s"]) == ("ended", 0.32)
    assert (active["state"], active["ended_ns"], active["duration_s"]) == ("active", None, 1.0)
    assert active["last_seen_ns"] == active_start + NS

    context = browser.new_context(base_url=web.base, viewport={"width": 1280, "height": 800})
    try:
        assert context.request.post("/api/login", data={"username": "ana", "password": PASSWORDS["ana"]}).ok
        page = context.new_page()
        errors: list[str] = []
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.goto("/review")
        card = {i: page.locator(f'[data-alert-id="{i}"] [data-duration]') for i in ("al_long", "al_short", "al_active")}
        card["al_active"].wait_for(timeout=15_000)
        assert card["al_long"].inner_text() == "2.4 s"
        assert card["al_short"].inner_text() == "0.3 s"
        # The active alert's duration is now - start on the page, and it grows.
        first = card["al_active"].inner_text()
        assert first.startswith("active · "), first
        seconds = float(first.removeprefix("active · ").removesuffix(" s"))
        assert 4.5 <= seconds <= 5 + (time.time_ns() - now) / NS + 1, (first, seconds)
        wait_for(
            lambda: float(card["al_active"].inner_text().removeprefix("active · ").removesuffix(" s")) >= seconds + 1.5,
            timeout_s=10, what="the active alert's duration growing",
        )  # fmt: skip
        # The detail panel says the same and what the end is.
        page.locator('[data-alert-id="al_long"]').click()
        details = page.locator("#player dl")
        details.wait_for()
        assert "Duration2.4 s" in details.inner_text().replace("\n", "").replace("\t", "")
        assert "Ended" in details.inner_text()
        assert not errors, errors
    finally:
        context.close()
