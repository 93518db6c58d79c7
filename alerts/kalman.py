"""Constant-velocity Kalman filter on boxes, for all of a camera's tracks at once, in capture time.

The state of a track is the box centre, width and height, each with its rate in pixels per second.
The four coordinates are filtered independently (their motion and their noise are), so a track's
covariance is four 2x2 blocks and a predict or an update is a few vectorised array operations
whatever the number of tracks: no per-track matrix algebra.

Time is the frame's capture time, so a camera sampled at 5 fps (0.2 s steps) and one at 25 fps see
the same motion model and the same growth of uncertainty per second, and a gap of missed frames is
one predict over the whole gap. The process noise is a white-noise acceleration of `ACCEL` box
heights per second squared (people change speed and direction); the measurement noise is
`MEASURE_STD` box heights; a new track's velocity is unknown, `INITIAL_SPEED` box heights per second
(one sigma). All scale with the box height, so near and far objects behave alike, and sizes change
more slowly than positions (`SIZE_NOISE`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float64]

# In box heights. Chosen on the detections of bench/bench_tracking.py, scored at every sampling of both
# clips from 25 down to 5 fps: a smooth motion model (process noise low against the measurement noise)
# keeps identities through crossings; ACCEL 0.5 and above lost identities where people cross.
ACCEL = 0.25
MEASURE_STD = 0.03
INITIAL_SPEED = 0.5
SIZE_NOISE = 0.25
_UNIT = np.array([1.0, 1.0, SIZE_NOISE, SIZE_NOISE])
_UNIT_LIST = _UNIT.tolist()


def to_cxcywh(xyxy: npt.ArrayLike) -> Array:
    b = np.asarray(xyxy, np.float64).reshape(-1, 4)
    return np.concatenate([(b[:, :2] + b[:, 2:]) / 2, b[:, 2:] - b[:, :2]], axis=1)


def to_xyxy(cxcywh: Array) -> Array:
    half = cxcywh[:, 2:4] / 2
    return np.concatenate([cxcywh[:, 0:2] - half, cxcywh[:, 0:2] + half], axis=1)


def _noise_unit(pos: Array) -> Array:
    """Per-coordinate noise unit (N, 4): the box height, damped for the size coordinates."""
    unit: Array = np.maximum(pos[:, 3:4], 1.0) * _UNIT
    return unit


class BoxFilter:
    """Kalman state of N boxes in one array `x` (N, 5, 4): per box and coordinate (cx, cy, w, h) the
    position `pos`, its rate `vel`, and the covariance block: `p_pp` position variance, `p_pv`
    position-rate covariance, `p_vv` rate variance (each a (N, 4) view). `seen_x` holds each filter
    as it was right after its last update and `seen` the box (xyxy) it was updated with, for the
    re-update after a gap."""

    POS, VEL, P_PP, P_PV, P_VV = range(5)

    def __init__(self) -> None:
        self.x = np.empty((0, 5, 4))
        self.seen_x = np.empty((0, 5, 4))
        self.seen = np.empty((0, 4))

    def __len__(self) -> int:
        return len(self.x)

    @property
    def pos(self) -> Array:
        return self.x[:, self.POS]

    @property
    def vel(self) -> Array:
        return self.x[:, self.VEL]

    @property
    def p_vv(self) -> Array:
        return self.x[:, self.P_VV]

    def add(self, xyxy: Array) -> None:
        """Start filters at the given boxes, at rest with an uncertain velocity."""
        pos = to_cxcywh(xyxy)
        unit = _noise_unit(pos)
        start = np.zeros((len(pos), 5, 4))
        start[:, self.POS] = pos
        start[:, self.P_PP] = (MEASURE_STD * unit) ** 2
        start[:, self.P_VV] = (INITIAL_SPEED * unit) ** 2
        self.x = np.concatenate([self.x, start])
        self.seen_x = np.concatenate([self.seen_x, start])
        self.seen = np.concatenate([self.seen, np.asarray(xyxy, np.float64).reshape(-1, 4)])

    def keep(self, mask: npt.NDArray[np.bool_]) -> None:
        self.x, self.seen_x, self.seen = self.x[mask], self.seen_x[mask], self.seen[mask]

    def boxes(self) -> Array:
        """The current boxes (N, 4) xyxy."""
        return to_xyxy(self.pos)

    def predict(self, dt: float, rows: npt.NDArray[np.intp] | slice = slice(None)) -> None:
        """Advance the filters (all, or `rows`) by `dt` seconds (white-noise acceleration model)."""
        if dt <= 0 or len(self.x) == 0:
            return
        x = self.x[rows]
        pos, vel, pp, pv, vv = x[:, 0], x[:, 1], x[:, 2], x[:, 3], x[:, 4]
        q = (ACCEL * _noise_unit(pos)) ** 2
        out = np.empty_like(x)
        out[:, 0] = pos + vel * dt
        out[:, 0, 2:4] = np.maximum(out[:, 0, 2:4], 1.0)
        out[:, 1] = vel
        out[:, 2] = pp + 2 * dt * pv + dt * dt * vv + q * (dt**3 / 3)
        out[:, 3] = pv + dt * vv + q * (dt**2 / 2)
        out[:, 4] = vv + q * dt
        self.x[rows] = out

    def update(self, rows: npt.NDArray[np.intp], xyxy: npt.ArrayLike, virtual: bool = False) -> None:
        """Correct the filters `rows` with measured boxes (`virtual`: not an observation to remember)."""
        if len(rows) == 0:
            return
        z = to_cxcywh(xyxy)
        x = self.x[rows]
        pos, vel, pp, pv, vv = x[:, 0], x[:, 1], x[:, 2], x[:, 3], x[:, 4]
        s = pp + (MEASURE_STD * _noise_unit(z)) ** 2
        k_p, k_v = pp / s, pv / s
        innovation = z - pos
        out = np.empty_like(x)
        out[:, 0] = pos + k_p * innovation
        out[:, 1] = vel + k_v * innovation
        out[:, 2] = (1 - k_p) * pp
        out[:, 3] = (1 - k_p) * pv
        out[:, 4] = vv - k_v * pv
        self.x[rows] = out
        if not virtual:
            self.seen_x[rows] = out
            self.seen[rows] = np.asarray(xyxy, np.float64).reshape(-1, 4)

    def reupdate(self, row: int, seen_ns: int, missed_ns: list[int], box: npt.ArrayLike, t_ns: int) -> None:
        """OC-SORT's observation-centric re-update of filter `row`: back to its state at its last
        observation (at `seen_ns`), through virtual observations on the straight line from the box
        seen then to `box` at each missed frame's capture time, then predicted to `t_ns`, where the
        caller's `update` applies `box` itself.

        The same arithmetic as `predict` and `update`, in the same order, on one filter's 20 Python
        floats: a track that missed frames steps through each of them, and numpy's per-call overhead
        on (1, 5, 4) arrays made these steps most of the tracker's time. IEEE float64 operations
        round alike in numpy and Python, so the state is bit for bit what `predict`/`update` give."""
        pos, vel, pp, pv, vv = self.seen_x[row].tolist()
        start = self.seen[row].tolist()
        end = np.asarray(box, np.float64).reshape(4).tolist()
        span, previous = max(t_ns - seen_ns, 1), seen_ns
        for when in missed_ns:
            pos, pp, pv, vv = _predict1(pos, vel, pp, pv, vv, (when - previous) / 1e9)
            frac = (when - seen_ns) / span
            z = [a + (b - a) * frac for a, b in zip(start, end, strict=True)]
            pos, vel, pp, pv, vv = _update1(pos, vel, pp, pv, vv, _cxcywh1(z))
            previous = when
        pos, pp, pv, vv = _predict1(pos, vel, pp, pv, vv, (t_ns - previous) / 1e9)
        self.x[row] = (pos, vel, pp, pv, vv)


def _cxcywh1(b: list[float]) -> list[float]:
    """`to_cxcywh` of one box, in Python floats."""
    return [(b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[2] - b[0], b[3] - b[1]]


def _unit1(pos: list[float]) -> list[float]:
    """`_noise_unit` of one filter, in Python floats."""
    height = max(pos[3], 1.0)
    return [height * u for u in _UNIT_LIST]


def _predict1(
    pos: list[float], vel: list[float], pp: list[float], pv: list[float], vv: list[float], dt: float
) -> tuple[list[float], list[float], list[float], list[float]]:
    """`BoxFilter.predict` of one filter: (pos, pp, pv, vv) after `dt` (the velocity is unchanged)."""
    if dt <= 0:
        return pos, pp, pv, vv
    q = [(ACCEL * u) * (ACCEL * u) for u in _unit1(pos)]  # numpy's `** 2` is a square: x * x
    out = [p + v * dt for p, v in zip(pos, vel, strict=True)]
    out[2], out[3] = max(out[2], 1.0), max(out[3], 1.0)
    c3, c2 = dt**3 / 3, dt**2 / 2
    return (
        out,
        [a + 2 * dt * b + dt * dt * c + qk * c3 for a, b, c, qk in zip(pp, pv, vv, q, strict=True)],
        [b + dt * c + qk * c2 for b, c, qk in zip(pv, vv, q, strict=True)],
        [c + qk * dt for c, qk in zip(vv, q, strict=True)],
    )


def _update1(
    pos: list[float], vel: list[float], pp: list[float], pv: list[float], vv: list[float], z: list[float]
) -> tuple[list[float], list[float], list[float], list[float], list[float]]:
    """`BoxFilter.update` of one filter with the measured box `z` (cx, cy, w, h)."""
    noise = [(MEASURE_STD * u) * (MEASURE_STD * u) for u in _unit1(z)]
    s = [a + n for a, n in zip(pp, noise, strict=True)]
    k_p = [a / sk for a, sk in zip(pp, s, strict=True)]
    k_v = [b / sk for b, sk in zip(pv, s, strict=True)]
    innovation = [zk - p for zk, p in zip(z, pos, strict=True)]
    return (
        [p + k * i for p, k, i in zip(pos, k_p, innovation, strict=True)],
        [v + k * i for v, k, i in zip(vel, k_v, innovation, strict=True)],
        [(1 - k) * a for k, a in zip(k_p, pp, strict=True)],
        [(1 - k) * b for k, b in zip(k_p, pv, strict=True)],
        [c - k * b for c, k, b in zip(vv, k_v, pv, strict=True)],
    )
