"""Rule schedules: weekly windows in local wall-clock time (overnight, daylight-saving changes),
gating only the start of alerts, and their validation."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alerts_helpers import alerts_config, camera, record, walk

from alerts.engine import AlertEngine
from alerts.schedule import Schedule
from vigil.config.alerts import ScheduleWindow
from vigil.config.loader import parse_config
from vigil.errors import ConfigError

NS = 1_000_000_000
REPO = Path(__file__).resolve().parents[2]


def utc(text: str) -> int:
    """'2025-03-30 01:00' (UTC) -> ns."""
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()) * NS


def window(**fields: object) -> Schedule:
    return Schedule([ScheduleWindow.model_validate(fields)])


BERLIN_SAT_NIGHT = {"days": ["sat"], "start": "22:00", "end": "06:00", "timezone": "Europe/Berlin"}


@pytest.mark.parametrize(
    ("fields", "instant", "open_"),
    [
        # Spring forward: Sunday 2025-03-30, 02:00 CET -> 03:00 CEST. Saturday 22:00 CET is 21:00 UTC,
        # Sunday 06:00 CEST is 04:00 UTC: the night window lasts 7 hours that night.
        (BERLIN_SAT_NIGHT, "2025-03-29 20:59", False),
        (BERLIN_SAT_NIGHT, "2025-03-29 21:00", True),
        (BERLIN_SAT_NIGHT, "2025-03-30 00:59", True),  # 01:59 CET
        (BERLIN_SAT_NIGHT, "2025-03-30 01:00", True),  # 03:00 CEST, the hour after the skipped one
        (BERLIN_SAT_NIGHT, "2025-03-30 03:59", True),  # 05:59 CEST
        (BERLIN_SAT_NIGHT, "2025-03-30 04:00", False),  # 06:00 CEST
        (BERLIN_SAT_NIGHT, "2025-03-30 21:00", False),  # Sunday 23:00: not a listed day
        # Fall back: Sunday 2025-10-26, 03:00 CEST -> 02:00 CET. 22:00 CEST is 20:00 UTC, 06:00 CET is
        # 05:00 UTC: 9 hours, and both 02:30s are inside.
        (BERLIN_SAT_NIGHT, "2025-10-25 19:59", False),
        (BERLIN_SAT_NIGHT, "2025-10-25 20:00", True),
        (BERLIN_SAT_NIGHT, "2025-10-26 00:30", True),  # 02:30 CEST
        (BERLIN_SAT_NIGHT, "2025-10-26 01:30", True),  # 02:30 CET
        (BERLIN_SAT_NIGHT, "2025-10-26 04:59", True),  # 05:59 CET
        (BERLIN_SAT_NIGHT, "2025-10-26 05:00", False),  # 06:00 CET
        # A window starting in the skipped hour opens at the first wall-clock time after it.
        ({"days": ["sun"], "start": "02:30", "end": "04:00", "timezone": "Europe/Berlin"}, "2025-03-30 00:59", False),
        ({"days": ["sun"], "start": "02:30", "end": "04:00", "timezone": "Europe/Berlin"}, "2025-03-30 01:00", True),
        # Same-day windows, days of the week, the whole day.
        ({"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "18:00", "timezone": "UTC"},
         "2025-06-06 17:59", True),  # Friday
        ({"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "18:00", "timezone": "UTC"},
         "2025-06-06 18:00", False),
        ({"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "18:00", "timezone": "UTC"},
         "2025-06-07 10:00", False),  # Saturday
        ({"days": ["sun"], "start": "00:00", "end": "24:00", "timezone": "UTC"}, "2025-06-08 23:59", True),
        ({"days": ["sun"], "start": "00:00", "end": "24:00", "timezone": "UTC"}, "2025-06-09 00:00", False),
        # Overnight on Friday: Saturday morning belongs to it, Friday morning does not.
        ({"days": ["fri"], "start": "22:00", "end": "06:00", "timezone": "America/New_York"}, "2025-06-07 09:59", True),
        ({"days": ["fri"], "start": "22:00", "end": "06:00", "timezone": "America/New_York"}, "2025-06-06 09:59", False),
    ],
)  # fmt: skip
def test_window_table(fields: dict[str, object], instant: str, open_: bool) -> None:
    assert window(**fields).allows(utc(instant)) is open_


def test_no_windows_means_always() -> None:
    assert Schedule([]).always and Schedule([]).allows(0)


# 1_700_000_000 s (alerts_helpers.T0) is Tuesday 2023-11-14 22:13:20 UTC; frames at 5 fps.
def at(clock: str) -> int:
    """Frame number (5 fps from T0) of a time of Tuesday 2023-11-14, UTC."""
    return round((utc(f"2023-11-14 {clock}") - 1_700_000_000 * NS) / NS * 5)


def test_only_starts_are_gated_and_an_open_alert_ends_normally() -> None:
    rule = {"min_frames": 3, "end_after_s": 1.0, "cooldown_s": 0.0,
            "schedule": [{"days": ["tue"], "start": "22:14", "end": "22:15", "timezone": "UTC"}]}  # fmt: skip
    engine = AlertEngine(alerts_config(**rule), [camera()])
    opens, closes = at("22:14:00"), at("22:15:00")
    standing = (280.0, 260.0, 320.0, 390.0)  # feet inside the door zone
    late = walk(210, 330, 40, y=250)
    out = []
    for i in range(opens - 50, closes + 60):
        boxes = []
        if i < closes + 25:
            boxes.append(standing)  # waits in the zone before the window opens, stays past its close
        if closes + 10 <= i < closes + 50:
            boxes.append(late[i - closes - 10])  # another person, entirely after the close
        rec = record(i, boxes)
        out += [(i, a.event) for a in engine.process(rec, rec.capture_ns)]
    # Started on the first frame inside the window (the conditions were met long before), ended
    # when the person left, 5 s after the window closed; the late person fired nothing.
    assert out == [(opens, "started"), (closes + 24 + 5, "ended")]


def test_schedule_errors_name_the_key() -> None:
    text = """
    alerts:
      rules:
        - name: night
          schedule:
            - {days: [mon], start: "22:00", end: "06:00", timezone: Europe/Berln}
            - {days: [], start: "08:00", end: "09:00", timezone: UTC}
            - {start: 22:00, end: "23:00", timezone: UTC}
            - {start: "18:00", end: "25:00", timezone: UTC}
            - {start: "18:00", end: "18:00", timezone: UTC}
    """
    with pytest.raises(ConfigError) as info:
        parse_config(textwrap.dedent(text), "t.yaml", {})
    issues = {issue.key: issue.message for issue in info.value.issues}
    assert "did you mean 'Europe/Berlin'" in issues["alerts.rules[0].schedule[0].timezone"]
    assert "days is empty" in issues["alerts.rules[0].schedule[1].days"]
    assert 'write the time in quotes, like start: "22:00"' in issues["alerts.rules[0].schedule[2].start"]
    assert "not a time of day" in issues["alerts.rules[0].schedule[3].end"]
    assert 'start "00:00", end "24:00"' in issues["alerts.rules[0].schedule[4].end"]
    lines = {issue.key: issue.line for issue in info.value.issues}
    assert lines["alerts.rules[0].schedule[0].timezone"] == 6


def test_config_validate_reports_bad_schedules() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "vigil", "config", "validate", "examples/bad-schedule.yaml"],
        capture_output=True, text=True, cwd=REPO, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "line 9: alerts.rules[0].schedule[0].timezone: unknown time zone 'Europe/Berln'" in result.stderr
    assert "alerts.rules[0].schedule[1].days: days is empty" in result.stderr
    assert "alerts.rules[0].schedule[2].start: write the time in quotes" in result.stderr
    assert "alerts.rules[0].schedule[3].end: time '25:00' is not a time of day" in result.stderr
