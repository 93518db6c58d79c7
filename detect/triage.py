"""Triage of a consumed frames record before any decoding: headers, size, encoding, camera, age."""

from __future__ import annotations

from dataclasses import dataclass

from vigil.config import VigilConfig
from vigil.contracts import FrameMeta, KafkaRecord
from vigil.errors import ContractError
from vigil.imaging import OversizedImageError


@dataclass(frozen=True)
class Rejection:
    """Why a record is not detected: `kind` labels the metric, `reason` goes into the dead letter."""

    kind: str
    reason: str


class FrameGate:
    """Pure checks on a consumed record, before any decoding: headers, size, camera, age."""

    def __init__(self, config: VigilConfig) -> None:
        self.max_bytes = config.detect.max_frame_bytes
        self.max_pixels = config.detect.max_pixels
        self.max_age_ns = int(config.detect.max_age_s * 1e9)
        self.cameras = frozenset(c.id for c in config.cameras)
        self.allow_unknown = config.detect.allow_unknown_cameras

    def check(self, record: KafkaRecord) -> FrameMeta | Rejection:
        try:
            meta = FrameMeta.from_headers(record.headers)
        except ContractError as exc:
            return Rejection("headers", f"bad frame headers: {exc}")
        size = len(record.value or b"")
        if size > self.max_bytes:
            return Rejection("oversized", f"frame is {size} bytes, over detect.max_frame_bytes={self.max_bytes}")
        if size == 0:
            return Rejection("empty", "frame record has no image bytes")
        if meta.width * meta.height > self.max_pixels:
            return Rejection(
                OversizedImageError.reason,
                f"{OversizedImageError.reason}: headers declare {meta.width}x{meta.height} = "
                f"{meta.width * meta.height / 1e6:.1f} MP, over detect.max_pixels={self.max_pixels}",
            )
        if meta.encoding.lower() not in ("jpeg", "jpg", "png"):
            return Rejection("encoding", f"frame encoding {meta.encoding!r} is not supported (jpeg or png)")
        if not self.allow_unknown and meta.camera_id not in self.cameras:
            return Rejection(
                "unknown_camera",
                f"camera {meta.camera_id!r} is not in the config's cameras (set detect.allow_unknown_cameras to accept)",
            )
        return meta

    def is_stale(self, meta: FrameMeta, now_ns: int) -> bool:
        return now_ns - meta.capture_ns > self.max_age_ns
