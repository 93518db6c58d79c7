from __future__ import annotations

import numpy as np
import pytest

from vigil.detections import Detections
from vigil.errors import ContractError


def three() -> Detections:
    return Detections(
        xyxy=np.array([[0, 0, 10, 20], [5, 5, 15, 15], [100, 100, 110, 140]]),
        confidence=np.array([0.9, 0.4, 0.7]),
        class_id=np.array([0, 1, 0]),
    )


def test_dtypes_are_normalised() -> None:
    d = three()
    assert d.xyxy.dtype == np.float32 and d.confidence.dtype == np.float32 and d.class_id.dtype == np.int32
    assert len(d) == 3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"xyxy": np.zeros((3, 5))}, r"xyxy must have shape \(N, 4\), got \(3, 5\)"),
        ({"confidence": np.zeros(2)}, r"confidence has shape \(2,\) but xyxy has 3 rows"),
        ({"class_id": np.zeros((3, 1))}, r"class_id must have 1 dimension\(s\), got shape \(3, 1\)"),
        ({"tracker_id": np.zeros(4)}, r"tracker_id has shape \(4,\) but xyxy has 3 rows"),
    ],
)
def test_shape_errors_name_the_shape(kwargs: dict[str, np.ndarray], message: str) -> None:
    base = {"xyxy": three().xyxy, "confidence": three().confidence, "class_id": three().class_id}
    with pytest.raises(ContractError, match=message):
        Detections(**(base | kwargs))


def test_mask_selection_keeps_arrays_parallel() -> None:
    d = three()
    d.tracker_id = np.array([7, 8, 9], dtype=np.int64)
    picked = d[d.class_id == 0]
    assert len(picked) == 2
    assert picked.tracker_id is not None and picked.tracker_id.tolist() == [7, 9]
    np.testing.assert_allclose(picked.confidence, [0.9, 0.7])


def test_empty_and_merge() -> None:
    empty = Detections.empty()
    assert len(empty) == 0 and empty.xyxy.shape == (0, 4)
    merged = Detections.merge([three(), empty, three()])
    assert len(merged) == 6
    assert len(Detections.merge([])) == 0


def test_anchor_points_and_area() -> None:
    d = three()
    np.testing.assert_allclose(d.anchors(), [[5, 20], [10, 15], [105, 140]])
    np.testing.assert_allclose(d.anchors("center"), [[5, 10], [10, 10], [105, 120]])
    np.testing.assert_allclose(d.area(), [200, 100, 400])
    with pytest.raises(ValueError, match="unknown anchor"):
        d.anchors("top")
