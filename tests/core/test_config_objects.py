"""The `objects` sections and masks: strict like zones (points in range, >= 3, no self-intersection),
errors at the key and line; and the self-intersection check shared with zones."""

from __future__ import annotations

import textwrap

import pytest

from vigil.config.loader import parse_config
from vigil.errors import ConfigError
from vigil.geometry import polygon_self_intersection


def errors_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), "test.yaml", {})
    return [str(issue) for issue in info.value.issues]


CAMERA = "cameras:\n  - id: a\n    url: rtsp://h/s\n"

CASES = [
    pytest.param(
        CAMERA + "    zones:\n      - {name: z, polygon: [[0, 0], [10, 10], [10, 0], [0, 20]]}\n",
        "line 5: cameras[0].zones[0].polygon: polygon edges 1-2 ([0, 0] to [10, 10]) and 3-4 ([10, 0] to [0, 20]) "
        "cross or touch",
        id="zone-self-intersecting",
    ),
    pytest.param(
        CAMERA + "    zones:\n      - {name: z, polygon: [[0, 0], [10, 0], [10, 0], [0, 10]]}\n",
        "line 5: cameras[0].zones[0].polygon: polygon edges 1-2 ([0, 0] to [10, 0]) and 2-3",
        id="zone-repeated-vertex",
    ),
    pytest.param(
        CAMERA + "    objects:\n      masks:\n        - name: statue\n          units: fraction\n"
        "          polygon: [[0.1, 0.2], [0.3, 0.2], [1.3, 0.6]]\n",
        "line 8: cameras[0].objects.masks[0].polygon: with units: fraction every vertex must lie in 0..1",
        id="object-mask-fraction-range",
    ),
    pytest.param(
        CAMERA + "    objects:\n      masks:\n        - {name: s, polygon: [[0, 0], [9, 0]]}\n",
        "line 6: cameras[0].objects.masks[0].polygon: List should have at least 3 items",
        id="object-mask-two-points",
    ),
    pytest.param(
        CAMERA + "    objects:\n      masks:\n        - {name: s, polygon: [[0, 0], [9, 9], [9, 0], [0, 12]]}\n",
        "line 6: cameras[0].objects.masks[0].polygon: polygon edges",
        id="object-mask-self-intersecting",
    ),
    pytest.param(
        CAMERA + "    objects:\n      masks:\n        - {name: s, polygon: [[0, 0], [9, 0], [9, 9]]}\n"
        "        - {name: s, polygon: [[0, 0], [8, 0], [8, 8]]}\n",
        "line 7: cameras[0].objects.masks[1].name: object mask name 's' is used twice on this camera",
        id="object-mask-names-unique",
    ),
    pytest.param(
        CAMERA
        + "    max_width: 640\n    objects:\n      masks:\n        - {name: s, polygon: [[0, 0], [700, 0], [700, 9]]}\n",
        "line 7: cameras[0].objects.masks[0].polygon: object mask 's' has vertices right of max_width=640",
        id="object-mask-beyond-max-width",
    ),
    pytest.param(
        CAMERA
        + "    motion:\n      masks:\n        - {name: clock, units: fraction, polygon: [[0.8, 0], [1.2, 0], [1, 0.1]]}\n",
        "line 6: cameras[0].motion.masks[0].polygon: with units: fraction every vertex must lie in 0..1",
        id="motion-mask-fraction-range",
    ),
    pytest.param(
        CAMERA + "    motion:\n      masks:\n        - {name: c, polygon: [[0, 0], [5, 5], [10, 10]]}\n",
        "line 6: cameras[0].motion.masks[0].polygon: polygon has zero area",
        id="motion-mask-collinear",
    ),
    pytest.param(
        CAMERA
        + "    max_width: 320\n    motion:\n      masks:\n        - {name: c, polygon: [[0, 0], [400, 0], [400, 9]]}\n",
        "line 7: cameras[0].motion.masks[0].polygon: motion mask 'c' has vertices right of max_width=320",
        id="motion-mask-beyond-max-width",
    ),
    pytest.param(
        "objects:\n  masks: []\n" + CAMERA,
        "line 2: objects.masks: masks are drawn on one camera's picture: put them under cameras[].objects.masks",
        id="global-masks-refused",
    ),
    pytest.param(
        "objects:\n  filters:\n    person:\n      min_area: 0.5\n      max_area: 0.1\n" + CAMERA,
        "line 5: objects.filters.person.max_area: max_area 0.1 is below min_area 0.5",
        id="area-range",
    ),
    pytest.param(
        "objects:\n  filters:\n    person: {min_ratio: 2, max_ratio: 1}\n" + CAMERA,
        "line 3: objects.filters.person.max_ratio: max_ratio 1 is below min_ratio 2",
        id="ratio-range",
    ),
    pytest.param(
        "objects:\n  filters:\n    person: {min_score: 1.5}\n" + CAMERA,
        "line 3: objects.filters.person.min_score: Input should be less than or equal to 1",
        id="score-bound",
    ),
    pytest.param(
        "objects:\n  filters:\n    person:\n      treshold: 0.6\n" + CAMERA,
        "line 4: objects.filters.person.treshold: unknown key; did you mean 'threshold'?",
        id="filter-typo",
    ),
    pytest.param(
        "objects:\n  score_window: 0\n" + CAMERA,
        "line 2: objects.score_window: Input should be greater than or equal to 1",
        id="score-window-bound",
    ),
    pytest.param(
        "objects:\n  filters:\n    persn: {min_score: 0.4}\n" + CAMERA,
        "line 3: objects.filters.persn: unknown class 'persn'; did you mean 'person'?",
        id="unknown-filter-class",
    ),
    pytest.param(
        CAMERA + "    objects:\n      filters:\n        cars: {min_area: 4000}\n",
        "line 6: cameras[0].objects.filters.cars: unknown class 'cars'; did you mean 'car'?",
        id="unknown-camera-filter-class",
    ),
    pytest.param(
        CAMERA + "    objects:\n      masks:\n        - name: s\n          polygon: [[0, 0], [9, 0], [9, 9]]\n"
        "          classes: [persn]\n",
        "line 8: cameras[0].objects.masks[0].classes[0]: unknown class 'persn'",
        id="unknown-mask-class",
    ),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_bad_objects_config_names_key_and_line(text: str, expected: str) -> None:
    messages = errors_of(text)
    assert any(expected in m for m in messages), messages


def test_the_briefs_example_loads() -> None:
    text = """
    objects:
      filters:
        default: {min_score: 0.3}
        person: {min_area: 0.002, max_area: 0.6, min_ratio: 0.2, max_ratio: 1.5, min_score: 0.4, threshold: 0.6}
      score_window: 5
    cameras:
      - id: door
        url: rtsp://h/s
        objects:
          filters: {car: {min_area: 4000}}
          masks:
            - name: statue
              units: fraction
              polygon: [[0.1, 0.2], [0.3, 0.2], [0.3, 0.6]]
              classes: [person]
        motion:
          masks:
            - name: clock
              units: fraction
              polygon: [[0.8, 0.0], [1.0, 0.0], [1.0, 0.1], [0.8, 0.1]]
    """
    config = parse_config(textwrap.dedent(text), "t.yaml", {})
    merged = config.camera_objects(config.cameras[0])
    assert merged.filter_for("person").threshold == 0.6  # type: ignore[union-attr]
    assert merged.filter_for("dog").min_score == 0.3  # type: ignore[union-attr]
    assert merged.masks[0].classes == ["person"] and config.cameras[0].motion.masks[0].name == "clock"


SIMPLE = [
    [[0, 0], [1, 0], [1, 1], [0, 1]],
    [[0, 0], [4, 0], [4, 4], [2, 1], [0, 4]],  # concave
    [[0, 0], [1, 0], [0.5, 1]],
]
CROSSING = [
    ([[0, 0], [1, 1], [1, 0], [0, 1]], (0, 2)),  # bow tie
    ([[0, 0], [4, 0], [4, 4], [2, 0], [0, 4]], (0, 2)),  # a vertex on another edge
    ([[0, 0], [2, 0], [1, 0], [1, 1]], (0, 1)),  # folds back along its first edge
    ([[0, 0], [1, 0], [1, 0], [1, 1]], (0, 1)),  # repeated vertex
]


@pytest.mark.parametrize("polygon", SIMPLE)
def test_simple_polygons_pass(polygon: list[list[float]]) -> None:
    assert polygon_self_intersection(polygon) is None


@pytest.mark.parametrize(("polygon", "edges"), CROSSING)
def test_crossing_polygons_are_found(polygon: list[list[float]], edges: tuple[int, int]) -> None:
    assert polygon_self_intersection(polygon) == edges
