"""Rule schedules: `schedule.allows(t_ns) -> bool` for weekly windows in local wall-clock time.

A window opens on each of its `days` at `start` and closes at `end` the same day, or the next day
when `end` is not after `start` (an overnight window, 22:00-06:00, belongs to the day it starts).
Capture time is converted to the window's time zone with `zoneinfo`, and the comparison is on the
wall clock: on a daylight-saving change a window is an hour shorter or longer in real time, and a
start time that does not exist that day (02:30 on the spring-forward night) opens at the first
wall-clock time after it (03:00).
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from vigil.config.alerts import WEEKDAYS, ScheduleWindow, clock_minutes

NS = 1_000_000_000


@dataclass(frozen=True)
class _Window:
    zone: zoneinfo.ZoneInfo
    days: frozenset[int]  # Monday = 0, as datetime.weekday()
    start_s: int  # seconds after local midnight
    end_s: int

    def contains(self, t_ns: int) -> bool:
        local = datetime.fromtimestamp(t_ns / NS, tz=self.zone)
        second = local.hour * 3600 + local.minute * 60 + local.second
        day = local.weekday()
        if self.start_s < self.end_s:
            return day in self.days and self.start_s <= second < self.end_s
        # Overnight: the evening part on a listed day, the morning part on the day after one.
        return (day in self.days and second >= self.start_s) or ((day - 1) % 7 in self.days and second < self.end_s)


class Schedule:
    """The windows of one rule; no windows means always open."""

    def __init__(self, windows: Sequence[ScheduleWindow] = ()) -> None:
        self.windows = [
            _Window(
                zoneinfo.ZoneInfo(w.timezone),
                frozenset(WEEKDAYS.index(d) for d in w.days),
                clock_minutes(w.start) * 60,
                clock_minutes(w.end) * 60,
            )
            for w in windows
        ]

    @property
    def always(self) -> bool:
        return not self.windows

    def allows(self, t_ns: int) -> bool:
        return not self.windows or any(w.contains(t_ns) for w in self.windows)
