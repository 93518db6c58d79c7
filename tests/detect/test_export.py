"""`vigil models export` of an untrained YOLO11n built from the YAML in the ultralytics wheel (marker `export`)."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import onnx
import pytest

from detect.detector import Detector, Thresholds
from detect.worker import DetectWorker
from models import Registry, sha256_of
from tests.detect.helpers import REPO, read_frames
from vigil.config import VigilConfig
from vigil.contracts import DetectionsRecord
from vigil.kafka import ensure_topics, make_consumer, make_producer

pytestmark = pytest.mark.export


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    registry_dir = tmp_path_factory.mktemp("registry")
    result = subprocess.run(
        [sys.executable, "-m", "vigil", "models", "--models-dir", str(registry_dir), "export", "yolo11n.yaml",
         "--imgsz", "320", "--name", "yolo11n_test"],
        capture_output=True, text=True, timeout=240, cwd=REPO, env={"PATH": "/usr/bin:/bin", "YOLO_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return registry_dir


def test_export_finds_a_relative_custom_yaml(tmp_path: Path) -> None:
    """`vigil models export my.yaml` from the folder holding my.yaml: the export runs in a scratch folder, so the
    relative path must be resolved before (a bare yolo11n.yaml, as above, still means ultralytics' own)."""
    import importlib.util

    spec = importlib.util.find_spec("ultralytics")
    assert spec is not None and spec.origin, "ultralytics is not installed (pip install 'vigil[export]')"
    config = Path(spec.origin).parent / "cfg" / "models" / "11" / "yolo11.yaml"
    (tmp_path / "my_detector.yaml").write_text(config.read_text())
    result = subprocess.run(
        [sys.executable, "-m", "vigil", "models", "--models-dir", "registry", "export", "my_detector.yaml",
         "--imgsz", "320"],
        capture_output=True, text=True, timeout=240, cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "YOLO_OFFLINE": "1", "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    manifest = Registry(tmp_path / "registry").get("my_detector")
    assert manifest.onnx_path.is_file() and manifest.input_size == (320, 320) and len(manifest.class_names) == 80
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_detector.yaml", "registry"]  # nothing else written


def test_model_argument_resolves_yaml_files_and_copies_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from models.export import model_argument

    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(tmp_path)
    Path("mine.yaml").write_text("nc: 1\n")
    Path("weights.pt").write_bytes(b"checkpoint")
    assert model_argument("mine.yaml", work) == str(tmp_path / "mine.yaml")  # still valid after chdir(work)
    assert model_argument("yolo11n.yaml", work) == "yolo11n.yaml"  # not a file here: ultralytics' built-in
    assert model_argument("weights.pt", work) == str(work / "weights.pt")
    assert (work / "weights.pt").read_bytes() == b"checkpoint"


def test_export_writes_checked_model_and_manifest(exported: Path) -> None:
    manifest = Registry(exported).get("yolo11n_test")
    assert manifest.onnx_path == exported / "yolo11n_test.onnx" and manifest.onnx_path.is_file()
    onnx.checker.check_model(str(manifest.onnx_path))
    assert manifest.sha256 == sha256_of(manifest.onnx_path)
    assert manifest.family == "ultralytics" and manifest.input_size == (320, 320) and manifest.dynamic_batch
    # Names come from the ultralytics metadata in the file; a model built from a YAML is named "0".."79".
    meta = {p.key: p.value for p in onnx.load(str(manifest.onnx_path)).metadata_props}
    assert len(manifest.class_names) == 80 and repr(manifest.class_names[5]) in meta["names"]
    batch_dim = onnx.load(str(manifest.onnx_path)).graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # a symbolic (dynamic) batch axis


def test_exported_model_runs_batched_equal_to_single(exported: Path) -> None:
    detector = Detector.load(Registry(exported).get("yolo11n_test"), intra_op_threads=2, thresholds=Thresholds(0.0))
    assert detector.fixed_batch is None  # dynamic: one run for the whole batch
    frames = read_frames(count=4)
    tensor = detector.preprocess(frames).tensor
    batched = detector.infer(tensor)
    single = np.concatenate([detector.infer(tensor[i : i + 1]) for i in range(4)])
    assert batched.shape == (4, 84, 2100)
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-3)


@pytest.mark.broker
def test_exported_model_goes_through_the_worker(exported: Path, vigil_config: VigilConfig) -> None:
    import cv2

    from vigil.contracts import FrameMeta

    data = vigil_config.model_dump(mode="json")
    data["detect"].update({"model": "yolo11n_test", "models_dir": str(exported), "batch_size": 4,
                           "allow_unknown_cameras": True, "conf_threshold": 0.0, "max_detections": 5})  # fmt: skip
    config = VigilConfig.model_validate(data)
    ensure_topics(config.kafka, config.topics)
    producer = make_producer(config.kafka, "test")
    frames = read_frames(count=6)
    for index, frame in enumerate(frames):
        meta = FrameMeta("cam", index, __import__("time").time_ns(), 640, 480, "replay", frame_index=index)
        producer.send(config.topics.frames.name, key=b"cam", value=cv2.imencode(".jpg", frame)[1].tobytes(),
                      headers=meta.to_headers())  # fmt: skip
    producer.flush()
    consumer = make_consumer(config.kafka, "detect", config.detect.group_id)
    worker = DetectWorker(config, Detector.from_config(config.detect), consumer, producer)
    worker.subscribe()
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    reader = make_consumer(
        config.kafka, "test-reader", f"{config.detect.group_id}-reader", [config.topics.detections.name]
    )
    got: list[DetectionsRecord] = []
    try:
        for _ in range(120):
            for items in reader.poll(timeout_ms=500).values():
                got.extend(DetectionsRecord.from_bytes(r.value) for r in items)
            if len(got) >= len(frames):
                break
    finally:
        stop.set()
        thread.join(30)
        reader.close()
        consumer.close(autocommit=False)
        producer.close()
    assert sorted(r.frame_index for r in got) == list(range(len(frames)))  # type: ignore[type-var]
    assert all(r.model.name == "yolo11n_test" and len(r.detections) == 5 for r in got)  # conf 0: max_detections boxes
