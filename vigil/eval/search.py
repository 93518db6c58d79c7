"""The search behind `vigil tune`, as pure functions of an objective: the plateau rule, coordinate
search over a grid of settings, and leave-one-clip-out checking. No model, no stage.

Why these rules: labelled clips are short, so an objective measured on them is coarse (a handful
of events) and partly noise.

* **Middle of the plateau**: along one setting, the values within `tolerance` of the best form a
  plateau; its middle is robust to the next clip shifting the curve a little, a peak at its edge
  is not. A configured value that is already on the plateau is kept: a difference within the
  tolerance is no evidence, and moving on it is how a tuned setting overfits one clip.
* **Coordinate search**: one setting at a time over its grid, the others held, a few rounds.
  Grids of 5-8 values x 10 settings make a full grid (10^8 points) out of the question; the
  objective's settings interact weakly (thresholds, frame counts, seconds).
* **Leave one clip out**: with clips A, B, C, settings tuned on A+B are scored on C, and so on; a
  setting is recommended only if no held-out clip scores below its configured default.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Setting = dict[str, Any]


def plateau_pick(values: Sequence[Any], scores: Sequence[float], current: Any, tolerance: float) -> tuple[Any, float]:
    """(value, its score): `current` when it scores within `tolerance` of the best (the footage
    gives no evidence to move it), else the middle of the widest contiguous run of grid values
    within `tolerance` of the best that reaches the best."""
    if len(values) != len(scores) or not values:
        raise ValueError(f"plateau_pick needs one score per value, got {len(values)} values, {len(scores)} scores")
    top = max(scores)
    if current in values and scores[list(values).index(current)] >= top - tolerance:
        return current, scores[list(values).index(current)]  # no evidence to move it
    # Maximal runs of neighbours within `tolerance` of the top that reach the top; the widest wins.
    runs: list[tuple[int, int]] = []
    index = 0
    while index < len(values):
        if scores[index] >= top - tolerance:
            end = index
            while end + 1 < len(values) and scores[end + 1] >= top - tolerance:
                end += 1
            if max(scores[index : end + 1]) >= top - 1e-12:
                runs.append((index, end))
            index = end + 1
        else:
            index += 1
    lo, hi = max(runs, key=lambda r: (r[1] - r[0], -r[0]))
    middle = max(((lo + hi) // 2, (lo + hi + 1) // 2), key=lambda i: scores[i])  # an even run: the better middle
    return values[middle], scores[middle]


@dataclass
class SearchTrace:
    """Every evaluation of a search, for the progress line and the JSON result."""

    evaluations: int = 0
    steps: list[dict[str, Any]] = field(default_factory=list)


def coordinate_search(
    start: Setting,
    grids: Mapping[str, Sequence[Any]],
    objective: Callable[[Setting], float],
    tolerance: float,
    rounds: int = 2,
    valid: Callable[[Setting], bool] = lambda _: True,
    progress: Callable[[str], None] | None = None,
) -> tuple[Setting, float, SearchTrace]:
    """Tune each key of `grids` in turn, `rounds` times, by `plateau_pick` (the current value is
    always among the candidates, so a step never leaves the grid's best behind). `valid` rejects
    combinations (low threshold above high). Returns the setting, its score, the trace."""
    current = dict(start)
    trace = SearchTrace()
    score = objective(current)
    trace.evaluations += 1
    for round_ in range(rounds):
        changed = False
        for key, grid in grids.items():
            values = sorted(set(grid) | {current[key]})
            candidates = [v for v in values if valid({**current, key: v})]
            scores = []
            for value in candidates:
                scores.append(objective({**current, key: value}))
                trace.evaluations += 1
            chosen, chosen_score = plateau_pick(candidates, scores, current[key], tolerance)
            trace.steps.append(
                {"round": round_ + 1, "key": key, "values": candidates, "scores": scores, "chosen": chosen}
            )
            if progress is not None:
                progress(f"round {round_ + 1}: {key} = {chosen} ({chosen_score:.3f}; {trace.evaluations} evaluations)")
            if chosen != current[key]:
                current[key] = chosen
                changed = True
            score = chosen_score
        if not changed:
            break
    return current, score, trace


@dataclass(frozen=True)
class Fold:
    """One held-out clip: the default and the tuned setting (tuned without it) scored on it."""

    held_out: str
    trained_on: tuple[str, ...]
    default: dict[str, float]
    tuned: dict[str, float]
    setting: Setting

    def lowered(self, key: str) -> bool:
        return self.tuned[key] < self.default[key] - 1e-9


def leave_one_out(
    clips: Sequence[str],
    tune_on: Callable[[list[int]], Setting],
    score_on: Callable[[int, Setting | None], dict[str, float]],
) -> list[Fold]:
    """For each clip: tune on the others, score the default (`None`) and the tuned setting on it.
    Fewer than two clips: no fold."""
    folds: list[Fold] = []
    if len(clips) < 2:
        return folds
    for held in range(len(clips)):
        train = [i for i in range(len(clips)) if i != held]
        setting = tune_on(train)
        folds.append(
            Fold(clips[held], tuple(clips[i] for i in train), score_on(held, None), score_on(held, setting), setting)
        )
    return folds


def verdict(folds: Sequence[Fold], key: str) -> tuple[bool, str]:
    """(recommended, why): recommended when there is a fold and none has `key` below its default."""
    if not folds:
        return (
            False,
            "not checked: give two or more --video/--gt clips to check the settings on a clip they were not tuned on",
        )
    worse = [f for f in folds if f.lowered(key)]
    if worse:
        listed = ", ".join(f"{f.held_out} {f.default[key]:.3f} -> {f.tuned[key]:.3f}" for f in worse)
        return False, f"NOT recommended: tuning lowered {key} on held-out clip(s) {listed}"
    return True, f"recommended: no held-out clip's {key} fell below its default ({len(folds)} folds)"
