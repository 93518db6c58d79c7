"""Pure logic of the detect stage: letterbox, decoders, NMS, model loading errors, providers, triage."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from detect.decoders import UltralyticsDecoder, YoloxDecoder, identify_family, make_decoder
from detect.detector import Detector, Thresholds
from detect.nms import batched_nms, nms
from detect.preprocess import Letterbox, LetterboxPreprocessor
from detect.runtime import choose_providers, create_session
from detect.triage import FrameGate, Rejection
from models import ModelManifest, Registry
from tests.detect.helpers import REPO, SHARED, bomb_jpeg, ultralytics_assets
from vigil.config import VigilConfig
from vigil.contracts import FrameMeta, StubRecord
from vigil.errors import ModelError

# ---------------------------------------------------------------------------------------------- letterbox


@pytest.mark.parametrize("placement", ["center", "top_left"])
@pytest.mark.parametrize(("w", "h"), [(640, 480), (810, 1080), (1920, 1080), (300, 300)])
def test_letterbox_round_trip(placement: str, w: int, h: int) -> None:
    box = Letterbox.fit(w, h, 640, 640, placement)  # type: ignore[arg-type]
    source = np.array([[10.5, 20.25, w - 30.0, h - 1.0], [0, 0, w, h]], np.float32)
    back = box.to_source(box.to_input(source))
    np.testing.assert_allclose(back, source, atol=1e-3)
    placed = box.to_input(np.array([[0, 0, w, h]], np.float32))[0]
    assert placed[0] >= 0 and placed[1] >= 0 and placed[2] <= 640 + 0.5 and placed[3] <= 640 + 0.5
    if placement == "top_left":
        assert box.pad_x == 0 and box.pad_y == 0
    else:  # centred: the padding on both sides differs by at most a pixel
        assert abs((640 - box.new_w) - 2 * box.pad_x) <= 1 and abs((640 - box.new_h) - 2 * box.pad_y) <= 1


def test_letterbox_clips_to_image() -> None:
    box = Letterbox.fit(640, 480, 640, 640, "center")
    out = box.to_source(np.array([[-50, -50, 700, 700]], np.float32))
    np.testing.assert_array_equal(out, [[0, 0, 640, 480]])


def test_preprocessor_layout_colour_and_padding() -> None:
    image = np.zeros((100, 200, 3), np.uint8)
    image[..., 0] = 255  # pure blue in BGR
    rgb = LetterboxPreprocessor((64, 64), "rgb", 1 / 255, "center")([image, image])
    assert rgb.tensor.shape == (2, 3, 64, 64) and rgb.tensor.dtype == np.float32 and rgb.tensor.flags.c_contiguous
    box = rgb.boxes[0]
    assert (box.new_w, box.new_h, box.pad_y) == (64, 32, 16)
    centre = rgb.tensor[0, :, 32, 32]
    np.testing.assert_allclose(centre, [0.0, 0.0, 1.0], atol=1e-6)  # blue lands in the B plane, last in RGB
    np.testing.assert_allclose(rgb.tensor[0, :, 0, 32], [114 / 255] * 3, atol=1e-6)  # pad row
    bgr = LetterboxPreprocessor((64, 64), "bgr", 1.0, "top_left")([image])
    np.testing.assert_allclose(bgr.tensor[0, :, 10, 10], [255.0, 0.0, 0.0])
    np.testing.assert_allclose(bgr.tensor[0, :, 60, 10], [114.0] * 3)  # padding below, image at the top


@pytest.mark.parametrize("placement", ["center", "top_left"])
@pytest.mark.parametrize(("order", "scale"), [("rgb", 1 / 255), ("bgr", 1.0)])
def test_place_writes_every_value_of_a_slice_larger_than_its_canvas(placement: str, order: str, scale: float) -> None:
    """`place` fills only the border with padding and writes the image once: the slice must equal the plain
    reference (pad everything, then copy each channel) everywhere, also where a taller frame of the same batch
    made the slice larger than this frame's canvas, and whatever the buffer held before."""
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (90, 160, 3), np.uint8)
    pre = LetterboxPreprocessor((128, 128), order, scale, placement, rect_stride=32)  # type: ignore[arg-type]
    box = pre.fit(160, 90)
    out = np.full((3, 128, 128), np.nan, np.float32)  # taller than this frame's canvas, and dirty
    assert (box.canvas_h, box.canvas_w) != out.shape[1:]
    assert pre.place(image, out, box) == box
    sized = cv2.resize(image, (box.new_w, box.new_h), interpolation=cv2.INTER_LINEAR).astype(np.float32) * np.float32(
        scale
    )
    if order == "rgb":
        sized = sized[..., ::-1]
    expected = np.full((3, 128, 128), np.float32(114) * np.float32(scale), np.float32)
    expected[:, box.pad_y : box.pad_y + box.new_h, box.pad_x : box.pad_x + box.new_w] = sized.transpose(2, 0, 1)
    np.testing.assert_array_equal(out, expected)


def test_detect_keeps_no_decoder_of_its_own() -> None:
    """Every decode of untrusted bytes in detect goes through vigil.imaging (bounded, probed first)."""
    offenders = [
        str(path.relative_to(REPO))
        for path in sorted((REPO / "detect").glob("*.py"))
        if "imdecode" in path.read_text(encoding="utf-8") or "def decode_jpeg" in path.read_text(encoding="utf-8")
    ]
    assert not offenders, offenders


# ---------------------------------------------------------------------------------------------- decoders


def test_ultralytics_decoder_known_box() -> None:
    decoder = UltralyticsDecoder(num_classes=3, input_size=(64, 64))
    assert decoder.anchors == 64 + 16 + 4
    out = np.zeros((2, 7, decoder.anchors), np.float32)
    out[1, :4, 10] = [32, 20, 10, 8]  # cx, cy, w, h in image 1
    out[1, 4 + 2, 10] = 0.8
    out[0, 4 + 0, 5] = 0.1  # below threshold
    cand = decoder(out, 0.25)
    np.testing.assert_allclose(cand.xyxy, [[27, 16, 37, 24]])
    assert cand.class_id.tolist() == [2] and cand.image.tolist() == [1]
    np.testing.assert_allclose(cand.confidence, [0.8])


def test_yolox_decoder_known_box() -> None:
    decoder = YoloxDecoder(num_classes=2, input_size=(64, 96))
    grid = (8 * 12) + (4 * 6) + (2 * 3)
    assert decoder.anchors == grid
    out = np.zeros((1, grid, 7), np.float32)
    # stride 16 cell at column x=2, row y=1: index 96 (all stride-8 cells) + 1*6 + 2
    index = 96 + 1 * 6 + 2
    out[0, index, :4] = [0.5, 0.25, np.log(2.0), 0.0]
    out[0, index, 4] = 0.9  # objectness
    out[0, index, 5 + 1] = 0.5
    cand = decoder(out, 0.25)
    cx, cy, w, h = (2 + 0.5) * 16, (1 + 0.25) * 16, 32.0, 16.0
    np.testing.assert_allclose(cand.xyxy, [[cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]], rtol=1e-6)
    np.testing.assert_allclose(cand.confidence, [0.45], rtol=1e-6)
    assert cand.class_id.tolist() == [1]


def test_decoders_name_expected_and_actual_shape() -> None:
    with pytest.raises(ModelError, match=r"expected output shape \[B, 84, 8400\].*got \[1, 85, 8400\]"):
        UltralyticsDecoder(80, (640, 640))(np.zeros((1, 85, 8400), np.float32), 0.25)
    with pytest.raises(ModelError, match=r"expected output shape \[B, 3549, 85\].*got \[1, 3549, 84\]"):
        YoloxDecoder(80, (416, 416))(np.zeros((1, 3549, 84), np.float32), 0.25)


def test_unknown_family_is_refused_with_expectations() -> None:
    assert identify_family((1, 84, 8400), 80, (640, 640), (8, 16, 32)) == "ultralytics"
    assert identify_family((1, 3549, 85), 80, (416, 416), (8, 16, 32)) == "yolox"
    with pytest.raises(ModelError, match=r"matches no known detector family.*ultralytics: \[B, 84, 8400\]"):
        make_decoder("ultralytics", (1, 300, 6), 80, (640, 640))
    with pytest.raises(ModelError, match="set family: yolox"):
        make_decoder("ultralytics", (1, 3549, 85), 80, (416, 416))


# ---------------------------------------------------------------------------------------------- NMS


def test_nms_suppresses_same_class_only() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    classes = np.array([0, 0, 1, 0])
    keep = batched_nms(boxes, scores, classes, 0.5)
    assert keep.tolist() == [0, 2, 3]  # box 1 suppressed by 0; box 2 (other class) survives
    assert nms(boxes, scores, 0.5).tolist() == [0, 3]  # class-agnostic drops box 2 too
    assert batched_nms(boxes[:0], scores[:0], classes[:0], 0.5).size == 0


def test_nms_iou_threshold_is_exclusive() -> None:
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 5]], np.float32)  # IoU exactly 0.5
    scores = np.array([0.9, 0.8], np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert nms(boxes, scores, 0.49).tolist() == [0]


# ---------------------------------------------------------------------------------------------- registry


def test_registry_lists_and_resolves_builtin_models() -> None:
    registry = Registry()
    assert {"yolox_nano", "yolov8n_int8"} <= set(registry.names())
    m = registry.get("yolov8n_int8")
    assert (
        m.family == "ultralytics"
        and m.channel_order == "rgb"
        and m.onnx_path.resolve() == (SHARED / "models/yolov8n_int8.onnx").resolve()
    )
    assert registry.resolve(str(m.onnx_path)).name == "yolov8n_int8"
    with pytest.raises(ModelError, match="no model named 'nope'.*known: .*yolox_nano"):
        registry.get("nope")


def test_manifest_refuses_unknown_keys(tmp_path: Path) -> None:
    text = (REPO / "models" / "yolox_nano.yaml").read_text() + "colour: blue\n"
    (tmp_path / "yolox_nano.yaml").write_text(text)
    with pytest.raises(ModelError, match="colour: Extra inputs are not permitted"):
        Registry(tmp_path).get("yolox_nano")


def _copy_manifest(tmp_path: Path, name: str, onnx: Path, **changes: object) -> ModelManifest:
    manifest = Registry().get(name).model_copy(update={"path": str(onnx), **changes})
    manifest.save(tmp_path / f"{name}.yaml")
    return Registry(tmp_path).get(name)


def test_from_config_finds_builtin_models_from_any_working_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker, predict, serve, eval and the pipeline benchmark all load through Detector.from_config: the
    # default detect.models_dir (relative `models`) must not depend on being started from the repository.
    monkeypatch.chdir(tmp_path)
    config = VigilConfig.model_validate({"detect": {"model": "yolox_nano", "conf_threshold": 0.3}}).detect
    assert config.models_dir == "models" and not (tmp_path / "models").exists()
    detector = Detector.from_config(config)
    assert detector.manifest.name == "yolox_nano" and detector.thresholds.conf == 0.3
    overridden = Detector.from_config(config, "yolox_nano", conf=0.6, iou=0.5)
    assert (overridden.thresholds.conf, overridden.thresholds.iou) == (0.6, 0.5)
    # An explicit folder is taken as given, with no fallback.
    with pytest.raises(ModelError, match="registry folder elsewhere does not exist"):
        Detector.from_config(config.model_copy(update={"models_dir": "elsewhere"}))


def test_missing_file_is_a_model_error_with_the_fix(tmp_path: Path) -> None:
    manifest = _copy_manifest(tmp_path, "yolox_nano", tmp_path / "absent.onnx")
    with pytest.raises(ModelError, match=r"absent.onnx is missing; lay the shared data"):
        Detector.load(manifest)
    with pytest.raises(ModelError, match="does not exist"):
        create_session(tmp_path / "absent.onnx")


def test_corrupt_file_is_a_model_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not an onnx graph" * 100)
    manifest = _copy_manifest(tmp_path, "yolox_nano", bad)
    with pytest.raises(ModelError, match="sha256 .* the file is corrupt or replaced"):
        Detector.load(manifest)
    with pytest.raises(ModelError, match="corrupt or not ONNX"):
        Detector.load(manifest, verify_hash=False)


def test_model_with_wrong_family_is_refused_at_load(tmp_path: Path) -> None:
    manifest = _copy_manifest(
        tmp_path, "yolox_nano", SHARED / "models/yolox_nano.onnx", family="ultralytics", manifest_dir=None
    )
    with pytest.raises(ModelError, match="is the yolox layout but the manifest says family 'ultralytics'"):
        Detector.load(manifest)


# ---------------------------------------------------------------------------------------------- providers


def test_auto_picks_cpu_when_only_cpu_is_available() -> None:
    assert choose_providers(["auto"], ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    gpu = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(["auto"], list(reversed(gpu))) == gpu


def test_unavailable_provider_falls_back_with_warning_or_fails(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        assert choose_providers(["cuda", "cpu"], ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert "cuda is not available" in caplog.text
    with pytest.raises(ModelError, match=r"none of the execution providers \['cuda'\].*onnxruntime-gpu"):
        choose_providers(["cuda"], ["CPUExecutionProvider", "AzureExecutionProvider"])


def test_chosen_provider_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="detect.runtime"):
        detector = Detector.load(Registry().get("yolox_nano"), providers=["auto"], intra_op_threads=1)
    assert detector.provider == "CPUExecutionProvider"
    assert "runs on CPUExecutionProvider" in caplog.text


# ---------------------------------------------------------------------------------------------- detector


@pytest.fixture(scope="module")
def yolox() -> Detector:
    return Detector.load(Registry().get("yolox_nano"), intra_op_threads=2, thresholds=Thresholds(0.25, 0.45))


def test_yolox_finds_bus_and_persons(yolox: Detector) -> None:
    image = cv2.imread(str(ultralytics_assets() / "bus.jpg"))
    (dets,) = yolox([image])
    names = yolox.names_of(dets)
    assert names.count("bus") == 1 and names.count("person") >= 3
    bus = dets.xyxy[names.index("bus")]
    assert bus[2] - bus[0] > 600 and float(dets.confidence[names.index("bus")]) > 0.8
    assert np.all(dets.xyxy[:, [0, 2]] <= image.shape[1]) and np.all(dets.xyxy >= 0)


def test_fixed_batch_model_loops_and_keeps_frames_apart(yolox: Detector) -> None:
    assert yolox.fixed_batch == 1
    bus = cv2.imread(str(ultralytics_assets() / "bus.jpg"))
    zidane = cv2.imread(str(ultralytics_assets() / "zidane.jpg"))
    batched = yolox([bus, zidane, bus])
    singles = [yolox([image])[0] for image in (bus, zidane, bus)]
    for got, want in zip(batched, singles, strict=True):
        np.testing.assert_allclose(got.xyxy, want.xyxy, atol=1e-3)
        np.testing.assert_array_equal(got.class_id, want.class_id)
    assert 5 in batched[0].class_id and 5 not in batched[1].class_id  # bus (5) only in bus.jpg


# ---------------------------------------------------------------------------------------------- triage


def _record(value: bytes | None, meta: FrameMeta | None, offset: int = 0) -> StubRecord:
    return StubRecord("frames", 0, offset, b"cam", value, tuple(meta.to_headers()) if meta else ())


def test_frame_gate_reasons() -> None:
    config = VigilConfig.model_validate(
        {
            "cameras": [{"id": "known", "url": "footage.mp4", "kind": "replay"}],
            "detect": {"max_frame_bytes": 2048, "max_age_s": 5},
        }
    )
    gate = FrameGate(config)
    known = FrameMeta("known", 1, time.time_ns(), 64, 48, "replay")
    stranger = FrameMeta("cam", 1, time.time_ns(), 64, 48, "replay")
    verdicts = {
        "headers": gate.check(_record(b"x", None)),
        "oversized": gate.check(_record(b"x" * 4096, known)),
        "unknown_camera": gate.check(_record(b"x" * 100, stranger)),
        "empty": gate.check(_record(b"", known)),
        "oversized_image": gate.check(_record(b"x" * 100, FrameMeta("known", 1, time.time_ns(), 9000, 4000, "replay"))),
    }
    for kind, verdict in verdicts.items():
        assert isinstance(verdict, Rejection) and verdict.kind == kind, (kind, verdict)
    assert "missing header 'vigil-schema'" in verdicts["headers"].reason  # type: ignore[union-attr]
    assert "'cam'" in verdicts["unknown_camera"].reason  # type: ignore[union-attr]
    assert verdicts["oversized_image"].reason.startswith(  # type: ignore[union-attr]
        "oversized_image: headers declare 9000x4000 = 36.0 MP, over detect.max_pixels=33177600"
    )
    assert gate.check(_record(b"x" * 100, known)) == known
    permissive = config.model_copy(update={"detect": config.detect.model_copy(update={"allow_unknown_cameras": True})})
    assert FrameGate(permissive).check(_record(b"x" * 100, stranger)) == stranger
    assert not gate.is_stale(known, known.capture_ns + 4_000_000_000)
    assert gate.is_stale(known, known.capture_ns + 6_000_000_000)


# ---------------------------------------------------------------------------------------------- predict CLI


def test_predict_cli_prints_json_per_image() -> None:
    assets = ultralytics_assets()
    result = subprocess.run(
        [sys.executable, "-m", "vigil", "predict", str(assets / "bus.jpg"), str(assets / "zidane.jpg"),
         "--model", "yolox_nano", "--json"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [Path(o["image"]).name for o in lines] == ["bus.jpg", "zidane.jpg"]
    bus = lines[0]
    assert (bus["width"], bus["height"]) == (810, 1080)
    assert "bus" in bus["class_names"] and bus["class_names"].count("person") >= 3
    assert len(bus["boxes"]) == len(bus["scores"]) == len(bus["class_names"])
    assert lines[1]["class_names"].count("person") >= 2


def test_predict_refuses_a_bomb_without_decoding_it(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.jpg"
    bomb.write_bytes(bomb_jpeg(30000, 30000))
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "vigil", "predict", str(bomb), str(ultralytics_assets() / "bus.jpg"),
         "--model", "yolox_nano", "--json"],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert f"{bomb}: image declares 30000x30000 = 900.0 MP, over detect.max_pixels" in result.stderr
    assert [Path(json.loads(line)["image"]).name for line in result.stdout.splitlines()] == ["bus.jpg"]
    # Decoding it took 40 s and 5 GB before; loading the model is all that is left.
    assert time.monotonic() - started < 60


def test_batches_take_partitions_fairly_and_keep_the_rest_in_order() -> None:
    from detect.worker import _take_fairly
    from vigil.contracts import StubRecord

    busy = [(StubRecord("frames", 0, offset, b"a", b""), 0) for offset in range(10, 20)]
    quiet = [(StubRecord("frames", 1, offset, b"b", b""), 0) for offset in (5, 6)]
    taken, rest = _take_fairly(busy + quiet, 4)
    assert [(r.partition, r.offset) for r, _ in taken] == [(0, 10), (0, 11), (1, 5), (1, 6)]
    assert [(r.partition, r.offset) for r, _ in rest] == [(0, o) for o in range(12, 20)]
    taken, rest = _take_fairly(rest, 4)
    assert [r.offset for r, _ in taken] == [12, 13, 14, 15] and len(rest) == 4
