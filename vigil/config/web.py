"""`web` section: the review service (`vigil web`): alert store, media, login, signed links."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator

from vigil.config.base import NAME_PATTERN, Section
from vigil.errors import ConfigIssue
from vigil.passwords import PasswordHashError, parse_hash

Role = Literal["admin", "viewer"]
# 8K UHD, as vigil.imaging.DEFAULT_MAX_PIXELS (not imported: the config never loads OpenCV).
_MAX_PIXELS = 7680 * 4320


class WebUserConfig(Section):
    """A person who logs in to the console."""

    name: str = Field(..., pattern=NAME_PATTERN, title="User name typed at login")
    role: Role = Field("viewer", title="admin may change review state; viewer only reads")
    password_hash: SecretStr = Field(
        ..., title="Hash printed by `vigil web hash-password` (never the password); write ${ENV} or paste it"
    )

    @field_validator("password_hash")
    @classmethod
    def _hash_format(cls, value: SecretStr) -> SecretStr:
        try:
            parse_hash(value.get_secret_value())
        except PasswordHashError as exc:
            raise ValueError(str(exc)) from None
        return value


class WebTokenConfig(Section):
    """A bearer token for scripts (`Authorization: Bearer <token>`)."""

    name: str = Field(..., pattern=NAME_PATTERN, title="Name the token's requests are logged and reviewed as")
    role: Role = Field("viewer", title="admin may change review state; viewer only reads")
    token: SecretStr = Field(..., title="The token; write ${VIGIL_WEB_TOKEN} rather than the token itself")

    @field_validator("token")
    @classmethod
    def _strong(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 24:
            raise ValueError("token must be at least 24 characters; generate one with `openssl rand -hex 24`")
        return value


class WebConfig(Section):
    """The review service: every alert stored and searchable, snapshots and clips from the frames topic."""

    enabled: bool = Field(True, title="Run the review service in `vigil up`")
    host: str = Field("127.0.0.1", title="Listen address (loopback unless told otherwise)")
    port: int = Field(8080, ge=1, le=65535, title="Listen port of the API and console")
    group_id: str = Field("vigil-web", min_length=1, max_length=255, title="Consumer group on the alerts topic")
    store: str = Field(".state/web/alerts.sqlite3", min_length=1, title="SQLite file of the alert store")
    keep_days: float = Field(30.0, gt=0, le=3650, title="Alerts older than this (start time) are deleted, days")
    users: list[WebUserConfig] = Field(default_factory=list, max_length=1000, title="People who may log in")
    tokens: list[WebTokenConfig] = Field(default_factory=list, max_length=1000, title="Bearer tokens for scripts")
    session_ttl_s: int = Field(43_200, ge=1, le=30 * 86_400, title="A login session lasts this long, seconds")
    login_window_s: int = Field(300, ge=1, le=86_400, title="Window in which failed logins are counted, seconds")
    login_max_failures: int = Field(
        5, ge=1, le=1000, title="Failed logins per user name and per address in the window before 429"
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        max_length=100,
        title="Addresses of reverse proxies whose X-Forwarded-Proto/For are believed (none by default)",
    )
    public_url: str | None = Field(
        None, title="Base URL receivers reach this service at (https://vigil.example.org); enables signed links"
    )
    media_key: SecretStr | None = Field(
        None, title="Key that signs media links; write ${VIGIL_MEDIA_KEY} (at least 32 characters)"
    )
    link_ttl_s: int = Field(7 * 86_400, ge=60, le=365 * 86_400, title="Signed links open this long after the alert")
    clip_pre_s: float = Field(5.0, ge=0, le=300, title="Clip starts this long before the alert, seconds")
    clip_post_s: float = Field(5.0, ge=0, le=300, title="Clip ends this long after the alert, seconds")
    clip_max_s: float = Field(600.0, gt=0, le=3600, title="Longest clip built; longer alerts are cut, seconds")
    clip_cache_mb: int = Field(1024, ge=1, le=1_000_000, title="Disk cache of built clips and snapshots, MiB")
    clip_cache_dir: str = Field(".state/web/media", min_length=1, title="Folder of the clip and snapshot cache")
    max_pixels: int = Field(
        _MAX_PIXELS, ge=64 * 64, le=2 * _MAX_PIXELS, title="Frames larger than this are not decoded"
    )
    media_workers: int = Field(
        4, ge=1, le=64, title="Snapshots and clips built at once; up to 4 per worker more wait, the rest get 503"
    )
    media_timeout_s: float = Field(
        5.0, ge=0.5, le=60, title="Longest wait on Kafka for a snapshot or clip before 503, seconds"
    )
    # 50 frames: 10 s at the default 5 fps, about 2.5 MB per camera at 50 KB a frame (docs/api.md).
    live_frames: int = Field(
        50, ge=1, le=300, title="Newest frames held in memory per camera for the live view (detection lag they cover)"
    )
    max_body_bytes: int = Field(
        65_536, ge=1024, le=16 * 1024 * 1024, title="Larger request bodies are refused with 413"
    )

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.lower().startswith(("http://", "https://")):
            raise ValueError("public_url must start with https:// (or http:// on a trusted network)")
        if value is not None and any(c in value for c in "?#"):
            raise ValueError("public_url must be a base URL without query or fragment")
        return value


def web_issues(web: WebConfig) -> list[ConfigIssue]:
    """Cross-field checks of the `web` section, each pinned to its own key."""
    issues: list[ConfigIssue] = []
    if web.public_url is not None and web.media_key is None:
        issues.append(
            ConfigIssue(
                "web.media_key",
                "web.public_url is set, so links must be signed: set media_key to ${VIGIL_MEDIA_KEY} "
                "(e.g. `openssl rand -hex 32`)",
            )
        )
    if web.media_key is not None and len(web.media_key.get_secret_value()) < 32:
        issues.append(ConfigIssue("web.media_key", "media_key must be at least 32 characters (`openssl rand -hex 32`)"))
    for kind, entries in (("users", web.users), ("tokens", web.tokens)):
        names = [e.name for e in entries]
        for index, name in enumerate(names):
            if names.index(name) != index:
                issues.append(ConfigIssue(f"web.{kind}[{index}].name", f"name {name!r} is used twice"))
    tokens = [t.token.get_secret_value() for t in web.tokens]
    for index, token in enumerate(tokens):
        if tokens.index(token) != index:
            issues.append(ConfigIssue(f"web.tokens[{index}].token", "the same token is listed twice"))
    if web.clip_pre_s + web.clip_post_s > web.clip_max_s:
        issues.append(ConfigIssue("web.clip_max_s", "clip_max_s must be at least clip_pre_s + clip_post_s"))
    return issues
