"""`detect` section: which model, where it runs, and how frames are batched."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from vigil.config.base import FieldError, Section

Provider = Literal["auto", "tensorrt", "cuda", "cpu"]
# 8K UHD (7680 x 4320 = 33.2 MP): the largest frame a camera sends; the default of detect.max_pixels.
# Defined here (not in vigil.imaging, which needs OpenCV) so loading a config never imports cv2.
DEFAULT_MAX_PIXELS = 7680 * 4320


class HttpApiConfig(Section):
    """On-demand detection over HTTP (`vigil serve`): POST an image, get its detections."""

    host: str = Field("127.0.0.1", title="Listen address of the detection API")
    port: int = Field(8600, ge=0, le=65535, title="Port of the detection API (0: any free port)")
    token: SecretStr | None = Field(
        None, title="Bearer token clients must send; write ${VIGIL_API_TOKEN} rather than the token"
    )
    max_image_bytes: int = Field(
        20 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024, title="Larger request bodies are refused with 413"
    )

    @field_validator("token")
    @classmethod
    def _token_strong_enough(cls, token: SecretStr | None) -> SecretStr | None:
        # Checked on use too (no token: the API refuses to start); here only its strength.
        if token is not None and len(token.get_secret_value()) < 16:
            raise ValueError("token must be at least 16 characters; generate one with `openssl rand -hex 24`")
        return token


class StationaryConfig(Section):
    """Still frames (motion gating on with `motion.still_frames: publish`, and no motion in the frame) are not
    run through the model: nothing moved, so the objects of the camera's last detected frame are where they
    were (Frigate's stationary objects, per frame, since the detector sees whole frames). Their records
    carry those detections and name the frame they come from (`reused_from`)."""

    enabled: bool = Field(
        True, title="Reuse the camera's last detections for still frames instead of running the model"
    )
    redetect_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        title="Run the model on a camera's still frames at least this often (capture time), seconds: slow "
        "changes that motion detection misses (light, a parked car's lights) are seen at most this late",
    )


class DetectConfig(Section):
    model: str = Field("yolox_nano", min_length=1, title="Model name in the registry, or a path to a .onnx file")
    models_dir: str = Field("models", title="Model registry folder (manifests + .onnx files)")
    providers: list[Provider] = Field(
        default_factory=lambda: ["auto"],  # type: ignore[arg-type]
        min_length=1,
        title="ONNX Runtime execution providers in order of preference; auto picks the best available",
    )
    intra_op_threads: int = Field(
        0, ge=0, le=256, title="ONNX Runtime intra-op threads of each run (0: the cores shared among the lanes)"
    )
    lanes: int = Field(
        0,
        ge=0,
        le=64,
        title="Runs of one batch's frames at once on the CPU, each on its own thread (0: one per core on the CPU "
        "provider, 1 on a GPU); with intra_op_threads 0 every lane gets cores / lanes threads",
    )
    spin_wait: Literal["never", "during_run", "always"] = Field(
        "never",
        title="Busy-waiting of idle ONNX Runtime intra-op threads: never (they sleep, leaving the cores to the broker, "
        "ingest and JPEG decoding), during_run (spin within an inference, stop after it), always (ONNX Runtime's "
        "default: also spin after each inference)",
    )
    precision: Literal["fp32", "fp16"] = Field(
        "fp32",
        title="Arithmetic on a GPU provider: fp16 converts the graph (cuda) or builds an fp16 engine (tensorrt); "
        "the CPU provider always runs fp32",
    )
    io_binding: Literal["auto", "always", "never"] = Field(
        "auto",
        title="Run through ONNX Runtime IOBinding (a batch is copied to the device once, its outputs are read once): "
        "auto uses it on GPU providers only",
    )
    device_id: int = Field(0, ge=0, le=63, title="GPU index for the cuda and tensorrt providers")
    reduced_decode: bool = Field(
        True,
        title="Decode JPEG frames at least twice the model input at 1/2, 1/4 or 1/8 size in the DCT domain, "
        "far cheaper than a full decode and resize; boxes stay in the frame's own pixels",
    )
    rect_input: bool = Field(
        True,
        title="Letterbox each frame to its own aspect, padded only to a multiple of the model's largest stride, "
        "instead of the square input (models whose manifest sets rect_input: YOLOX-Nano runs 640x480 frames at "
        "416x320, 23% fewer pixels); boxes stay in the frame's own pixels",
    )
    stationary: StationaryConfig = Field(
        default_factory=StationaryConfig, title="Still frames reuse the last detections instead of running the model"
    )
    batch_size: int = Field(8, ge=1, le=256, title="Frames per inference batch at most")
    max_wait_ms: int = Field(50, ge=0, le=10_000, title="Longest wait to fill a batch, ms")
    fetch_wait_ms: int = Field(
        0,
        ge=0,
        le=1000,
        title="The workers' fetches of frames gather records for this long, ms (0: answered at the first record); "
        "fewer, larger fetches cost the worker and the broker less CPU and hold each frame up to the window and a "
        "fetch's round trip",
    )
    commit_interval_ms: int = Field(
        250,
        ge=0,
        le=60_000,
        title="Workers commit the offsets of published batches at most this often, ms (0: after every batch); "
        "a crash or rebalance redoes at most this much (duplicates carrying their frame ref, never a loss)",
    )
    max_age_s: float = Field(
        10.0, gt=0, le=86_400, title="Frames older than this (capture to now) are skipped and counted"
    )
    conf_threshold: float = Field(0.25, ge=0.0, le=1.0, title="Minimum confidence of a detection")
    iou_threshold: float = Field(0.45, gt=0.0, le=1.0, title="IoU above which NMS suppresses a box")
    max_detections: int = Field(300, ge=1, le=10_000, title="Boxes kept per frame at most")
    max_frame_bytes: int = Field(
        10 * 1024 * 1024,
        ge=1024,
        le=256 * 1024 * 1024,
        title="Frames larger than this go to the dead-letter topic",
    )
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS,
        ge=64 * 64,
        le=65535 * 65535,
        title="Images declaring more pixels (width x height, read from the header before decoding) are refused: "
        "dead letter `oversized_image` in the worker, 413 in `vigil serve`; default 8K UHD",
    )
    decode_concurrency: int = Field(
        2,
        ge=1,
        le=64,
        title="Images decoded at once at most per process (worker decode threads, concurrent `vigil serve` "
        "requests); peak image memory is at most this x max_pixels x 3 bytes",
    )
    class_names: list[str] | None = Field(
        None, title="Override of the model's class names (for custom models); default: from the manifest"
    )
    allow_unknown_cameras: bool = Field(
        False, title="Accept frames from cameras not in this config instead of dead-lettering them"
    )
    group_id: str = Field("vigil-detect", min_length=1, max_length=255, title="Kafka consumer group of workers")
    http: HttpApiConfig = Field(default_factory=HttpApiConfig, title="On-demand detection API (`vigil serve`)")

    @model_validator(mode="after")
    def _providers(self) -> DetectConfig:
        if "auto" in self.providers and len(self.providers) > 1:
            raise FieldError("providers", "use either [auto] or an explicit list such as [cuda, cpu]")
        if len(set(self.providers)) != len(self.providers):
            raise FieldError("providers", "providers must not repeat")
        if self.precision == "fp16" and self.providers == ["cpu"]:
            raise FieldError(
                "precision", "fp16 runs on the cuda and tensorrt providers only; the cpu provider runs fp32"
            )
        return self
