"""Choose which frames go to detection, by timestamp rather than by counting.

Counting ("every 5th frame") drifts whenever the source rate is not what was assumed, varies,
or jitters. `FpsSampler` keeps a grid of slots `period` apart and takes the first frame whose
timestamp reaches the next slot, so the output rate is `min(target, source)` on average for
any source rate, and jitter only moves which frame fills a slot, never how many are taken.
"""

from __future__ import annotations


class FpsSampler:
    """`take(ts_ns) -> bool`: whether the frame with this timestamp fills the next slot.

    `fps=None` takes every frame (replay for evaluation). A timestamp that goes backwards (a
    looped recording, a reconnected stream whose clock restarted) starts a new grid at that
    frame, and so does a jump forward of more than `resync_s` (a long outage), so neither
    causes a burst nor a long gap.
    """

    def __init__(self, fps: float | None, resync_s: float = 5.0) -> None:
        if fps is not None and fps <= 0:
            raise ValueError(f"fps must be positive or None, got {fps}")
        self.fps = fps
        self._period_ns = round(1e9 / fps) if fps else 0
        self._resync_ns = int(resync_s * 1e9)
        self._next_ns: int | None = None
        self._last_ns: int | None = None

    def reset(self) -> None:
        self._next_ns = None
        self._last_ns = None

    def take(self, ts_ns: int) -> bool:
        if not self._period_ns:
            return True
        last, self._last_ns = self._last_ns, ts_ns
        if self._next_ns is None or (last is not None and ts_ns < last) or ts_ns - self._next_ns > self._resync_ns:
            self._next_ns = ts_ns + self._period_ns
            return True
        if ts_ns < self._next_ns:
            return False
        # Stay on the grid: the next slot is the first grid point after this frame.
        missed = (ts_ns - self._next_ns) // self._period_ns
        self._next_ns += (missed + 1) * self._period_ns
        return True
