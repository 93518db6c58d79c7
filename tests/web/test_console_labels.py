"""Box labels on the live view (web/static/js/view.js `drawBoxes`, run in Debian's chromium): a
crowd's labels never cover one another, a zone's name or run off the frame, and the most confident
objects keep theirs."""

from __future__ import annotations

import random
from typing import Any

import pytest

pytestmark = pytest.mark.broker

DRAW = """async ([detections, zone]) => {
  const { drawBoxes } = await import("/static/js/view.js");
  const canvas = document.createElement("canvas");
  canvas.width = 640; canvas.height = 480;
  document.body.append(canvas);
  const labels = drawBoxes(canvas.getContext("2d"), detections, 1, [zone]);
  return { labels, width: canvas.width, height: canvas.height };
}"""


def crowd(seed: int) -> list[dict[str, Any]]:
    """People side by side and behind one another, as on the plaza, one cut by the frame's right edge."""
    rng = random.Random(seed)
    people = []
    for _ in range(12):
        x = rng.uniform(0, 560)
        y = rng.uniform(80, 200)
        people.append({"box": [x, y, x + rng.uniform(30, 80), y + rng.uniform(120, 240)], "class_name": "person",
                       "class_id": 0, "score": round(rng.uniform(0.25, 0.95), 2)})  # fmt: skip
    people.append({"box": [610, 100, 640, 300], "class_name": "person", "class_id": 0, "score": 0.99})
    return people


def test_labels_do_not_overlap_and_stay_in_the_frame(web_factory: Any, browser: Any) -> None:
    web = web_factory()
    page = browser.new_page()
    try:
        page.goto(f"{web.base}/login")
        zone = {"x": 4, "y": 243, "w": 40, "h": 16}  # the name of a zone along y = 240
        for seed in range(5):
            detections = crowd(seed)
            drawn = page.evaluate(DRAW, [detections, zone])
            labels = drawn["labels"]
            rects = [zone, *labels]
            for i, a in enumerate(rects):
                for b in rects[i + 1 :]:
                    apart = (
                        a["x"] + a["w"] <= b["x"]
                        or b["x"] + b["w"] <= a["x"]
                        or a["y"] + a["h"] <= b["y"]
                        or (b["y"] + b["h"] <= a["y"])
                    )
                    assert apart, (seed, a, b)
            for label in labels:
                assert 0 <= label["x"] and label["x"] + label["w"] <= drawn["width"], label
                assert 0 <= label["y"] and label["y"] + label["h"] <= drawn["height"], label
            texts = {label["text"] for label in labels}
            assert "person 99%" in texts  # the most confident, at the frame's edge, moved in
            best = max(detections[:-1], key=lambda d: d["score"])
            assert f"person {round(best['score'] * 100)}%" in texts
            assert len(labels) >= 5, (seed, len(labels))
    finally:
        page.close()
