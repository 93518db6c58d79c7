"""`alerts` section: tracking, rules and webhook endpoints."""

from __future__ import annotations

import base64
import binascii
import difflib
import re
import zoneinfo
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from vigil.config.base import NAME_PATTERN, FieldError, Section


class TrackerConfig(Section):
    high_threshold: float = Field(0.6, ge=0.0, le=1.0, title="Detections above this extend any track (first stage)")
    low_threshold: float = Field(
        0.3, ge=0.0, le=1.0, title="Detections between low and high only extend confirmed tracks (ByteTrack)"
    )
    new_track_threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        title="A detection matched to no track starts one when at least this confident; none: high_threshold",
    )
    match_iou: float = Field(0.3, gt=0.0, le=1.0, title="Minimum IoU to match a detection to a track's box")
    min_hits: int = Field(2, ge=1, le=100, title="Consecutive matches before a track is confirmed")
    lost_after_s: float = Field(
        1.0, gt=0, le=600, title="A confirmed track unmatched this long (capture time) is removed, seconds"
    )

    @model_validator(mode="after")
    def _thresholds(self) -> TrackerConfig:
        if self.low_threshold > self.high_threshold:
            raise FieldError("low_threshold", "low_threshold must not exceed high_threshold")
        if self.new_track_threshold is not None and self.new_track_threshold < self.high_threshold:
            raise FieldError(
                "new_track_threshold",
                "new_track_threshold must be at least high_threshold (only confident boxes start tracks)",
            )
        return self

    @property
    def start_threshold(self) -> float:
        """The confidence a detection needs to start a track."""
        return self.high_threshold if self.new_track_threshold is None else self.new_track_threshold


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
_CLOCK_RE = re.compile(r"^(\d{1,2}):(\d{2})$")


def clock_minutes(value: str) -> int:
    """'22:30' -> 1350 minutes after midnight (the validated `ScheduleWindow` format; '24:00' is 1440)."""
    match = _CLOCK_RE.match(value)
    if match is None:
        raise ValueError(f'time {value!r} must be HH:MM, like "07:30"')
    return int(match.group(1)) * 60 + int(match.group(2))


class ScheduleWindow(Section):
    """A weekly window in which a rule may start alerts, in local (wall-clock) time of a time zone."""

    days: list[Weekday] = Field(
        default_factory=lambda: list(WEEKDAYS),  # type: ignore[arg-type]
        max_length=7,
        title="Days of the week the window starts on (mon..sun); an overnight window ends the next day",
    )
    start: str = Field(..., pattern=r"^\d{1,2}:\d{2}$", title="Local start time HH:MM (inclusive)")
    end: str = Field(
        ...,
        pattern=r"^\d{1,2}:\d{2}$",
        title="Local end time HH:MM (exclusive, 24:00 = midnight); earlier than start: ends the next day",
    )
    timezone: str = Field(..., min_length=1, max_length=64, title="IANA time zone of start and end, e.g. Europe/Berlin")

    @field_validator("start", "end", mode="before")
    @classmethod
    def _clock(cls, value: Any, info: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            # YAML 1.1 reads an unquoted 22:00 as the base-60 number 1320.
            clock = f"{value // 60:02d}:{value % 60:02d}"
            raise ValueError(
                f'write the time in quotes, like {info.field_name}: "{clock}" (YAML reads an unquoted '
                f"{value // 60}:{value % 60:02d} as the number {value})"
            )
        if isinstance(value, str):
            minutes = clock_minutes(value.strip())
            limit = 24 * 60 if info.field_name == "end" else 24 * 60 - 1
            if minutes > limit or int(value.strip().split(":")[1]) > 59:
                raise ValueError(
                    f"time {value!r} is not a time of day: HH:MM from 00:00 to {'24:00' if limit == 1440 else '23:59'}"
                )
        return value

    @field_validator("end", mode="after")
    @classmethod
    def _not_empty(cls, value: str, info: Any) -> str:
        start = info.data.get("start")
        if start is not None and clock_minutes(start) == clock_minutes(value):
            raise ValueError(f'start and end are both {value}: for the whole day write start "00:00", end "24:00"')
        return value

    @field_validator("days", mode="after")
    @classmethod
    def _days(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError(
                "days is empty, so the window never opens: list days (mon..sun) or leave days out for every day"
            )
        repeated = sorted({d for d in value if value.count(d) > 1}, key=WEEKDAYS.index)
        if repeated:
            raise ValueError(f"days repeated: {repeated}")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            close = difflib.get_close_matches(value, sorted(zoneinfo.available_timezones()), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(
                f"unknown time zone {value!r}; {hint}use an IANA name like 'Europe/Berlin' or 'UTC'"
            ) from None
        return value


class RuleConfig(Section):
    name: str = Field(..., pattern=NAME_PATTERN, title="Rule name, unique")
    cameras: list[str] = Field(default_factory=list, title="Cameras the rule applies to; empty means all")
    zone: str | None = Field(None, title="Zone name (on each camera of the rule); none means the whole frame")
    classes: list[str] = Field(
        default_factory=lambda: ["person"], min_length=1, max_length=1000, title="Class names that count"
    )
    min_confidence: float = Field(0.5, ge=0.0, le=1.0, title="Minimum detection confidence that counts")
    anchor: Literal["bottom_center", "center"] = Field(
        "bottom_center", title="Point of the box tested against the zone"
    )
    min_frames: int = Field(3, ge=1, le=10_000, title="Consecutive frames in the zone before the alert starts")
    min_dwell_s: float = Field(0.0, ge=0.0, le=86_400, title="Seconds in the zone before the alert starts")
    end_after_s: float = Field(
        3.0, gt=0, le=3600, title="The alert ends when the track has been out of the zone or lost this long"
    )
    cooldown_s: float = Field(
        30.0,
        ge=0.0,
        le=86_400,
        title="After an alert ends, the same track cannot start it again for this long",
    )
    update_every_s: float | None = Field(
        None, gt=0, le=86_400, title="Send `updated` events this often while the alert lasts; none: never"
    )
    rejoin_s: float = Field(
        1.0,
        ge=0.0,
        le=3600,
        title="A new track appearing where an alert's track was lost at most this long before continues that "
        "alert (or its cooldown, if it ended): one alert per object across identity breaks; 0: never",
    )
    schedule: list[ScheduleWindow] = Field(
        default_factory=list,
        max_length=64,
        title="Windows in which the rule may start alerts (capture time); empty: always",
    )


class WebhookConfig(Section):
    name: str = Field(..., pattern=NAME_PATTERN, title="Endpoint name; also names its delivery consumer group")
    url: SecretStr = Field(..., title="https:// URL that receives POSTed alerts (may contain a token)")
    secrets: list[SecretStr] = Field(
        ...,
        min_length=1,
        max_length=2,
        title="Standard Webhooks signing secrets (whsec_...); two during rotation, newest first",
    )
    rules: list[str] = Field(default_factory=list, title="Rules delivered to this endpoint; empty means all")
    events: list[Literal["started", "updated", "ended"]] = Field(
        default_factory=lambda: ["started", "updated", "ended"],  # type: ignore[arg-type]
        min_length=1,
        title="Alert events delivered",
    )
    timeout_s: float = Field(5.0, gt=0, le=120, title="HTTP timeout of one attempt, seconds")
    initial_backoff_s: float = Field(0.5, gt=0, le=600, title="First retry delay, seconds")
    max_backoff_s: float = Field(60.0, gt=0, le=3600, title="Cap of the exponential retry delay, seconds")
    give_up_after_s: float | None = Field(
        None,
        gt=0,
        le=30 * 86_400,
        title="Dead-letter an event still failing after this long, seconds; none: retry until delivered",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().lower().startswith(("http://", "https://")):
            raise ValueError("webhook url must start with http:// or https://")
        return value

    @field_validator("secrets")
    @classmethod
    def _whsec(cls, values: list[SecretStr]) -> list[SecretStr]:
        for index, secret in enumerate(values):
            raw = secret.get_secret_value()
            body = raw.removeprefix("whsec_")
            try:
                decoded = base64.b64decode(body, validate=True)
            except (binascii.Error, ValueError):
                decoded = b""
            # Never echo the secret: the message names only its position.
            if not raw.startswith("whsec_") or len(decoded) < 16:
                raise ValueError(
                    f"secret #{index + 1} must be 'whsec_' + base64 of at least 16 random bytes; "
                    "generate one with `vigil alerts --new-secret`"
                )
        return values

    @model_validator(mode="after")
    def _backoff(self) -> WebhookConfig:
        if self.max_backoff_s < self.initial_backoff_s:
            raise FieldError("max_backoff_s", "max_backoff_s must be at least initial_backoff_s")
        return self


class AlertsConfig(Section):
    group_id: str = Field("vigil-alerts", min_length=1, max_length=255, title="Consumer group of the aggregator")
    tracker: TrackerConfig = Field(default_factory=TrackerConfig, title="Object tracker")
    rules: list[RuleConfig] = Field(default_factory=list, title="Alert rules")
    rate_limit_per_minute: int = Field(
        30, ge=1, le=100_000, title="Alerts started per camera per minute at most; the rest are counted"
    )
    snapshot: Literal["none", "base64_jpeg", "frame_ref"] = Field(
        "frame_ref",
        title="How an alert carries its image: none, an inline JPEG, or the frame's Kafka reference",
    )
    webhooks: list[WebhookConfig] = Field(default_factory=list, title="Webhook endpoints")
    restore_lookback_s: float = Field(
        3600.0,
        gt=0,
        le=7 * 86_400,
        title="On (re)start, alerts published this recently are read back so open alerts are not fired twice",
    )
    commit_interval_ms: int = Field(
        1000,
        ge=0,
        le=60_000,
        title="The aggregator commits its detections offsets at most this often, ms (0: after every poll); "
        "a restart re-reads at most this much, without firing an alert twice",
    )
    fetch_wait_ms: int = Field(
        0,
        ge=0,
        le=1000,
        title="The aggregator's fetches of detections gather records for this long, ms (0: answered at the first "
        "record); fewer, larger fetches cost the aggregator and the broker less CPU and delay an alert up to this much",
    )

    @model_validator(mode="after")
    def _names(self) -> AlertsConfig:
        for section, names in (("rules", [r.name for r in self.rules]), ("webhooks", [w.name for w in self.webhooks])):
            for index, name in enumerate(names):
                if names.index(name) != index:  # pinned to the second use of the name
                    raise FieldError((section, index, "name"), f"{section[:-1]} name {name!r} is used twice")
        return self
