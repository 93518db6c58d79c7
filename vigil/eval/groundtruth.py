"""Ground truth for recorded footage: MOTChallenge `gt.txt` and COCO JSON, as `Detections` per frame.

Frames are numbered as the ground truth numbers them: MOT frames start at 1 and equal the video's
frame index + 1. Boxes are `xyxy` pixels of the labelled image size.
"""

from __future__ import annotations

import configparser
import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vigil.detections import Detections
from vigil.errors import VigilError


class GroundTruthError(VigilError):
    """A ground-truth file is missing or does not follow its format."""


@dataclass
class GroundTruth:
    """Labelled boxes per frame. `tracker_id` holds the ground-truth identity (MOT) or -1, and
    `data["ignore"]` marks boxes that neither count as misses nor make matching detections false."""

    frames: dict[int, Detections]
    class_names: tuple[str, ...]
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    source: str = ""
    frame_numbers: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.frame_numbers:
            self.frame_numbers = sorted(self.frames)

    def boxes(self, frame: int) -> Detections:
        return self.frames.get(frame, _empty_gt())

    @property
    def box_count(self) -> int:
        return sum(int((~d.data["ignore"]).sum()) for d in self.frames.values())


def _empty_gt() -> Detections:
    empty = Detections.empty()
    empty.tracker_id = np.empty(0, np.int64)
    empty.data["ignore"] = np.empty(0, bool)
    return empty


def read_seqinfo(folder: Path) -> tuple[int | None, int | None, float | None, int | None]:
    """(width, height, fps, length) from a MOT `seqinfo.ini`, or Nones when absent."""
    ini = folder / "seqinfo.ini"
    if not ini.is_file():
        return None, None, None, None
    parser = configparser.ConfigParser()
    parser.read(ini, encoding="utf-8")
    if "Sequence" not in parser:
        raise GroundTruthError(f"{ini}: no [Sequence] section")
    seq = parser["Sequence"]
    return (
        seq.getint("imWidth"),
        seq.getint("imHeight"),
        seq.getfloat("frameRate"),
        seq.getint("seqLength"),
    )


def load_mot(path: str | Path, class_name: str = "person") -> GroundTruth:
    """Read MOT CSV `frame, id, x, y, w, h, flag, ...`; rows with flag 0 become ignore regions."""
    file = Path(path)
    if not file.is_file():
        raise GroundTruthError(f"ground truth {file} not found")
    rows: dict[int, list[tuple[float, float, float, float, int, bool]]] = {}
    with file.open(encoding="utf-8") as handle:
        for line_no, row in enumerate(csv.reader(handle), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 6:
                raise GroundTruthError(f"{file}:{line_no}: expected at least 6 columns frame,id,x,y,w,h, got {row}")
            try:
                frame, track = int(float(row[0])), int(float(row[1]))
                x, y, w, h = (float(v) for v in row[2:6])
                flag = int(float(row[6])) if len(row) > 6 else 1
            except ValueError as exc:
                raise GroundTruthError(f"{file}:{line_no}: not a number: {exc}") from exc
            if frame < 1:
                raise GroundTruthError(f"{file}:{line_no}: MOT frames start at 1, got {frame}")
            rows.setdefault(frame, []).append((x, y, x + w, y + h, track, flag == 0))
    width, height, fps, length = read_seqinfo(file.parent)
    frames = {
        frame: Detections(
            xyxy=np.array([r[:4] for r in items], np.float32),
            confidence=np.ones(len(items), np.float32),
            class_id=np.zeros(len(items), np.int32),
            tracker_id=np.array([r[4] for r in items], np.int64),
            data={"ignore": np.array([r[5] for r in items], bool)},
        )
        for frame, items in rows.items()
    }
    numbers = list(range(1, length + 1)) if length else sorted(frames)
    return GroundTruth(frames, (class_name,), width, height, fps, str(file), numbers)


def load_coco(path: str | Path) -> GroundTruth:
    """Read COCO detection JSON. Each image is a frame: its number is the image's `frame_index` + 1
    when present (video exports), else its `id`. Categories keep their names, so they can be mapped
    to the model's class ids by name."""
    file = Path(path)
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise GroundTruthError(f"ground truth {file} not found") from exc
    except json.JSONDecodeError as exc:
        raise GroundTruthError(f"{file}: not JSON: {exc}") from exc
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise GroundTruthError(f"{file}: COCO JSON needs a list '{key}'")
    categories = sorted(data["categories"], key=lambda c: c["id"])
    names = tuple(str(c["name"]) for c in categories)
    index_of = {c["id"]: i for i, c in enumerate(categories)}
    frame_of: dict[int, int] = {}
    width = height = None
    for image in data["images"]:
        frame_of[image["id"]] = int(image["frame_index"]) + 1 if "frame_index" in image else int(image["id"])
        width, height = image.get("width", width), image.get("height", height)
    grouped: dict[int, list[tuple[float, float, float, float, int, int, bool]]] = {f: [] for f in frame_of.values()}
    for ann in data["annotations"]:
        if ann["image_id"] not in frame_of:
            raise GroundTruthError(f"{file}: annotation {ann.get('id')} refers to unknown image {ann['image_id']}")
        if ann["category_id"] not in index_of:
            raise GroundTruthError(f"{file}: annotation {ann.get('id')} has unknown category {ann['category_id']}")
        x, y, w, h = (float(v) for v in ann["bbox"])
        ignore = bool(ann.get("iscrowd", 0) or ann.get("ignore", 0))
        grouped[frame_of[ann["image_id"]]].append(
            (x, y, x + w, y + h, index_of[ann["category_id"]], int(ann.get("track_id", -1)), ignore)
        )
    frames = {
        frame: Detections(
            xyxy=np.array([r[:4] for r in items], np.float32).reshape(-1, 4),
            confidence=np.ones(len(items), np.float32),
            class_id=np.array([r[4] for r in items], np.int32),
            tracker_id=np.array([r[5] for r in items], np.int64),
            data={"ignore": np.array([r[6] for r in items], bool)},
        )
        for frame, items in grouped.items()
    }
    return GroundTruth(frames, names, width, height, None, str(file))


def mot_to_coco(gt: GroundTruth) -> dict[str, object]:
    """The same labels as COCO JSON (used to test the COCO path, and to export MOT labels)."""
    images = [
        {"id": n, "frame_index": n - 1, "file_name": f"{n:06d}.jpg", "width": gt.width, "height": gt.height}
        for n in gt.frame_numbers
    ]
    annotations: list[dict[str, Any]] = []
    for n in gt.frame_numbers:
        boxes = gt.boxes(n)
        for i in range(len(boxes)):
            x1, y1, x2, y2 = (float(v) for v in boxes.xyxy[i])
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": n,
                    "category_id": int(boxes.class_id[i]) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                    "iscrowd": int(boxes.data["ignore"][i]),
                    "track_id": int(boxes.tracker_id[i]) if boxes.tracker_id is not None else -1,
                }
            )
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(gt.class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}
