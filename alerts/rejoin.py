"""Where a lost track's object should be now, and whether a new track's box is it.

Used by the rules to continue an alert across an identity break (see `alerts.rules`): the tracker
lost an object and later starts a new track on it. Only boxes and times are used, so this works
with any tracker that gives `tracker_id`s.

At 5 fps a walking person moves a sizeable part of their height between frames, so the lost box
rarely overlaps its successor: the test is the distance between the new box's centre and the lost
track's centre extrapolated by its recent motion, in units of the lost box's longer side, with a
similar height. Recent motion is measured over the last second of sightings, not frame to frame:
an occlusion cuts boxes short, and the difference of two boxes is mostly that jitter.

The gate is tight on purpose. On the shared TUD clips (groups walking together, YOLOX-Nano and
YOLOv8n, 25 and 5 fps), a lost person's new track appeared 0.2-0.35 box sizes from the prediction,
while a *different* person stepped into the spot 0.25-1.2 box sizes from it: half a box size keeps
the first and rejects most of the second. The rest is the rule's `rejoin_s`: the different person
usually arrives later than the same person reappears.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import numpy.typing as npt

NS = 1_000_000_000
REJOIN_DISTANCE = 0.5  # box sizes (longer side of the lost box)
REJOIN_HEIGHT_RATIO = 1.5
REJOIN_PREDICT_NS = NS  # extrapolate at most this long: people stop, turn or wait behind others
VELOCITY_WINDOW_NS = NS

Box = tuple[float, float, float, float]


def centre(box: Box) -> npt.NDArray[np.float64]:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], np.float64)


class Trail:
    """The recent sightings (capture time, box centre) of one track."""

    def __init__(self) -> None:
        self.points: deque[tuple[int, npt.NDArray[np.float64]]] = deque(maxlen=64)

    def add(self, box: Box, t_ns: int) -> None:
        self.points.append((t_ns, centre(box)))
        while t_ns - self.points[0][0] > VELOCITY_WINDOW_NS:
            self.points.popleft()

    def velocity(self) -> npt.NDArray[np.float64] | None:
        """Pixels per second over the window; None with less than a fifth of it seen."""
        if len(self.points) < 2:
            return None
        (t0, c0), (t1, c1) = self.points[0], self.points[-1]
        if t1 - t0 < VELOCITY_WINDOW_NS // 5:
            return None
        v: npt.NDArray[np.float64] = (c1 - c0) * (NS / (t1 - t0))
        return v


def rejoin_distance(last: Box, last_ns: int, path: Trail, box: Box, t_ns: int) -> float | None:
    """Distance of `box` from where the track last seen as `last` at `last_ns` should be at
    `t_ns`, in box sizes; None beyond the gate (too far, or a height out of proportion)."""
    size = max(last[2] - last[0], last[3] - last[1], 1.0)
    height_ratio = max(box[3] - box[1], 1.0) / max(last[3] - last[1], 1.0)
    if not 1 / REJOIN_HEIGHT_RATIO <= height_ratio <= REJOIN_HEIGHT_RATIO:
        return None
    expected = centre(last)
    velocity = path.velocity()
    if velocity is not None:
        expected = expected + velocity * (min(max(0, t_ns - last_ns), REJOIN_PREDICT_NS) / NS)
    distance = float(np.linalg.norm(centre(box) - expected)) / size
    return distance if distance <= REJOIN_DISTANCE else None
