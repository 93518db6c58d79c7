"""Decoders: raw network output of a batch -> candidate boxes (input pixels, xyxy), scores and class ids.

One small class per output family. Each checks the output shape against what its family must produce for
the model's input size and class count, and names both shapes when they differ. Candidates of the whole batch
come back flattened with an image index, so NMS runs once per batch. A decoder is built for the model's declared
input size; a batch run at another (rectangular input, `detect.rect_input`) passes its own `input_size`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from vigil.errors import ModelError


@dataclass(frozen=True)
class Candidates:
    """Boxes above the confidence threshold, for a whole batch; `image` says which frame each belongs to."""

    xyxy: npt.NDArray[np.float32]
    confidence: npt.NDArray[np.float32]
    class_id: npt.NDArray[np.int32]
    image: npt.NDArray[np.int32]


def anchor_count(input_size: tuple[int, int], strides: tuple[int, ...]) -> int:
    h, w = input_size
    return sum((h // s) * (w // s) for s in strides)


def grid_rows(small: tuple[int, int], large: tuple[int, int], strides: tuple[int, ...]) -> npt.NDArray[np.intp]:
    """For an output made at input size `small` (H, W), the row each of its anchors has at input size `large`:
    both are per stride, row-major grids, and a cell keeps its (x, y) — the image sits at the same place."""
    rows, offset = [], 0
    for s in strides:
        (sh, sw), (lh, lw) = (small[0] // s, small[1] // s), (large[0] // s, large[1] // s)
        if sh > lh or sw > lw:
            raise ModelError(f"input {list(small)} does not fit in {list(large)}")
        ys, xs = np.meshgrid(np.arange(sh), np.arange(sw), indexing="ij")
        rows.append(offset + ys.ravel() * lw + xs.ravel())
        offset += lh * lw
    return np.concatenate(rows).astype(np.intp)


def _cxcywh_to_xyxy(boxes: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    half = boxes[:, 2:4] / 2
    return np.concatenate([boxes[:, :2] - half, boxes[:, :2] + half], axis=1).astype(np.float32)


class Decoder(Protocol):
    family: str

    def expected_shape(self, input_size: tuple[int, int] | None = None) -> str: ...
    def accepts(self, shape: tuple[int | str | None, ...], input_size: tuple[int, int] | None = None) -> bool: ...
    def __call__(
        self, output: npt.NDArray[np.float32], conf_threshold: float, input_size: tuple[int, int] | None = None
    ) -> Candidates: ...
    def embed(
        self, output: npt.NDArray[np.float32], small: tuple[int, int], large: tuple[int, int]
    ) -> npt.NDArray[np.float32]: ...


class UltralyticsDecoder:
    """Ultralytics detect head: `[B, 4 + C, N]`, rows `cx, cy, w, h` (input pixels) then C class scores."""

    family = "ultralytics"

    def __init__(self, num_classes: int, input_size: tuple[int, int], strides: tuple[int, ...] = (8, 16, 32)) -> None:
        self.num_classes = num_classes
        self.input_size = input_size
        self.strides = strides

    @property
    def anchors(self) -> int:
        """Output rows at the declared input size."""
        return anchor_count(self.input_size, self.strides)

    def expected_shape(self, input_size: tuple[int, int] | None = None) -> str:
        anchors = anchor_count(input_size or self.input_size, self.strides)
        return f"[B, {4 + self.num_classes}, {anchors}] (cx,cy,w,h + {self.num_classes} class scores per anchor)"

    def accepts(self, shape: tuple[int | str | None, ...], input_size: tuple[int, int] | None = None) -> bool:
        anchors = anchor_count(input_size or self.input_size, self.strides)
        return len(shape) == 3 and shape[1] == 4 + self.num_classes and shape[2] == anchors

    def __call__(
        self, output: npt.NDArray[np.float32], conf_threshold: float, input_size: tuple[int, int] | None = None
    ) -> Candidates:
        if output.ndim != 3 or not self.accepts(output.shape, input_size):
            raise ModelError(
                f"UltralyticsDecoder expected output shape {self.expected_shape(input_size)}, got {list(output.shape)}"
            )
        scores_all = output[:, 4:, :]  # (B, C, N)
        best = scores_all.max(axis=1)  # (B, N)
        image, anchor = np.nonzero(best > conf_threshold)
        # The class of the few candidates only (argmax over every anchor costs as much as the max itself).
        class_id = scores_all[image, :, anchor].argmax(axis=1)
        boxes = output[image, :4, anchor]  # (K, 4) cx, cy, w, h
        return Candidates(
            xyxy=_cxcywh_to_xyxy(boxes),
            confidence=best[image, anchor].astype(np.float32),
            class_id=class_id.astype(np.int32),
            image=image.astype(np.int32),
        )

    def embed(
        self, output: npt.NDArray[np.float32], small: tuple[int, int], large: tuple[int, int]
    ) -> npt.NDArray[np.float32]:
        """An output made at input size `small` as the output at `large` would hold it: the cells outside the
        smaller input score 0 (boxes are in input pixels, which both sizes share from the top-left)."""
        rows = grid_rows(small, large, self.strides)
        out = np.zeros((output.shape[0], output.shape[1], anchor_count(large, self.strides)), np.float32)
        out[:, :, rows] = output
        return out


class YoloxDecoder:
    """YOLOX head with sigmoids applied: `[B, N, 5 + C]`, per grid cell `dx, dy, log w, log h, obj, C scores`."""

    family = "yolox"

    def __init__(self, num_classes: int, input_size: tuple[int, int], strides: tuple[int, ...] = (8, 16, 32)) -> None:
        self.num_classes = num_classes
        self.input_size = input_size
        self.strides = strides
        # (grid (N, 2), stride (N, 1)) per input size met: the declared one and a camera's rectangular canvas.
        self._grids: dict[tuple[int, int], tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]] = {}

    @property
    def anchors(self) -> int:
        """Output rows at the declared input size."""
        return anchor_count(self.input_size, self.strides)

    def grid(self, input_size: tuple[int, int]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Each output row's grid cell (x, y) and stride for an input of `input_size` (H, W)."""
        if (cached := self._grids.get(input_size)) is not None:
            return cached
        h, w = input_size
        grids, cell = [], []
        for s in self.strides:
            ys, xs = np.meshgrid(np.arange(h // s), np.arange(w // s), indexing="ij")  # row-major like YOLOX
            grids.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
            cell.append(np.full(((h // s) * (w // s), 1), s))
        made = np.concatenate(grids).astype(np.float32), np.concatenate(cell).astype(np.float32)
        self._grids[input_size] = made
        return made

    def expected_shape(self, input_size: tuple[int, int] | None = None) -> str:
        anchors = anchor_count(input_size or self.input_size, self.strides)
        return f"[B, {anchors}, {5 + self.num_classes}] (dx,dy,log w,log h,obj + {self.num_classes} class scores)"

    def accepts(self, shape: tuple[int | str | None, ...], input_size: tuple[int, int] | None = None) -> bool:
        anchors = anchor_count(input_size or self.input_size, self.strides)
        return len(shape) == 3 and shape[1] == anchors and shape[2] == 5 + self.num_classes

    def __call__(
        self, output: npt.NDArray[np.float32], conf_threshold: float, input_size: tuple[int, int] | None = None
    ) -> Candidates:
        if output.ndim != 3 or not self.accepts(output.shape, input_size):
            raise ModelError(
                f"YoloxDecoder expected output shape {self.expected_shape(input_size)}, got {list(output.shape)}"
            )
        grid, strides = self.grid(input_size or self.input_size)
        # score = objectness x class score, both sigmoids, so it never exceeds the objectness: the anchors whose
        # objectness passes the threshold are the only candidates (a few dozen of 3549), exactly.
        image, anchor = np.nonzero(output[:, :, 4] > conf_threshold)
        rows = output[image, anchor]  # (K, 5 + C)
        class_id = rows[:, 5:].argmax(axis=1)
        confidence = rows[np.arange(len(rows)), 5 + class_id] * rows[:, 4]
        passed = confidence > conf_threshold
        image, anchor, rows, class_id, confidence = (
            image[passed],
            anchor[passed],
            rows[passed],
            class_id[passed],
            confidence[passed],
        )
        raw = rows[:, :4]
        stride = strides[anchor]
        centre = (raw[:, :2] + grid[anchor]) * stride
        size = np.exp(raw[:, 2:4]) * stride
        return Candidates(
            xyxy=_cxcywh_to_xyxy(np.concatenate([centre, size], axis=1)),
            confidence=confidence.astype(np.float32),
            class_id=class_id.astype(np.int32),
            image=image.astype(np.int32),
        )

    def embed(
        self, output: npt.NDArray[np.float32], small: tuple[int, int], large: tuple[int, int]
    ) -> npt.NDArray[np.float32]:
        """An output made at input size `small` as the output at `large` would hold it: the cells outside the
        smaller input have objectness 0, and each cell keeps its grid position, so decoding is unchanged."""
        rows = grid_rows(small, large, self.strides)
        out = np.zeros((output.shape[0], anchor_count(large, self.strides), output.shape[2]), np.float32)
        out[:, rows, :] = output
        return out


FAMILIES: dict[str, type[UltralyticsDecoder] | type[YoloxDecoder]] = {
    "ultralytics": UltralyticsDecoder,
    "yolox": YoloxDecoder,
}


def identify_family(
    shape: tuple[int | str | None, ...], num_classes: int, input_size: tuple[int, int], strides: tuple[int, ...]
) -> str | None:
    """The family whose layout `shape` matches, or None."""
    for name, cls in FAMILIES.items():
        if cls(num_classes, input_size, strides).accepts(shape):
            return name
    return None


def make_decoder(
    family: str,
    output_shape: tuple[int | str | None, ...],
    num_classes: int,
    input_size: tuple[int, int],
    strides: tuple[int, ...] = (8, 16, 32),
    model: str = "model",
) -> UltralyticsDecoder | YoloxDecoder:
    """The decoder for `family`, after checking the model's declared output shape fits it.

    Refuses, at start rather than on the first frame, a model whose output matches no known family, or a
    different family than its manifest says."""
    if family not in FAMILIES:
        raise ModelError(f"{model}: unknown family {family!r}; known: {', '.join(FAMILIES)}")
    decoder = FAMILIES[family](num_classes, input_size, strides)
    if decoder.accepts(output_shape):
        return decoder
    actual = identify_family(output_shape, num_classes, input_size, strides)
    expected = "; ".join(f"{n}: {c(num_classes, input_size, strides).expected_shape()}" for n, c in FAMILIES.items())
    if actual is not None:
        raise ModelError(
            f"{model}: output shape {list(output_shape)} is the {actual} layout but the manifest says family "
            f"{family!r}; set family: {actual} in the manifest"
        )
    raise ModelError(
        f"{model}: output shape {list(output_shape)} matches no known detector family for input "
        f"{list(input_size)} and {num_classes} classes; expected {expected}. Check the manifest's input_size and "
        "class_names, or export the model with `vigil models export`"
    )
