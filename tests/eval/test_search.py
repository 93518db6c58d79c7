"""`vigil tune`'s search as pure logic: the plateau rule, coordinate search, leave-one-clip-out
folds and the recommendation, on objectives whose answers are known."""

from __future__ import annotations

from typing import Any

import pytest

from vigil.eval.search import Fold, coordinate_search, leave_one_out, plateau_pick, verdict


@pytest.mark.parametrize(
    ("values", "scores", "current", "expected"),
    [
        ([1, 2, 3, 4, 5], [0.5, 0.9, 0.9, 0.9, 0.5], 1, 3),  # the middle of the plateau, not its first point
        ([1, 2, 3, 4, 5], [0.9, 0.5, 0.9, 0.9, 0.9], 2, 4),  # the widest plateau wins
        ([1, 2, 3, 4, 5], [0.5, 0.6, 0.895, 0.9, 0.7], 1, 4),  # within the tolerance (0.01): a plateau of 3, 4
        ([1, 2, 3, 4, 5], [0.5, 0.9, 0.9, 0.9, 0.5], 4, 4),  # the configured value on the plateau is kept
        ([1, 2, 3], [0.7, 0.7, 0.7], 3, 3),  # a setting that does not matter keeps its value
        ([1, 2, 3, 4], [0.2, 0.9, 0.9, 0.1], 4, 2),  # an even plateau: the better middle (a tie: the lower)
    ],
)
def test_plateau_pick(values: list[int], scores: list[float], current: int, expected: int) -> None:
    assert plateau_pick(values, scores, current, tolerance=0.01)[0] == expected


def test_plateau_pick_refuses_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="one score per value"):
        plateau_pick([1, 2], [0.1], 1, 0.01)


def test_coordinate_search_finds_the_plateau_middles_and_respects_validity() -> None:
    # Best where a is in 4..6 (a plateau) and b == 2; "low" may not exceed "high".
    def objective(s: dict[str, Any]) -> float:
        return (1.0 if 4 <= s["a"] <= 6 else 0.5) + (0.5 if s["b"] == 2 else 0.0) - 0.1 * (s["low"] > 0.3)

    grids = {"a": [1, 2, 3, 4, 5, 6, 7, 8], "b": [0, 1, 2, 3], "low": [0.1, 0.3, 0.5], "high": [0.2, 0.4]}
    start = {"a": 1, "b": 0, "low": 0.1, "high": 0.4}
    seen: list[str] = []
    best, score, trace = coordinate_search(
        start, grids, objective, 0.01, valid=lambda s: s["low"] <= s["high"], progress=seen.append
    )
    assert best == {"a": 5, "b": 2, "low": 0.1, "high": 0.4} and score == pytest.approx(1.5)
    assert trace.evaluations > len(grids) and seen and "round 1" in seen[0]
    assert all(not (s["key"] == "low" and 0.5 in s["values"]) for s in trace.steps)  # 0.5 > high 0.4: never tried


def test_leave_one_out_tunes_without_the_held_out_clip() -> None:
    tuned_on: list[list[int]] = []

    def tune_on(train: list[int]) -> dict[str, Any]:
        tuned_on.append(train)
        return {"k": sum(train)}

    def score_on(clip: int, setting: dict[str, Any] | None) -> dict[str, float]:
        return {"event_f1": 0.5 if setting is None else 0.5 + 0.1 * (setting["k"] != clip)}

    folds = leave_one_out(["a", "b", "c"], tune_on, score_on)
    assert tuned_on == [[1, 2], [0, 2], [0, 1]]
    assert [(f.held_out, f.trained_on) for f in folds] == [("a", ("b", "c")), ("b", ("a", "c")), ("c", ("a", "b"))]
    assert all(f.default == {"event_f1": 0.5} for f in folds)
    assert leave_one_out(["only"], tune_on, score_on) == []


def fold(name: str, default: float, tuned: float) -> Fold:
    return Fold(name, ("other",), {"event_f1": default}, {"event_f1": tuned}, {})


def test_a_fold_with_lower_event_f1_is_not_recommended() -> None:
    ok, why = verdict([fold("a", 0.8, 0.9), fold("b", 0.9, 0.9)], "event_f1")
    assert ok and "2 folds" in why
    ok, why = verdict([fold("a", 0.8, 0.9), fold("b", 0.80, 0.73)], "event_f1")
    assert not ok and "NOT recommended" in why and "b 0.800 -> 0.730" in why
    ok, why = verdict([], "event_f1")
    assert not ok and "two or more --video/--gt" in why
