"""Drawing boxes, polygons and motion on frames (vigil.draw), shared by alerts, web and predict."""

from __future__ import annotations

import numpy as np
import pytest

from vigil.draw import Polygon, class_color, detection_labels, draw_boxes, draw_motion, draw_polygons
from vigil.errors import ContractError


def test_boxes_change_pixels_on_the_outline_only() -> None:
    image = np.zeros((200, 300, 3), np.uint8)
    draw_boxes(image, [[100, 100, 200, 180]], ["person 0.90"], [0])
    assert image[100, 150].any() and image[180, 150].any()  # top and bottom edges
    assert not image[140, 150].any()  # inside stays untouched
    assert tuple(int(v) for v in image[140, 100]) == class_color(0)


def test_label_goes_below_when_no_room_above() -> None:
    image = np.zeros((100, 100, 3), np.uint8)
    draw_boxes(image, [[10, 0, 60, 50]], ["car 0.50"], [2])
    assert image[5:15, 12:40].any()


def test_polygons_fill_lightly_and_outline() -> None:
    image = np.full((100, 100, 3), 100, np.uint8)
    draw_polygons(image, [Polygon("door", np.array([[10, 10], [90, 10], [90, 90], [10, 90]], float))])
    assert (image[50, 50] != 100).any()  # filled
    assert abs(int(image[50, 50, 0]) - 100) < 40  # but only lightly
    assert (image[5, 5] == 100).all()  # outside untouched


def test_motion_and_shape_errors() -> None:
    image = np.zeros((50, 50, 3), np.uint8)
    draw_motion(image, [(5, 5, 20, 20)])
    assert image[5, 10].any()
    with pytest.raises(ContractError, match=r"2 boxes but 1 labels"):
        draw_boxes(image, [[0, 0, 1, 1], [2, 2, 3, 3]], ["a"])
    with pytest.raises(ContractError, match=r"shape \(H, W, 3\)"):
        draw_boxes(np.zeros((5, 5), np.uint8), [], [])
    with pytest.raises(ContractError, match="at least 3 points"):
        draw_polygons(image, [Polygon("x", np.array([[0, 0], [1, 1]], float))])


def test_labels() -> None:
    assert detection_labels(["person", "car"], [0.912, 0.5]) == ["person 0.91", "car 0.50"]
    assert detection_labels(["person"], [0.5], [7]) == ["person #7 0.50"]
    with pytest.raises(ContractError, match="2 names, 1 scores"):
        detection_labels(["a", "b"], [0.1])
