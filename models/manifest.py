"""`ModelManifest`: what the runtime must know about a model file, kept beside it as YAML.

A manifest pins the file by sha256 and records everything a decoder needs that the ONNX graph does not say
reliably: the output family, colour order, input scaling and letterbox placement, and the class names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vigil.config.registry import MANIFEST_SUFFIXES as MANIFEST_SUFFIXES  # re-exported: one definition
from vigil.errors import ModelError

Family = Literal["ultralytics", "yolox"]


class ModelManifest(BaseModel):
    """One registered model. `path` is relative to the manifest's folder unless absolute."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", title="Registry name")
    version: str = Field(..., min_length=1, title="Model version (free text, e.g. ultralytics 8.4.115)")
    family: Family = Field(..., title="Output layout: ultralytics [B,4+C,N] or yolox [B,N,5+C]")
    path: str = Field(..., min_length=1, title="ONNX file, relative to the manifest's folder")
    input_size: tuple[int, int] = Field(..., title="Network input [height, width] in pixels")
    channel_order: Literal["rgb", "bgr"] = Field(..., title="Colour order the network expects")
    scale: float = Field(..., gt=0, title="Factor applied to 0-255 pixel values (1/255 or 1)")
    letterbox: Literal["center", "top_left"] = Field(..., title="Where the resized image sits in the padded input")
    pad_value: int = Field(114, ge=0, le=255, title="Grey level of the letterbox padding (0-255)")
    strides: tuple[int, ...] = Field((8, 16, 32), min_length=1, title="Grid strides (yolox decode)")
    class_names: tuple[str, ...] = Field(..., min_length=1, title="Class names in output order")
    sha256: str = Field(..., pattern=r"^[0-9a-f]{64}$", title="sha256 of the ONNX file")
    dynamic_batch: bool = Field(False, title="Whether the exported graph has a dynamic batch axis")
    rect_input: bool = Field(
        False,
        title="Whether the graph runs at any input height and width that are multiples of the largest stride "
        "(fully convolutional, grids decoded outside the graph), so a frame can be letterboxed to its own aspect",
    )
    licence: str = Field(..., min_length=1, title="Licence of the weights")
    source: str = Field(..., min_length=1, title="Where the weights come from")

    # Set by `load`; not part of the YAML.
    manifest_dir: Path | None = Field(None, exclude=True, title="Folder the manifest was read from")

    @model_validator(mode="after")
    def _sizes(self) -> ModelManifest:
        h, w = self.input_size
        if h <= 0 or w <= 0 or h % 32 or w % 32:
            raise ValueError(f"input_size must be positive multiples of 32, got {list(self.input_size)}")
        return self

    @property
    def onnx_path(self) -> Path:
        path = Path(self.path)
        if path.is_absolute() or self.manifest_dir is None:
            return path
        return (self.manifest_dir / path).resolve()

    @classmethod
    def load(cls, file: Path) -> ModelManifest:
        """Read and validate a manifest YAML; every problem becomes a `ModelError` naming the file and key."""
        try:
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ModelError(f"cannot read model manifest {file}: {exc}") from exc
        if not isinstance(data, dict):
            raise ModelError(f"model manifest {file} must be a YAML mapping")
        try:
            return cls.model_validate({**data, "manifest_dir": file.parent})
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise ModelError(f"invalid model manifest {file}: {problems}") from exc

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", exclude={"manifest_dir"})
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=120)

    def save(self, file: Path) -> None:
        file.write_text(self.to_yaml(), encoding="utf-8")
