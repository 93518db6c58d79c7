"""`cameras` section: sources, sampling, motion gating (and its masks), zones and object filters per camera."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from vigil.config.areas import PolygonArea, names_unique, pixel_polygons_within
from vigil.config.base import NAME_PATTERN, FieldError, Section
from vigil.config.objects import CameraObjectsConfig
from vigil.redact import split_credentials


class ZoneConfig(PolygonArea):
    """A named area of the picture that alert rules refer to."""

    name: str = Field(..., pattern=NAME_PATTERN, title="Zone name, unique per camera")


class MotionMaskConfig(PolygonArea):
    """A polygon motion gating ignores (a clock, trees in the wind, a busy road outside the area of interest)."""

    name: str = Field(..., pattern=NAME_PATTERN, title="Mask name, unique among the camera's motion masks")


class MotionConfig(Section):
    enabled: bool = Field(
        False,
        title="Detect motion per sampled frame; frames without it are dropped or published as still (still_frames)",
    )
    still_frames: Literal["publish", "drop"] = Field(
        "publish",
        title="Sampled frames without motion: publish them marked still (detection reuses the camera's last "
        "detections, so tracks and alerts of stationary objects go on; the frames topic keeps every frame for "
        "clips), or drop them (one keep-alive per keepalive_s; an alert on an object that stands still ends "
        "after end_after_s)",
    )
    downscale_width: int = Field(320, ge=32, le=1920, title="Width of the grey frame motion is computed on")
    threshold: int = Field(25, ge=1, le=255, title="Pixel difference counted as change (0-255)")
    min_area_fraction: float = Field(
        0.002,
        ge=0.0,
        le=1.0,
        title="Smallest changed area, as a fraction of the frame, that counts as motion",
    )
    keepalive_s: float = Field(
        10.0,
        ge=0.5,
        le=3600.0,
        title="With still_frames: drop, send a frame at least this often without motion, seconds",
    )
    masks: list[MotionMaskConfig] = Field(
        default_factory=list, max_length=64, title="Areas whose changes are not motion (gating ignores them)"
    )

    @model_validator(mode="after")
    def _unique(self) -> MotionConfig:
        names_unique(list(self.masks), "masks", "motion mask")
        return self


class ReplayConfig(Section):
    realtime: bool = Field(True, title="Pace frames at the true frame rate; false publishes as fast as possible")
    source_fps: float | None = Field(
        None,
        gt=0,
        le=1000,
        title="True frame rate of the recording (containers often lie); default: container's",
    )
    loop: bool = Field(False, title="Restart from start_frame at the end of the recording")
    start_frame: int = Field(0, ge=0, title="First source frame to publish (0-based)")
    end_frame: int | None = Field(None, ge=1, title="Stop before this source frame (exclusive)")

    @model_validator(mode="after")
    def _range(self) -> ReplayConfig:
        if self.end_frame is not None and self.end_frame <= self.start_frame:
            raise FieldError("end_frame", "end_frame must be greater than start_frame")
        return self


class CameraConfig(Section):
    id: str = Field(..., pattern=NAME_PATTERN, title="Camera id: Kafka key and metrics label")
    url: SecretStr = Field(
        ...,
        title="rtsp://user:${CAM_PASSWORD}@host/path, or a video file / image folder for replay",
    )
    kind: Literal["rtsp", "replay"] = Field("rtsp", title="Live RTSP stream, or a recording replayed")
    enabled: bool = Field(True, title="Whether ingest opens this camera")
    fps: float = Field(5.0, gt=0, le=60, title="Frames per second sent to detection, chosen by timestamp")
    max_width: int | None = Field(None, ge=64, le=7680, title="Downscale frames wider than this, pixels")
    jpeg_quality: int = Field(85, ge=30, le=100, title="JPEG quality of published frames")
    rtsp_transport: Literal["tcp", "udp"] = Field("tcp", title="RTSP transport; TCP survives lossy networks")
    decode_threads: int = Field(
        1,
        ge=0,
        le=32,
        title="FFmpeg decoder threads for this camera's stream (0: FFmpeg's choice, one per core); "
        "raise it only for a stream one core cannot decode at its frame rate",
    )
    open_timeout_s: float = Field(10.0, ge=0.5, le=120, title="Timeout for opening the stream, seconds")
    read_timeout_s: float = Field(5.0, ge=0.5, le=120, title="Timeout for one read; a frozen stream is reopened")
    reconnect_initial_s: float = Field(0.5, ge=0.05, le=60, title="First reconnect delay, seconds")
    reconnect_max_s: float = Field(30.0, ge=0.1, le=3600, title="Cap of the exponential reconnect delay, seconds")
    queue_size: int = Field(4, ge=1, le=1024, title="Frames buffered per camera; the oldest is dropped when full")
    motion: MotionConfig = Field(default_factory=MotionConfig, title="Motion gating")
    zones: list[ZoneConfig] = Field(default_factory=list, title="Named zones that alert rules refer to")
    objects: CameraObjectsConfig = Field(
        default_factory=CameraObjectsConfig,
        title="Object filters (merged over the global `objects`) and object masks of this camera",
    )
    replay: ReplayConfig = Field(default_factory=ReplayConfig, title="Replay options (kind: replay)")

    @field_validator("url")
    @classmethod
    def _url_valid(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        if not url.strip():
            raise ValueError("url must not be empty")
        _, _, password, _ = split_credentials(url)
        if password is not None and any(c in password for c in "#/?@"):
            # FFmpeg cuts the URL at these characters; the message never repeats the password.
            raise ValueError(
                "the password in url contains '#', '/', '?' or '@': percent-encode them "
                "(# as %23, / as %2F, ? as %3F, @ as %40)"
            )
        return value

    @model_validator(mode="after")
    def _cross_checks(self) -> CameraConfig:
        url = self.url.get_secret_value()
        pixel_polygons_within(list(self.zones), self.max_width, "zones", "zone")
        pixel_polygons_within(list(self.objects.masks), self.max_width, "objects.masks", "object mask")
        pixel_polygons_within(list(self.motion.masks), self.max_width, "motion.masks", "motion mask")
        if self.kind == "rtsp" and not url.lower().startswith(("rtsp://", "rtsps://", "http://", "https://")):
            raise FieldError("url", "kind: rtsp needs an rtsp:// url; for a file set kind: replay")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise FieldError("reconnect_max_s", "reconnect_max_s must be at least reconnect_initial_s")
        names_unique(list(self.zones), "zones", "zone")
        return self

    def zone(self, name: str) -> ZoneConfig | None:
        return next((z for z in self.zones if z.name == name), None)
