"""The capacity levers' correctness (not their speed, which bench/ measures): session options reach ONNX
Runtime, provider/IOBinding selection, reduced JPEG decoding against full decoding on real footage, the
per-frame letterbox, still-frame planning, the new record fields, and the crc32c check."""

from __future__ import annotations

import logging
from dataclasses import replace

import cv2
import numpy as np
import pytest

from detect.detector import Detector, Thresholds
from detect.runtime import (
    PROVIDER_NAMES,
    SPIN_ENTRIES,
    RuntimeOptions,
    create_session,
    host_cores,
    make_runner,
    provider_options,
    resolve_layout,
    uses_io_binding,
    wants_fp16_graph,
)
from detect.stationary import StillFramePlanner
from models import Registry
from tests.detect.helpers import iou_matrix, read_frames
from vigil.config import StationaryConfig, VigilConfig
from vigil.config.loader import parse_config
from vigil.contracts import DetectionsRecord, FrameMeta, FrameRef, ModelRef, Timings
from vigil.detections import Detections
from vigil.errors import ConfigError
from vigil.imaging import BoundedDecoder, ImageSizeMismatchError, encode_jpeg

CUDA, TRT, CPU = PROVIDER_NAMES["cuda"], PROVIDER_NAMES["tensorrt"], PROVIDER_NAMES["cpu"]


@pytest.fixture(scope="module")
def yolox() -> Detector:
    return Detector.load(Registry().get("yolox_nano"), thresholds=Thresholds(0.25, 0.45))


# ---------------------------------------------------------------------------------------------- session options


@pytest.mark.parametrize("mode", ["never", "during_run", "always"])
def test_spin_wait_reaches_the_session_options(mode: str) -> None:
    path = Registry().get("yolox_nano").onnx_path
    session = create_session(path, options=RuntimeOptions(("cpu",), 1, mode))  # type: ignore[arg-type]
    options = session.get_session_options()
    for key, value in SPIN_ENTRIES[mode].items():  # type: ignore[index]
        assert options.get_session_config_entry(key) == value
    allowed = options.get_session_config_entry("session.intra_op.allow_spinning")
    assert allowed == ("0" if mode == "never" else "1")


def test_config_carries_runtime_options_to_the_detector(tmp_path: object) -> None:
    config = VigilConfig.model_validate({"detect": {"spin_wait": "during_run", "intra_op_threads": 1}})
    detector = Detector.from_config(config.detect)
    lanes = host_cores()  # detect.lanes 0: one per core on the CPU
    assert detector.options == RuntimeOptions(("auto",), 1, "during_run", "fp32", "auto", 0, lanes)
    assert detector.lanes == lanes
    entries = detector.session.get_session_options()
    assert entries.get_session_config_entry("session.force_spinning_stop") == "1"


def test_lanes_and_threads_share_the_cores() -> None:
    cpu = RuntimeOptions()
    assert resolve_layout(cpu, CPU, cores=8) == replace(cpu, lanes=8, intra_op_threads=1)
    assert resolve_layout(replace(cpu, lanes=2), CPU, cores=8).intra_op_threads == 4
    assert resolve_layout(replace(cpu, lanes=3), CPU, cores=2).intra_op_threads == 1  # never 0: ORT's "all cores"
    assert resolve_layout(replace(cpu, intra_op_threads=2), CPU, cores=8) == replace(cpu, lanes=8, intra_op_threads=2)
    gpu = resolve_layout(cpu, CUDA, cores=8)
    assert gpu.lanes == 1 and gpu.intra_op_threads == 0  # one batch at a time on the device


@pytest.mark.parametrize("lanes", [1, 2, 3])
def test_lanes_give_the_boxes_of_one_run(lanes: int) -> None:
    """A batch split into runs side by side (fixed batch-1 graph: YOLOX-Nano) gives the same outputs as one
    lane, in frame order."""
    config = VigilConfig.model_validate({"detect": {"lanes": lanes}})
    detector = Detector.from_config(config.detect)
    reference = Detector.from_config(VigilConfig.model_validate({"detect": {"lanes": 1}}).detect)
    rng = np.random.default_rng(lanes)
    tensor = rng.random((5, 3, *detector.manifest.input_size), np.float32)
    assert detector.lanes == lanes
    np.testing.assert_allclose(detector.infer(tensor), reference.infer(tensor), rtol=1e-4, atol=1e-3)


def test_provider_and_io_binding_selection() -> None:
    auto = RuntimeOptions()
    assert not uses_io_binding([CPU], auto) and uses_io_binding([CUDA, CPU], auto) and uses_io_binding([TRT], auto)
    assert uses_io_binding([CPU], RuntimeOptions(io_binding="always"))
    assert not uses_io_binding([CUDA], RuntimeOptions(io_binding="never"))
    fp16 = RuntimeOptions(precision="fp16", device_id=1)
    assert wants_fp16_graph([CUDA, CPU], fp16) and not wants_fp16_graph([TRT, CUDA], fp16)
    assert not wants_fp16_graph([CPU], fp16) and not wants_fp16_graph([CUDA], auto)
    assert provider_options([TRT, CUDA, CPU], fp16) == [
        {"device_id": "1", "trt_fp16_enable": "True"},
        {"device_id": "1"},
        {},
    ]


def test_io_binding_gives_the_plain_run_s_output(yolox: Detector) -> None:
    """IOBinding works on CPU too: the bound runner and session.run agree bit for bit on a real frame."""
    frame = read_frames(count=1)[0]
    tensor = yolox.preprocess([frame]).tensor
    bound = make_runner(yolox.session, RuntimeOptions(io_binding="always"))
    plain = make_runner(yolox.session, RuntimeOptions(io_binding="never"))
    assert bound is not plain
    np.testing.assert_array_equal(bound(tensor), plain(tensor))


def test_fp16_on_the_cpu_provider_is_refused_at_its_key() -> None:
    with pytest.raises(ConfigError, match=r"detect\.precision: .*fp16 runs on the cuda and tensorrt providers"):
        parse_config("detect: {precision: fp16, providers: [cpu]}\n", "c.yaml", {})


def test_fetch_wait_must_stay_below_the_request_timeout() -> None:
    with pytest.raises(ConfigError, match=r"kafka\.consumer\.fetch_max_wait_ms: .*less than request_timeout_ms"):
        parse_config("kafka: {request_timeout_ms: 2000, consumer: {fetch_max_wait_ms: 2000}}\n", "c.yaml", {})


# ---------------------------------------------------------------------------------------------- decoding


def test_reduction_only_for_frames_twice_the_letterboxed_input(yolox: Detector) -> None:
    assert yolox.reduction(640, 480) == 1  # the shared footage: 416x312 letterboxed, not 2x
    assert yolox.reduction(1280, 960) == 2
    assert yolox.reduction(1920, 1080) == 4  # 416x234 letterboxed; 480x270 still covers it
    assert yolox.reduction(7680, 4320) == 8
    yolox.reduced_decode = False
    try:
        assert yolox.reduction(1920, 1080) == 1
    finally:
        yolox.reduced_decode = True


def test_reduced_decode_checks_the_declared_size_not_the_reduced_one() -> None:
    jpeg = encode_jpeg(cv2.resize(read_frames(count=1)[0], (1280, 960)))
    decoder = BoundedDecoder(1920 * 1080, 1)
    with decoder.decoded(jpeg, expect_wh=(1280, 960), reduce=2) as image:
        assert image.shape == (480, 640, 3)
    with pytest.raises(ImageSizeMismatchError, match="image is 1280x960 but its headers declare 640x480"):
        with decoder.decoded(jpeg, expect_wh=(640, 480), reduce=2):
            pass


@pytest.mark.parametrize("size", [(1280, 960), (1920, 1080)])
def test_reduced_decode_finds_the_same_people_on_real_footage(yolox: Detector, size: tuple[int, int]) -> None:
    """Frames of TUD-Campus upscaled to an HD camera's size: decoding them at 1/2 or 1/4 in the DCT domain
    loses no person the full decode finds (IoU >= 0.7), and the boxes agree within a few pixels."""
    jpegs = [encode_jpeg(cv2.resize(f, size, interpolation=cv2.INTER_CUBIC)) for f in read_frames(count=40, step=5)]
    reduced = [d for batch in yolox.stream([jpegs[i : i + 4] for i in range(0, len(jpegs), 4)]) for d in batch]
    yolox.reduced_decode = False
    try:
        full = [d for batch in yolox.stream([jpegs[i : i + 4] for i in range(0, len(jpegs), 4)]) for d in batch]
    finally:
        yolox.reduced_decode = True
    found = missed = 0
    shifts: list[float] = []  # per matched person, the largest edge difference, px
    for a, b in zip(full, reduced, strict=True):
        sure = a[(a.confidence >= 0.5) & (a.class_id == 0)]
        if not len(sure):
            continue
        iou = iou_matrix(sure.xyxy, b.xyxy) if len(b) else np.zeros((len(sure), 1))
        best = iou.argmax(axis=1)
        for row, column in enumerate(best):
            if iou[row, column] >= 0.7:
                found += 1
                shifts.append(float(np.abs(sure.xyxy[row] - b.xyxy[column]).max()))
            else:
                missed += 1
    assert found >= 40, found  # people are there to find
    assert missed == 0, f"{missed} people lost by the reduced decode ({found} found)"
    # Measured: median 0.7 / 2.7 px, p95 2.3 / 8 px at 1280 / 1920 wide, less than a full decode of the upscaled
    # frame differs from the original 640x480 one (median 1.7 / 12 px).
    assert np.median(shifts) <= size[0] / 400, np.median(shifts)
    assert np.percentile(shifts, 95) <= size[0] / 100, np.percentile(shifts, 95)


def test_letterbox_fills_every_element_of_an_uninitialised_tensor(yolox: Detector) -> None:
    pre = yolox.preprocessor
    tensor = np.full((2, 3, pre.in_h, pre.in_w), np.nan, np.float32)
    frame = read_frames(count=1)[0]
    pre.place(frame, tensor[0])
    pre.place(cv2.resize(frame, (1280, 960))[::2, ::2], tensor[1], pre.fit(640, 480))  # a reduced decode
    assert not np.isnan(tensor).any()
    box = pre.fit(640, 480)
    assert (box.new_w, box.new_h, box.src_w) == (416, 312, 640)
    np.testing.assert_array_equal(tensor[0, :, box.new_h :, :], 114.0)  # YOLOX pads below, at 114


# ---------------------------------------------------------------------------------------------- still frames


def _meta(seq: int, t_s: float, motion: tuple[tuple[int, int, int, int], ...] | None = (), **kw: object) -> FrameMeta:
    return FrameMeta("cam", seq, int(t_s * 1e9), 640, 480, "replay", motion=motion, **kw)  # type: ignore[arg-type]


def test_still_frames_reuse_only_an_unbroken_chain() -> None:
    planner = StillFramePlanner(StationaryConfig(redetect_s=2.0))
    first = ("frames", 0, 0)
    assert not planner.reuse(_meta(0, 0.0), first)  # nothing detected yet: the model runs
    assert planner.reuse(_meta(1, 0.2), first) and planner.reuse(_meta(2, 0.4), first)
    assert not planner.reuse(_meta(3, 0.6, motion=((1, 2, 30, 40),)), first)  # motion: the model runs
    assert planner.reuse(_meta(4, 0.8), first)
    assert not planner.reuse(_meta(6, 1.0), first)  # seq 5 never came here (dropped, stale, elsewhere)
    assert planner.reuse(_meta(7, 1.2), first)
    assert not planner.reuse(_meta(8, 1.4, keepalive=True), first)  # a keep-alive asks for a fresh look
    assert not planner.reuse(_meta(9, 1.6), ("frames", 0, 1))  # the partition was reassigned meanwhile
    assert planner.reuse(_meta(10, 3.5), ("frames", 0, 1))  # 1.9 s after the last detected frame
    assert not planner.reuse(_meta(11, 3.7), ("frames", 0, 1))  # 2.1 s: redetect_s reached
    assert not planner.reuse(_meta(12, 3.9, motion=None), ("frames", 0, 1))  # no motion gating: no claim
    planner.broken("cam")
    assert not planner.reuse(_meta(13, 4.1), ("frames", 0, 1))
    off = StillFramePlanner(StationaryConfig(enabled=False))
    assert not off.reuse(_meta(0, 0.0), first) and not off.reuse(_meta(1, 0.1), first)
    assert (planner.detected, planner.reused) == (8, 5)


def test_detections_record_carries_reuse_and_the_new_timings() -> None:
    record = DetectionsRecord(
        camera_id="cam", seq=3, capture_ns=5, frame=FrameRef("f", 0, 9), model=ModelRef("m", "1"), width=640,
        height=480, detections=Detections.empty(), class_names=(),
        timings=Timings(1.0, 2.0, 3.0, 4.0, batch_wait_ms=1.5, infer_wait_ms=0.5), reused_from=FrameRef("f", 0, 7),
    )  # fmt: skip
    back = DetectionsRecord.from_bytes(record.to_bytes())
    assert back.reused_from == FrameRef("f", 0, 7) and back.timings == record.timings
    older = record.to_json()
    del older["reused_from"], older["timings_ms"]["batch_wait"], older["timings_ms"]["infer_wait"]
    import json

    parsed = DetectionsRecord.from_bytes(json.dumps(older).encode())  # records of an older worker still parse
    assert parsed.reused_from is None and parsed.timings.batch_wait_ms == 0.0


# ---------------------------------------------------------------------------------------------- kafka


def test_record_crcs_use_the_c_extension_and_a_fallback_is_warned(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import kafka.record.util as util

    import vigil.kafka as vk

    assert vk.crc32c_implementation() == "c"  # kafka-python[crc32c] is a runtime dependency
    assert vk.check_crc32c()

    # What kafka-python binds when the crc32c package is missing: its pure-Python function.
    def pure(memview: memoryview, _crc32c: object = util.crc32c_py) -> int:
        return 0

    monkeypatch.setattr(util, "calc_crc32c", pure)
    monkeypatch.setattr(vk, "_crc_checked", False)
    with caplog.at_level(logging.WARNING, logger="vigil.kafka"):
        assert not vk.check_crc32c()
        assert not vk.check_crc32c()
    warnings = [r.getMessage() for r in caplog.records if "pure Python" in r.getMessage()]
    assert len(warnings) == 1 and "pip install 'kafka-python[crc32c]'" in warnings[0]
