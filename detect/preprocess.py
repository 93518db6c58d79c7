"""Letterbox preprocessing of a batch of BGR frames into one network input tensor, and the inverse
mapping of boxes back to source pixels.

Each frame goes straight into its slice of the batch's float32 tensor: one `cv2.resize` to the letterboxed
size, one `cv2.split` into contiguous colour planes, and one cast-and-scale copy per plane into the tensor,
in the model's channel order. All of it releases the GIL and runs per frame, so the worker's decode threads
prepare frames while ONNX Runtime runs; no uint8 canvas of the whole batch is made and converted afterwards
(half the work of a canvas plus one vectorised HWC -> CHW conversion, measured in bench/bench_detect.py).
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
        self._pad = np.float32(pad_value) * self.scale

    def fit(self, width: int, height: int) -> Letterbox:
        """Where an image of `width` x `height` goes in the network input."""
        return Letterbox.fit(width, height, self.in_w, self.in_h, self.placement)

    def tensor(self, batch: int) -> npt.NDArray[np.float32]:
        """An uninitialised (B, 3, H, W) batch tensor; `place` fills each frame's slice completely."""
        return np.empty((batch, 3, self.in_h, self.in_w), np.float32)

    def place(
        self, image: npt.NDArray[np.uint8], out: npt.NDArray[np.float32], box: Letterbox | None = None
    ) -> Letterbox:
        """Letterbox `image` into `out`, one frame's (3, H, W) slice of the batch tensor, padding included.

        `box`: the placement to use, when the image is a reduced decode of a larger frame (its boxes map
        back to the frame's own pixels); default: fitted to `image` itself."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ContractError(f"expected a BGR image of shape (H, W, 3), got {image.shape}")
        if out.shape != (3, self.in_h, self.in_w):
            raise ContractError(f"expected a tensor slice of shape (3, {self.in_h}, {self.in_w}), got {out.shape}")
        box = box or self.fit(image.shape[1], image.shape[0])
        sized: np.ndarray = image
        if (box.new_w, box.new_h) != (image.shape[1], image.shape[0]):
            sized = cv2.resize(image, (box.new_w, box.new_h), interpolation=cv2.INTER_LINEAR)
        planes = cv2.split(sized)  # B, G, R
        if self.rgb:
            planes = planes[::-1]
        out.fill(self._pad)
        rows = slice(box.pad_y, box.pad_y + box.new_h)
        cols = slice(box.pad_x, box.pad_x + box.new_w)
        for channel, plane in enumerate(planes):
            if self.scale == 1.0:
                np.copyto(out[channel, rows, cols], plane, casting="unsafe")
            else:
                np.multiply(plane, self.scale, out=out[channel, rows, cols], casting="unsafe")
        return box

    def __call__(self, images: list[npt.NDArray[np.uint8]]) -> PreparedBatch:
        tensor = self.tensor(len(images))
        boxes = tuple(self.place(image, tensor[i]) for i, image in enumerate(images))
        return PreparedBatch(tensor, boxes)
