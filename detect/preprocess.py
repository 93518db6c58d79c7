"""Letterbox preprocessing of a batch of BGR frames into one network input tensor, and the inverse
mapping of boxes back to source pixels.

Each frame goes straight into its slice of the batch's float32 tensor: one `cv2.resize` to the letterboxed
size, one `cv2.split` into contiguous colour planes, and one cast-and-scale copy per plane into the tensor,
in the model's channel order. All of it releases the GIL and runs per frame, so the worker's decode threads
prepare frames while ONNX Runtime runs; no uint8 canvas of the whole batch is made and converted afterwards
(half the work of a canvas plus one vectorised HWC -> CHW conversion, measured in bench/bench_detect.py).

Rectangular input (`rect`, for graphs that run at any multiple of their largest stride): a frame is scaled exactly
as into the square input, but its canvas is only padded up to the next multiple of the stride — ultralytics'
`LetterBox(auto=True)`. A 640x480 frame into YOLOX-Nano's 416x416 becomes 416x312 in a 416x320 canvas: the same
pixels at the same scale, 23 % fewer to run. A batch's tensor is as large as its largest canvas.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import numpy.typing as npt

from vigil.errors import ContractError

Placement = Literal["center", "top_left"]


@dataclass(frozen=True)
class Letterbox:
    """Where one source image sits inside the network input: `input = source * gain + (pad_x, pad_y)`, in a
    canvas of `canvas_w` x `canvas_h` (the model's input size, or less with `stride`)."""

    gain: float
    pad_x: int
    pad_y: int
    src_w: int
    src_h: int
    new_w: int
    new_h: int
    canvas_w: int = 0
    canvas_h: int = 0

    @classmethod
    def fit(
        cls, src_w: int, src_h: int, in_w: int, in_h: int, placement: Placement, stride: int | None = None
    ) -> Letterbox:
        """The placement in an `in_w` x `in_h` input; with `stride`, in the smallest canvas of multiples of it
        that holds the scaled image (the scale is the square input's either way)."""
        if src_w <= 0 or src_h <= 0:
            raise ContractError(f"image must have a positive size, got {src_w}x{src_h}")
        gain = min(in_w / src_w, in_h / src_h)
        if stride is not None:
            # The dim that limits the scale fills the input exactly; the other shrinks to a stride multiple,
            # so refitting into the smaller canvas keeps the same gain.
            in_w = min(in_w, -(-round(src_w * gain) // stride) * stride)
            in_h = min(in_h, -(-round(src_h * gain) // stride) * stride)
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
        return cls(gain, pad_x, pad_y, src_w, src_h, max(new_w, 1), max(new_h, 1), in_w, in_h)

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

    @property
    def canvases(self) -> tuple[tuple[int, int], ...]:
        """(H, W) each frame was fitted in, in row order (`Detector.infer` runs each at its own)."""
        return tuple((box.canvas_h, box.canvas_w) for box in self.boxes)


def _bgr_size(image: npt.NDArray[np.uint8]) -> tuple[int, int]:
    """(width, height) of a BGR image; anything else is a `ContractError` naming its shape."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ContractError(f"expected a BGR image of shape (H, W, 3), got {image.shape}")
    return image.shape[1], image.shape[0]


class LetterboxPreprocessor:
    """BGR uint8 frames -> float32 NCHW tensor in the model's colour order and scale."""

    def __init__(
        self,
        input_size: tuple[int, int],
        channel_order: Literal["rgb", "bgr"],
        scale: float,
        placement: Placement,
        pad_value: int = 114,
        rect_stride: int | None = None,
    ) -> None:
        self.in_h, self.in_w = input_size
        # Rectangular canvases (see the module doc) when set: the model's largest stride.
        self.rect_stride = rect_stride
        self.rgb = channel_order == "rgb"
        self.scale = np.float32(scale)
        self.placement: Placement = placement
        self.pad_value = pad_value
        self._pad = np.float32(pad_value) * self.scale

    def square(self) -> LetterboxPreprocessor:
        """The same preprocessing into the model's full (square) input size: what a fixed-shape graph takes."""
        order: Literal["rgb", "bgr"] = "rgb" if self.rgb else "bgr"
        return LetterboxPreprocessor((self.in_h, self.in_w), order, float(self.scale), self.placement, self.pad_value)

    def fit(self, width: int, height: int) -> Letterbox:
        """Where an image of `width` x `height` goes in the network input."""
        return Letterbox.fit(width, height, self.in_w, self.in_h, self.placement, self.rect_stride)

    def canvas(self, boxes: Iterable[Letterbox | None]) -> tuple[int, int]:
        """(H, W) of a batch tensor holding every one of `boxes`: the largest canvas (the input size if none)."""
        sized = [box for box in boxes if box is not None]
        if not sized or self.rect_stride is None:
            return self.in_h, self.in_w
        return max(box.canvas_h for box in sized), max(box.canvas_w for box in sized)

    def tensor(self, batch: int, canvas: tuple[int, int] | None = None) -> npt.NDArray[np.float32]:
        """An uninitialised (B, 3, H, W) batch tensor, H x W the `canvas` (default: the model's input size);
        `place` fills each frame's slice completely."""
        h, w = canvas or (self.in_h, self.in_w)
        return np.empty((batch, 3, h, w), np.float32)

    def place(
        self, image: npt.NDArray[np.uint8], out: npt.NDArray[np.float32], box: Letterbox | None = None
    ) -> Letterbox:
        """Letterbox `image` into `out`, one frame's (3, H, W) slice of the batch tensor, padding included.

        `box`: the placement to use, when the image is a reduced decode of a larger frame (its boxes map
        back to the frame's own pixels); default: fitted to `image` itself."""
        box = box or self.fit(*_bgr_size(image))
        if (
            out.ndim != 3
            or out.shape[0] != 3
            or out.shape[1] < box.pad_y + box.new_h
            or out.shape[2] < box.pad_x + box.new_w
            or out.shape[1] > self.in_h
            or out.shape[2] > self.in_w
        ):
            raise ContractError(
                f"expected a tensor slice of shape (3, H, W) holding a {box.new_w}x{box.new_h} image within "
                f"(3, {self.in_h}, {self.in_w}), got {out.shape}"
            )
        _bgr_size(image)
        sized: np.ndarray = image
        if (box.new_w, box.new_h) != (image.shape[1], image.shape[0]):
            sized = cv2.resize(image, (box.new_w, box.new_h), interpolation=cv2.INTER_LINEAR)
        # Memory traffic is most of this method's cost: only the border is padded (filling the whole 1.6 MB slice
        # first wrote each float twice), and the image is written once, without intermediate planes. Together:
        # 1.7-1.9 -> 0.85-0.96 CPU ms for a 640x480 frame here.
        top, bottom = box.pad_y, box.pad_y + box.new_h
        left, right = box.pad_x, box.pad_x + box.new_w
        out[:, :top].fill(self._pad)
        out[:, bottom:].fill(self._pad)
        out[:, top:bottom, :left].fill(self._pad)
        out[:, top:bottom, right:].fill(self._pad)
        # HWC uint8 -> CHW float in one strided pass.
        hwc = sized[..., ::-1] if self.rgb else sized
        chw = hwc.transpose(2, 0, 1)
        target = out[:, top:bottom, left:right]
        if self.scale == 1.0:
            np.copyto(target, chw, casting="unsafe")
        else:
            np.multiply(chw, self.scale, out=target, casting="unsafe")
        return box

    def __call__(self, images: list[npt.NDArray[np.uint8]]) -> PreparedBatch:
        boxes = [self.fit(*_bgr_size(image)) for image in images]
        tensor = self.tensor(len(images), self.canvas(boxes))
        placed = tuple(
            self.place(image, tensor[i], box) for i, (image, box) in enumerate(zip(images, boxes, strict=True))
        )
        return PreparedBatch(tensor, placed)
