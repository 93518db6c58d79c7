"""Labels as people have them (COCO by file name, YOLO folders, CVAT MOT), placed on the frames of
an unpadded image folder made from a shared clip, scored with the real model in-process (no broker):
the AP must be the MOT-scored AP, and labels that do not line up must be refused, loudly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.eval.labelsets import write_coco, write_frames, write_yolo
from vigil.coco import COCO_CLASSES
from vigil.config import VigilConfig
from vigil.detections import Detections
from vigil.eval.alignment import check_alignment
from vigil.eval.groundtruth import GroundTruth, load_coco, load_mot, map_classes, mot_to_coco
from vigil.eval.labels_match import FrameNames, GroundTruthError, LabelMismatchError, Recording, name_number
from vigil.eval.labels_yolo import load_yolo
from vigil.eval.run import bare_predictions, describe_recording, load_ground_truth, subset
from vigil.eval.scoring import score_detections

REPO = Path(__file__).resolve().parents[2]


def mot(shared: Path, clip: str) -> Path:
    return shared / "footage" / clip / "gt.txt"


@pytest.fixture(scope="module")
def config() -> VigilConfig:
    data = yaml.safe_load((REPO / "examples" / "eval.yaml").read_text())
    data["detect"]["models_dir"] = str(REPO / "models")
    return VigilConfig.model_validate(data)


@pytest.fixture(scope="module")
def campus(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TUD-Campus as the folder `1.jpg … 71.jpg` (plain string order would replay 1, 10, 11, ...)."""
    folder = tmp_path_factory.mktemp("campus") / "frames"
    write_frames(shared_data / "footage" / "TUD-Campus" / "TUD-Campus.mp4", folder)
    return folder


@pytest.fixture(scope="module")
def campus_mot(shared_data: Path) -> GroundTruth:
    return load_mot(mot(shared_data, "TUD-Campus"))


@pytest.fixture(scope="module")
def campus_bare(config: VigilConfig, campus: Path, campus_mot: GroundTruth) -> dict[int, Detections]:
    """yolox_nano on every frame of the folder, as `vigil eval` runs the bare model (MOT numbering)."""
    predictions, _ = bare_predictions(config, None, 0.01, campus, set(range(71)), campus_mot)
    return predictions


def ap50(gt: GroundTruth, predictions: dict[int, Detections]) -> float:
    return score_detections(gt, predictions, COCO_CLASSES, 0.3).overall.ap50


def test_coco_by_file_name_over_an_unpadded_folder_scores_like_mot(
    campus: Path, campus_mot: GroundTruth, campus_bare: dict[int, Detections], tmp_path: Path
) -> None:
    coco = write_coco(campus_mot, tmp_path / "campus.json", lambda n: f"frames/{n}.jpg")  # a path prefix, as exports
    images = json.loads(coco.read_text())["images"]
    assert [i["id"] for i in images[:5]] != [1, 2, 3, 4, 5] and "frame_index" not in images[0]
    gt = load_ground_truth(str(coco), None, campus, None, COCO_CLASSES)
    assert gt.matching is not None
    assert (gt.matching.labelled, gt.matching.matched, gt.matching.frames) == (71, 71, 71)
    assert gt.matching.rule == "COCO file_name against the folder's image names"
    assert gt.frame_numbers == campus_mot.frame_numbers and gt.box_count == 359
    reference = ap50(campus_mot, campus_bare)
    assert reference > 0.5  # yolox_nano finds these pedestrians: a real answer to compare with
    assert abs(ap50(gt, campus_bare) - reference) <= 0.005, (ap50(gt, campus_bare), reference)
    # The ids are not the frames: taken as frame numbers (what vigil did before), the AP collapses.
    data = json.loads(coco.read_text())
    for image in data["images"]:
        image["file_name"] = "frame.jpg"
    (tmp_path / "by-id.json").write_text(json.dumps(data))
    by_id = load_coco(tmp_path / "by-id.json")
    assert by_id.matching is not None and by_id.matching.rule == "image id (1-based)"
    assert ap50(by_id, campus_bare) < 0.3


def test_yolo_labels_score_like_mot(
    campus: Path, campus_mot: GroundTruth, campus_bare: dict[int, Detections], tmp_path: Path
) -> None:
    root = write_yolo(campus_mot, tmp_path / "yolo")
    gt = load_ground_truth(str(root), "yolo", campus, None, COCO_CLASSES)
    assert gt.matching is not None and (gt.matching.matched, gt.matching.labelled) == (71, 71)
    assert gt.matching.rule == "YOLO label file name against the folder's image names"
    assert not gt.matching.identities  # YOLO has no track ids: the report says alerts are not meaningful
    np.testing.assert_allclose(gt.boxes(1).xyxy, campus_mot.boxes(1).xyxy, atol=0.01)
    assert abs(ap50(gt, campus_bare) - ap50(campus_mot, campus_bare)) <= 0.005
    # classes.txt instead of data.yaml, and the format found from the path (a folder is YOLO).
    other = write_yolo(campus_mot, tmp_path / "yolo-txt", names_file="classes.txt")
    assert load_ground_truth(str(other), None, campus, None, COCO_CLASSES).box_count == 359


def test_shifted_labels_are_refused_with_the_counts(
    campus: Path, campus_mot: GroundTruth, campus_bare: dict[int, Detections], tmp_path: Path
) -> None:
    # Every label named two frames late: 69 of the 71 still find an image, so only the time check sees it.
    coco = write_coco(campus_mot, tmp_path / "late.json", lambda n: f"{n + 2}.jpg")
    gt = load_ground_truth(str(coco), None, campus, None, COCO_CLASSES)
    assert gt.matching is not None and (gt.matching.matched, gt.matching.labelled) == (69, 71)
    with pytest.raises(LabelMismatchError, match=r"peaks at -2.*69 of 71 labelled images.*--gt-offset -2") as caught:
        check_alignment(gt, campus_bare, COCO_CLASSES, "bare model")
    alignment = caught.value.matching.alignment
    assert alignment is not None and alignment["best_offset"] == -2 and alignment["shifted"]
    # The offset the error names fixes it: the labels line up and score like MOT on the same frames.
    fixed = load_ground_truth(str(coco), None, campus, -2, COCO_CLASSES)
    assert check_alignment(fixed, campus_bare, COCO_CLASSES, "bare model")[0].startswith("Labels line up")
    assert fixed.frame_numbers == list(range(1, 70))
    same_frames = subset(campus_mot, fixed.frame_numbers)
    assert abs(ap50(fixed, campus_bare) - ap50(same_frames, campus_bare)) <= 0.005
    # An offset given by the user is their decision: a remaining shift only warns.
    given = load_ground_truth(str(coco), None, campus, 0, COCO_CLASSES)
    assert check_alignment(given, campus_bare, COCO_CLASSES, "bare model")[0].startswith(
        "Warning: the labels look shifted"
    )


def test_time_check_is_skipped_when_frames_are_sampled(
    campus: Path, campus_mot: GroundTruth, campus_bare: dict[int, Detections]
) -> None:
    gt = load_ground_truth(campus_mot.source, None, campus, None, COCO_CLASSES)
    every_fifth = {n: d for n, d in campus_bare.items() if n % 5 == 1}  # what --fps 5 replays of 25 fps footage
    notes = check_alignment(gt, every_fifth, COCO_CLASSES, "bare model")
    assert notes[0].startswith("Time check of the labels skipped: 0 labelled frames")
    assert gt.matching is not None and gt.matching.alignment == {"checked": False, "note": notes[0]}


def test_labels_of_another_clip_are_refused(
    shared_data: Path, campus: Path, campus_mot: GroundTruth, tmp_path: Path
) -> None:
    stadtmitte = load_mot(mot(shared_data, "TUD-Stadtmitte"))
    coco = write_coco(stadtmitte, tmp_path / "stadtmitte.json", lambda n: f"{n}.jpg")
    with pytest.raises(
        LabelMismatchError, match=r"71 of 179 labelled images \(40 %\) matched a frame by COCO file_name"
    ):
        load_ground_truth(str(coco), None, campus, None, COCO_CLASSES)
    # The MOT gt.txt of the other clip against the video: the same counts, by frame number.
    video = shared_data / "footage" / "TUD-Campus" / "TUD-Campus.mp4"
    with pytest.raises(LabelMismatchError, match=r"71 of 179 labelled images.*MOT frame number") as caught:
        load_ground_truth(str(mot(shared_data, "TUD-Stadtmitte")), None, video, None, COCO_CLASSES)
    assert caught.value.matching.to_json()["matched_images"] == 71


def test_labels_of_another_clip_with_the_same_names_are_refused(
    config: VigilConfig, shared_data: Path, campus: Path, tmp_path: Path
) -> None:
    """Campus's 71 labels all find a frame of Stadtmitte's folder (1.jpg … 179.jpg): only the model can tell."""
    folder = tmp_path / "stadtmitte"
    write_frames(shared_data / "footage" / "TUD-Stadtmitte" / "TUD-Stadtmitte.mp4", folder)
    coco = write_coco(load_mot(mot(shared_data, "TUD-Campus")), tmp_path / "campus.json", lambda n: f"{n}.jpg")
    gt = load_ground_truth(str(coco), None, folder, None, COCO_CLASSES)
    assert gt.matching is not None and (gt.matching.matched, gt.matching.frames) == (71, 179)
    predictions, _ = bare_predictions(config, None, 0.01, folder, set(range(75)), gt)
    with pytest.raises(LabelMismatchError, match=r"match nothing the bare model finds.*another recording"):
        check_alignment(gt, predictions, COCO_CLASSES, "bare model")


def coco_variant(gt: GroundTruth, variant: str) -> dict[str, Any]:
    """The clip's labels as a video export names its images: by frame_index, CVAT's frame_000000.jpg
    (0-based), ffmpeg's 0001.png (1-based) or only by id (0-based here); other ids run backwards."""
    coco: dict[str, Any] = json.loads(json.dumps(mot_to_coco(gt)))
    new_id = {}
    for image in coco["images"]:
        index = image["frame_index"] if variant == "frame_index" else image.pop("frame_index")
        new_id[image["id"]] = image["id"] = index if variant == "id" else 5000 - index
        image["file_name"] = {"cvat": f"frame_{index:06d}.jpg", "ffmpeg": f"{index + 1:04d}.png"}.get(variant, "x.jpg")
    for ann in coco["annotations"]:
        ann["image_id"] = new_id[ann["image_id"]]
    return coco


def test_video_rules_frame_index_then_file_name_number_then_id(
    shared_data: Path, campus_mot: GroundTruth, tmp_path: Path
) -> None:
    video = describe_recording(shared_data / "footage" / "TUD-Campus" / "TUD-Campus.mp4")
    assert (video.frames, video.width, video.height, video.names) == (71, 640, 480, None)
    rules = {}
    for variant in ("frame_index", "cvat", "ffmpeg", "id"):
        path = tmp_path / f"{variant}.json"
        path.write_text(json.dumps(coco_variant(campus_mot, variant)))
        gt = load_coco(path, video)
        assert gt.matching is not None and gt.matching.matched == 71, variant
        assert gt.frame_numbers == campus_mot.frame_numbers and gt.box_count == 359, variant
        assert all(np.array_equal(gt.boxes(n).xyxy, campus_mot.boxes(n).xyxy) for n in gt.frame_numbers), variant
        rules[variant] = gt.matching.rule
    assert rules == {
        "frame_index": "frame_index",
        "cvat": "the frame number in the COCO file_name (0-based)",
        "ffmpeg": "the frame number in the COCO file_name (1-based)",
        "id": "image id (0-based)",
    }


def test_file_names_as_annotation_tools_write_them() -> None:
    names = FrameNames(["1.jpg", "2.jpg", "10.jpg", "IMG_7.JPG", "a.jpg", "a.png", "frame_000003.png"])
    assert names.find("10.jpg") == 2
    assert names.find("images/default/10.jpg") == 2  # CVAT / Label Studio path prefixes
    assert names.find("..\\..\\media\\upload\\4\\2.jpg") == 1  # Windows separators
    assert names.find("/data/local-files/?d=frames%20a/10.jpg") == 2  # Label Studio local storage, URL-quoted
    assert names.find("cb0618f6-2.jpg") == 1  # Label Studio's upload prefix
    assert names.find("10_jpg.rf.0123456789abcdef0123456789abcdef.jpg") == 2  # Roboflow's renamed copy
    assert names.find("img_7.jpg") == 3  # case differs
    assert names.find("1.png") == 0  # re-encoded frames: the stem alone, when it is unique
    assert names.find("a.gif") is None  # a.jpg and a.png: ambiguous, so no match rather than a guess
    assert names.find("3.jpg") is None and names.find("frame_000003.jpg") == 6
    assert names.find("10_jpg.rf.0123456789abcdef0123456789abcdef.txt", stem_only=True) == 2  # Roboflow YOLO
    assert [name_number(n) for n in ("frame_000123.jpg", "000123.png", "cam2_0042.jpg", "x.jpg")] == [
        123,
        123,
        42,
        None,
    ]


def test_duplicate_frames_and_unknown_classes(campus: Path, campus_mot: GroundTruth, tmp_path: Path) -> None:
    recording = describe_recording(campus)
    coco = mot_to_coco(campus_mot)
    for image in coco["images"]:  # type: ignore[attr-defined]
        image["file_name"] = f"{image['frame_index'] + 1}.jpg"
    coco["images"][1]["file_name"] = "train/1.jpg"  # type: ignore[index]
    path = tmp_path / "dup.json"
    path.write_text(json.dumps(coco))
    with pytest.raises(GroundTruthError, match=r"'1.jpg' and 'train/1.jpg' both belong to frame 0"):
        load_coco(path, recording)
    # Categories by name without case; a class the model lacks is listed once and not scored.
    coco = mot_to_coco(campus_mot)
    coco["categories"] = [{"id": 1, "name": "Person"}, {"id": 2, "name": "forklift"}, {"id": 3, "name": "car"}]
    annotations: list[dict[str, object]] = coco["annotations"]  # type: ignore[assignment]
    for ann in annotations[:10]:
        ann["category_id"] = 2
    path.write_text(json.dumps(coco))
    gt = map_classes(load_coco(path, Recording("clip.mp4", frames=71)), COCO_CLASSES)
    assert gt.class_names == ("person",) and gt.box_count == 349  # car has no box: not a class with AP 0
    assert gt.matching is not None and gt.matching.unknown_classes == {"forklift": 10}
    for ann in annotations:
        ann["category_id"] = 2
    path.write_text(json.dumps(coco))
    with pytest.raises(GroundTruthError, match=r"none of the labels' classes \['forklift'\] is one of the model's"):
        map_classes(load_coco(path), COCO_CLASSES)


def test_yolo_rows_and_their_errors(campus: Path, tmp_path: Path) -> None:
    recording = describe_recording(campus)
    (tmp_path / "classes.txt").write_text("person\ncar\n")
    (tmp_path / "README.roboflow.txt").write_text("exported by a tool, not labels")
    (tmp_path / "1.txt").write_text("1 0.5 0.5 0.25 0.5\n0 0.1 0.2 0.3 0.2 0.2 0.4\n\n")  # a box and a polygon
    (tmp_path / "2.txt").write_text("")  # an image without objects
    gt = load_yolo(tmp_path, recording)
    assert gt.frame_numbers == [1, 2] and gt.class_names == ("person", "car") and (gt.width, gt.height) == (640, 480)
    np.testing.assert_allclose(gt.boxes(1).xyxy, [[240, 120, 400, 360], [64, 96, 192, 192]], atol=1e-3)
    assert gt.boxes(1).class_id.tolist() == [1, 0] and len(gt.boxes(2)) == 0
    (tmp_path / "3.txt").write_text("0 320 240 64 128\n")
    with pytest.raises(GroundTruthError, match=r"3.txt:1: YOLO coordinates are fractions of the image"):
        load_yolo(tmp_path, recording)
    (tmp_path / "3.txt").write_text("2 0.5 0.5 0.1 0.1\n")
    with pytest.raises(GroundTruthError, match=r"3.txt:1: class 2 is not one of the 2 named classes"):
        load_yolo(tmp_path, recording)
    (tmp_path / "3.txt").unlink()
    (tmp_path / "classes.txt").unlink()
    with pytest.raises(GroundTruthError, match=r"need their class names: a data.yaml"):
        load_yolo(tmp_path, recording)


def test_cvat_mot_export_names_its_classes(tmp_path: Path) -> None:
    gt_dir = tmp_path / "gt"
    gt_dir.mkdir()
    (gt_dir / "labels.txt").write_text("car\nperson\n")
    (gt_dir / "gt.txt").write_text("1,1,10,10,20,40,1,2,1.0\n1,2,50,50,60,30,1,1,0.8\n2,1,12,10,20,40,0,2,1.0\n")
    gt = load_mot(gt_dir / "gt.txt", recording=Recording("clip.mp4", frames=3))
    assert gt.class_names == ("person", "car") and gt.boxes(1).class_id.tolist() == [0, 1]
    assert gt.boxes(2).data["ignore"].tolist() == [True]
    assert gt.matching is not None and gt.matching.rule == "MOT frame number (frame n = the video frame n - 1)"
    (gt_dir / "gt.txt").write_text("1,1,10,10,20,40,1,3,1.0\n")
    with pytest.raises(GroundTruthError, match=r"gt.txt:1: class 3 but labels.txt names 2 classes"):
        load_mot(gt_dir / "gt.txt")


def test_refused_labels_leave_the_counts_in_report_json(shared_data: Path, campus: Path, tmp_path: Path) -> None:
    from vigil.cli import main

    config = tmp_path / "eval.yaml"
    data = yaml.safe_load((REPO / "examples" / "eval.yaml").read_text())
    data["kafka"] = {"bootstrap_servers": ["127.0.0.1:1"]}  # never reached: the labels are refused first
    config.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    argv = ["eval", "--video", str(campus), "--gt", str(mot(shared_data, "TUD-Stadtmitte")), "--config", str(config)]
    assert main([*argv, "--out", str(out)]) == 2
    report = json.loads((out / "report.json").read_text())
    assert "the labels do not line up" in report["error"] and "--gt-offset" in report["error"]
    matching = report["ground_truth_matching"]
    assert (matching["labelled_images"], matching["matched_images"], matching["frames"]) == (179, 71, 71)
    assert matching["unmatched_examples"] == ["frame 72", "frame 73", "frame 74", "frame 75", "frame 76"]
