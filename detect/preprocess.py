"""Letterbox preprocessing of a batch of BGR frames into one network input tensor, and the inverse
mapping of boxes back to source pixels.

Each frame is resized once with `cv2.resize` (which releases the GIL, so a thread pool can prepare frames
while ONNX Runtime runs) into a shared uint8 canvas pre-filled with the pad grey; colour flip, layout change
and scaling then happen for the whole batch in one vectorised numpy expression.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from vigil.errors import ContractError

Placement = Literal["center", "top_left"]


@dataclass(frozen=True)
class Letterbox:
    """Where one source image sits inside the network input: `input = source * gain + (pad_x, pad_y)`."""

    gain: float
    pad_x: int
    pad_y: int
    src_w: int
    src_h: int
    new_w: int
    new_h: int

    @classmethod
    def fit(cls, src_w: int, src_h: int, in_w: int, in_h: int, placement: Placement) -> Letterbox:
        if src_w <= 0 or src_h <= 0:
            raise ContractError(f"image must have a positive size, got {src_w}x{src_h}")
        gain = min(in_w / src_w, in_h / src_h)
        if placement == "center":
            # Same arithmetic as ultralytics' LetterBox, so boxes match its predictions to the pixel.
            new_w, new_h = round(src_w * gain), round(src_h * gain)
            pad_x = round((in_w - new_w) / 2 - 0.1)
            pad_y = round((in_h - new_h) / 2 - 0.1)
        else:
            # YOLOX's preproc: truncated size, image in the top-left corner.
            new_w, new_h = int(src_w * gain), int(src_h * gain)
            pad_x = pad_y = 0
        return cls(gain, pad_x, pad_y, src_w, src_h, max(new_w, 1), max(new_h, 1))

    def to_input(self, xyxy: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        offset = np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], np.float32)
        result: npt.NDArray[np.float32] = (xyxy * np.float32(self.gain) + offset).astype(np.float32)
        return result

    def to_source(self, xyxy: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Input-pixel boxes -> source-pixel boxes, clipped to the image."""
        offset = np.array([self.pad_x, self.pad_y, self.pad_x, self.pad_y], np.float32)
        boxes = (xyxy - offset) / np.float32(self.gain)
        limit = np.array([self.src_w, self.src_h, self.src_w, self.src_h], np.float32)
        result: npt.NDArray[np.float32] = np.clip(boxes, 0, limit).astype(np.float32)
        return result


@dataclass(frozen=True)
class PreparedBatch:
    """The network input for a batch of frames and how each frame was placed in it."""

    tensor: npt.NDArray[np.float32]
    boxes: tuple[Letterbox, ...]

    def __len__(self) -> int:
        return len(self.boxes)


class LetterboxPreprocessor:
    """BGR uint8 frames -> float32 NCHW tensor in the model's colour order and scale."""

    def __init__(
        self,
        input_size: tuple[int, int],
        channel_order: Literal["rgb", "bgr"],
        scale: float,
        placement: Placement,
        pad_value: int = 114,
    ) -> None:
        self.in_h, self.in_w = input_size
        self.rgb = channel_order == "rgb"
        self.scale = np.float32(scale)
        self.placement: Placement = placement
        self.pad_value = pad_value

    def place(self, image: npt.NDArray[np.uint8], canvas: npt.NDArray[np.uint8]) -> Letterbox:
        """Resize `image` into `canvas` (H, W, 3, pre-filled with the pad value); returns its placement."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ContractError(f"expected a BGR image of shape (H, W, 3), got {image.shape}")
        box = Letterbox.fit(image.shape[1], image.shape[0], self.in_w, self.in_h, self.placement)
        region = canvas[box.pad_y : box.pad_y + box.new_h, box.pad_x : box.pad_x + box.new_w]
        if (box.new_w, box.new_h) != (image.shape[1], image.shape[0]):
            cv2.resize(image, (box.new_w, box.new_h), dst=region, interpolation=cv2.INTER_LINEAR)
        else:
            region[...] = image
        return box

    def canvas(self, batch: int) -> npt.NDArray[np.uint8]:
        return np.full((batch, self.in_h, self.in_w, 3), self.pad_value, np.uint8)

    def to_tensor(self, canvas: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """(B, H, W, 3) BGR uint8 -> (B, 3, H, W) float32, colour-flipped and scaled, contiguous."""
        channels = canvas[..., ::-1] if self.rgb else canvas
        tensor = np.empty((canvas.shape[0], 3, self.in_h, self.in_w), np.float32)
        np.multiply(channels.transpose(0, 3, 1, 2), self.scale, out=tensor, casting="unsafe")
        return tensor

    def __call__(self, images: list[npt.NDArray[np.uint8]]) -> PreparedBatch:
        canvas = self.canvas(len(images))
        boxes = tuple(self.place(image, canvas[i]) for i, image in enumerate(images))
        return PreparedBatch(self.to_tensor(canvas), boxes)
