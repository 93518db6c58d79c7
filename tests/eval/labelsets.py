"""Label sets as annotation tools export them, generated from a shared clip's frames and its MOT
gt.txt, so the right answer is known: scored on the same frames they must give the MOT-scored AP."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import yaml

from vigil.eval.groundtruth import GroundTruth, mot_to_coco
from vigil.eval.run import read_frames


def write_frames(video: Path, folder: Path, name: Callable[[int], str] = lambda n: f"{n}.jpg") -> list[str]:
    """The clip's frames as image files named by `name(MOT frame number)` (default `1.jpg … N.jpg`,
    unpadded, as users save them)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for index, image in read_frames(video):
        names.append(name(index + 1))
        cv2.imwrite(str(folder / names[-1]), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return names


def coco_by_file_name(gt: GroundTruth, file_name: Callable[[int], str], seed: int = 16) -> dict[str, Any]:
    """COCO JSON of the MOT labels as CVAT / Roboflow / Label Studio export it: images linked by
    `file_name(frame)`, no frame_index, ids in another order than the frames, images shuffled."""
    coco: dict[str, Any] = mot_to_coco(gt)
    rng = random.Random(seed)
    ids = list(range(1, len(coco["images"]) + 1))
    rng.shuffle(ids)
    new_id = {}
    for image, image_id in zip(coco["images"], ids, strict=True):
        new_id[image["id"]] = image_id
        image["file_name"] = file_name(image.pop("frame_index") + 1)
        image["id"] = image_id
    for ann in coco["annotations"]:
        ann["image_id"] = new_id[ann["image_id"]]
    rng.shuffle(coco["images"])
    return coco


def write_coco(gt: GroundTruth, path: Path, file_name: Callable[[int], str], seed: int = 16) -> Path:
    path.write_text(json.dumps(coco_by_file_name(gt, file_name, seed)), encoding="utf-8")
    return path


def write_yolo(gt: GroundTruth, root: Path, stem: Callable[[int], str] = str, names_file: str = "data.yaml") -> Path:
    """The MOT labels in the ultralytics layout: `labels/<stem>.txt` rows `class cx cy w h` normalised
    by the image size, and the class names in data.yaml (or classes.txt)."""
    assert gt.width and gt.height
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for frame in gt.frame_numbers:
        boxes = gt.boxes(frame)
        rows = []
        for (x1, y1, x2, y2), cls in zip(boxes.xyxy.tolist(), boxes.class_id.tolist(), strict=True):
            cx, cy = (x1 + x2) / 2 / gt.width, (y1 + y2) / 2 / gt.height
            w, h = (x2 - x1) / gt.width, (y2 - y1) / gt.height
            rows.append(f"{cls} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
        (root / "labels" / f"{stem(frame)}.txt").write_text("".join(r + "\n" for r in rows), encoding="utf-8")
    if names_file == "data.yaml":
        (root / names_file).write_text(
            yaml.safe_dump({"path": ".", "val": "images", "names": dict(enumerate(gt.class_names))})
        )
    else:
        (root / names_file).write_text("\n".join(gt.class_names) + "\n")
    return root
