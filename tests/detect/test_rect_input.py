"""Rectangular input (`detect.rect_input`): the graph edit, the letterbox, the decoders' embedding, and that the
detector keeps its recall on the shared footage while running fewer pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from detect.decoders import UltralyticsDecoder, YoloxDecoder
from detect.detector import Detector, Thresholds
from detect.preprocess import Letterbox
from models import ModelManifest, Registry
from models.onnx_shapes import free_spatial_dims
from tests.detect.helpers import SHARED, person_recall_ap50, read_frames
from vigil.errors import ModelError

YOLOX = SHARED / "models" / "yolox_nano.onnx"


def _session(model: bytes | str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def test_free_spatial_dims_frees_height_and_width_and_keeps_the_rest() -> None:
    original = YOLOX.read_bytes()
    edited = onnx.load_from_string(free_spatial_dims(original))
    onnx.checker.check_model(edited)
    before = onnx.load_from_string(original)
    dims = edited.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value or d.dim_param for d in dims] == [1, 3, "height", "width"]
    out = edited.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_value or d.dim_param for d in out] == [1, "output_dim1", "output_dim2"]
    assert len(edited.graph.value_info) == 0 < len(before.graph.value_info)  # they pinned the export size
    assert [n.SerializeToString() for n in edited.graph.node] == [n.SerializeToString() for n in before.graph.node]
    assert len(edited.graph.initializer) == len(before.graph.initializer)
    assert edited.opset_import == before.opset_import

    square = np.random.default_rng(0).uniform(0, 255, (1, 3, 416, 416)).astype(np.float32)
    freed = _session(free_spatial_dims(original))
    np.testing.assert_array_equal(
        freed.run(None, {"images": square})[0], _session(str(YOLOX)).run(None, {"images": square})[0]
    )
    assert freed.run(None, {"images": square[:, :, :320]})[0].shape == (1, 52 * 40 + 26 * 20 + 13 * 10, 85)
    with pytest.raises(Exception, match="(?i)invalid dimensions"):
        _session(str(YOLOX)).run(None, {"images": square[:, :, :320]})  # why the edit exists


@pytest.mark.parametrize("data", [b"", b"\x0f\x00", b"not an onnx graph" * 10, b"\x3a\x05\x08"])
def test_free_spatial_dims_refuses_what_is_not_a_model(data: bytes) -> None:
    with pytest.raises(ModelError):
        free_spatial_dims(data)


@pytest.mark.parametrize(
    ("src", "size", "placement", "gain", "new", "canvas", "pad"),
    [
        ((640, 480), (416, 416), "top_left", 0.65, (416, 312), (416, 320), (0, 0)),
        ((1280, 720), (640, 640), "center", 0.5, (640, 360), (640, 384), (0, 12)),
        ((810, 1080), (640, 640), "center", 640 / 1080, (480, 640), (480, 640), (0, 0)),
        ((416, 416), (416, 416), "top_left", 1.0, (416, 416), (416, 416), (0, 0)),
    ],
)
def test_rect_letterbox_keeps_the_scale_and_pads_only_to_the_stride(
    src: tuple[int, int],
    size: tuple[int, int],
    placement: str,
    gain: float,
    new: tuple[int, int],
    canvas: tuple[int, int],
    pad: tuple[int, int],
) -> None:
    square = Letterbox.fit(*src, *size, placement)  # type: ignore[arg-type]
    rect = Letterbox.fit(*src, *size, placement, stride=32)  # type: ignore[arg-type]
    assert rect.gain == pytest.approx(square.gain) == pytest.approx(gain)
    assert (rect.new_w, rect.new_h) == (square.new_w, square.new_h) == new
    assert (rect.canvas_w, rect.canvas_h) == canvas and (square.canvas_w, square.canvas_h) == size
    assert (rect.pad_x, rect.pad_y) == pad
    assert rect.canvas_w % 32 == 0 and rect.canvas_h % 32 == 0


@pytest.mark.parametrize("family", ["yolox", "ultralytics"])
def test_an_output_embedded_in_a_larger_grid_decodes_to_the_same_boxes(family: str) -> None:
    rng = np.random.default_rng(1)
    small, large = (64, 96), (96, 128)
    if family == "yolox":
        decoder: YoloxDecoder | UltralyticsDecoder = YoloxDecoder(3, large)
        output = rng.uniform(0, 0.3, (2, 8 * 12 + 4 * 6 + 2 * 3, 8)).astype(np.float32)
        output[:, ::7, 4] = 0.9  # some confident cells
        output[:, ::7, 5] = 0.8
    else:
        decoder = UltralyticsDecoder(3, large)
        output = rng.uniform(0, 0.2, (2, 7, 8 * 12 + 4 * 6 + 2 * 3)).astype(np.float32)
        output[:, :4] = rng.uniform(5, 60, (2, 4, output.shape[2]))
        output[:, 4, ::5] = 0.9
    direct = decoder(output, 0.25, small)
    embedded = decoder(decoder.embed(output, small, large), 0.25, large)
    assert len(direct.xyxy) > 5
    order_a, order_b = np.lexsort(direct.xyxy.T), np.lexsort(embedded.xyxy.T)
    np.testing.assert_allclose(embedded.xyxy[order_b], direct.xyxy[order_a], rtol=1e-6)
    np.testing.assert_array_equal(embedded.image[order_b], direct.image[order_a])
    with pytest.raises(ModelError, match="does not fit"):
        decoder.embed(output, large, small)


def test_rect_input_keeps_recall_on_the_footage_with_fewer_pixels() -> None:
    frames = read_frames(SHARED / "footage" / "TUD-Campus" / "TUD-Campus.mp4")
    manifest = Registry().get("yolox_nano")
    assert manifest.rect_input
    thresholds = Thresholds(0.01, 0.45)
    rect = Detector.load(manifest, intra_op_threads=1, thresholds=thresholds)
    square = Detector.load(manifest, intra_op_threads=1, thresholds=thresholds, rect_input=False)
    assert rect.rect and not square.rect
    assert rect.preprocess(frames[:1]).tensor.shape == (1, 3, 320, 416)  # 640x480 footage
    assert square.preprocess(frames[:1]).tensor.shape == (1, 3, 416, 416)
    rect_recall, rect_ap50 = person_recall_ap50(rect, frames, "TUD-Campus")
    square_recall, square_ap50 = person_recall_ap50(square, frames, "TUD-Campus")
    assert square_recall > 0.6  # the footage is scored at all
    assert rect_recall >= square_recall - 0.005, (rect_recall, square_recall)
    assert rect_ap50 >= square_ap50 - 0.005, (rect_ap50, square_ap50)


def test_a_manifest_claiming_rect_input_for_a_fixed_anchor_graph_is_refused(tmp_path: Path) -> None:
    # The shipped YOLOv8n export computes its anchors for 640x640 inside the graph.
    shipped = Registry().get("yolov8n_int8")
    manifest = shipped.model_copy(update={"rect_input": True, "path": str(shipped.onnx_path)})
    manifest.save(tmp_path / "yolov8n_int8.yaml")
    claimed: ModelManifest = Registry(tmp_path).get("yolov8n_int8")
    with pytest.raises(ModelError, match="rect_input: false"):
        Detector.load(claimed, intra_op_threads=1)
    assert not Detector.load(shipped, intra_op_threads=1).rect
