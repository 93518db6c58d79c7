"""Ground truth for recorded footage: MOTChallenge `gt.txt` and COCO JSON, as `Detections` per frame.

Frames are numbered as MOT numbers them: frame n is the recording's frame index n - 1 (a video's
n-th frame, an image folder's n-th image in natural order). Boxes are `xyxy` pixels of the labelled
image size. Given the `Recording`, every loader places each labelled image on a replayed frame
(`labels_match`: by file name in a folder, by frame_index / a number in the name / the id in a
video) and keeps the counts in `GroundTruth.matching`. YOLO labels are read by `labels_yolo`.
"""

from __future__ import annotations

import configparser
import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from vigil.detections import Detections
from vigil.eval.labels_match import GroundTruthError as GroundTruthError
from vigil.eval.labels_match import LabelledImage, Matching, Recording, place, settle

# One labelled box: x1, y1, x2, y2, class index, track id (-1: none), ignore region.
Box = tuple[float, float, float, float, int, int, bool]


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
    matching: Matching | None = None

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


def boxes_of(items: Sequence[Box]) -> Detections:
    """Ground-truth `Detections` (confidence 1) from labelled boxes."""
    return Detections(
        xyxy=np.array([r[:4] for r in items], np.float32).reshape(-1, 4),
        confidence=np.ones(len(items), np.float32),
        class_id=np.array([r[4] for r in items], np.int32),
        tracker_id=np.array([r[5] for r in items], np.int64),
        data={"ignore": np.array([r[6] for r in items], bool)},
    )


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


def _mot_labels(file: Path) -> list[str]:
    """CVAT's MOT 1.1 export names its classes in `labels.txt` beside `gt.txt` (column 8 = line, from 1)."""
    labels = file.parent / "labels.txt"
    if not labels.is_file():
        return []
    return [line.strip() for line in labels.read_text(encoding="utf-8").splitlines() if line.strip()]


def load_mot(
    path: str | Path, class_name: str = "person", recording: Recording | None = None, offset: int = 0
) -> GroundTruth:
    """Read MOT CSV `frame, id, x, y, w, h, flag, class, ...`; rows with flag 0 become ignore regions.
    Every box is `class_name` unless a `labels.txt` (CVAT MOT 1.1) names column 8's classes."""
    file = Path(path)
    if not file.is_file():
        raise GroundTruthError(f"ground truth {file} not found")
    labels = _mot_labels(file)
    names: list[str] = []
    rows: dict[int, list[Box]] = {}
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
                label = int(float(row[7])) if len(row) > 7 and labels else -1
            except ValueError as exc:
                raise GroundTruthError(f"{file}:{line_no}: not a number: {exc}") from exc
            if frame < 1:
                raise GroundTruthError(f"{file}:{line_no}: MOT frames start at 1, got {frame}")
            if label > len(labels):
                raise GroundTruthError(f"{file}:{line_no}: class {label} but labels.txt names {len(labels)} classes")
            name = labels[label - 1] if label >= 1 else class_name
            if name not in names:
                names.append(name)
            rows.setdefault(frame, []).append((x, y, x + w, y + h, names.index(name), track, flag == 0))
    width, height, fps, length = read_seqinfo(file.parent)
    numbers = list(range(1, length + 1)) if length else sorted(rows)
    where = "the folder's n-th image in natural order" if recording is not None and recording.is_folder else None
    rule = f"MOT frame number (frame n = {where or 'the video frame n - 1'})"
    placed, matching = settle([f"frame {n}" for n in numbers], [n - 1 for n in numbers], rule, recording, offset)
    kept = {n: index + 1 for n, index in zip(numbers, placed, strict=True) if index is not None}
    frames = {kept[n]: boxes_of(items) for n, items in rows.items() if n in kept}
    matching.identities = any(track >= 0 for items in rows.values() for *_, track, _ in items)
    return GroundTruth(
        frames, tuple(names or [class_name]), width, height, fps, str(file), sorted(kept.values()), matching
    )


def _coco_json(file: Path) -> dict[str, Any]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise GroundTruthError(f"ground truth {file} not found") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise GroundTruthError(f"{file}: not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise GroundTruthError(f"{file}: COCO JSON is an object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list) or not all(isinstance(v, dict) for v in data[key]):
            raise GroundTruthError(f"{file}: COCO JSON needs a list of objects '{key}'")
    return data


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _track_id(ann: dict[str, Any]) -> int:
    """`track_id` of the annotation, or CVAT's `attributes.track_id` (its COCO export of tracks)."""
    attributes = ann.get("attributes")
    value = ann.get("track_id", attributes.get("track_id") if isinstance(attributes, dict) else None)
    number = _int_or_none(value)
    return -1 if number is None else number


def _bbox(file: Path, ann: dict[str, Any]) -> tuple[float, float, float, float]:
    bbox = ann.get("bbox")
    if (
        not isinstance(bbox, list)
        or len(bbox) != 4
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in bbox)
    ):
        raise GroundTruthError(f"{file}: annotation {ann.get('id')} needs a bbox [x, y, width, height], got {bbox!r}")
    x, y, w, h = (float(v) for v in bbox)
    return x, y, x + w, y + h


def load_coco(path: str | Path, recording: Recording | None = None, offset: int = 0) -> GroundTruth:
    """Read COCO detection JSON and place each image on a frame of `recording` (labels_match:
    by file_name in an image folder; frame_index, else a number in file_name, else the id in a
    video or without a recording). Categories keep their names, to be mapped to the model's."""
    file = Path(path)
    data = _coco_json(file)
    names = tuple(str(c.get("name")) for c in data["categories"])
    index_of = {c.get("id"): i for i, c in enumerate(data["categories"])}
    images = data["images"]
    entries = [
        LabelledImage(str(i.get("file_name", "")), _int_or_none(i.get("frame_index")), _int_or_none(i.get("id")))
        for i in images
    ]
    placed, matching = place(entries, recording, offset, "COCO file_name")
    frame_of: dict[Any, int | None] = {}
    width = height = None
    for image, index in zip(images, placed, strict=True):
        frame_of[image.get("id")] = None if index is None else index + 1
        if index is not None and width is None:
            width, height = _int_or_none(image.get("width")), _int_or_none(image.get("height"))
    grouped: dict[int, list[Box]] = {f: [] for f in frame_of.values() if f is not None}
    for ann in data["annotations"]:
        if ann.get("image_id") not in frame_of:
            raise GroundTruthError(f"{file}: annotation {ann.get('id')} refers to unknown image {ann.get('image_id')}")
        if ann.get("category_id") not in index_of:
            raise GroundTruthError(f"{file}: annotation {ann.get('id')} has unknown category {ann.get('category_id')}")
        box = _bbox(file, ann)
        frame = frame_of[ann["image_id"]]
        if frame is not None:
            ignore = bool(ann.get("iscrowd", 0) or ann.get("ignore", 0))
            grouped[frame].append((*box, index_of[ann["category_id"]], _track_id(ann), ignore))
    frames = {frame: boxes_of(items) for frame, items in grouped.items()}
    matching.identities = any(r[5] >= 0 for items in grouped.values() for r in items)
    return GroundTruth(frames, names, width, height, None, str(file), sorted(grouped), matching)


def _canonical(name: str) -> str:
    """Class names compare without case, `_` or `-` (`Traffic_Light` is `traffic light`)."""
    return " ".join(name.casefold().replace("_", " ").replace("-", " ").split())


def map_classes(gt: GroundTruth, model_names: Sequence[str]) -> GroundTruth:
    """The labels with the model's class names. Classes the model does not have are not scored:
    their boxes are dropped and listed once (`matching.unknown_classes`); classes without a box are
    dropped (a class without ground truth has no AP, as in COCO evaluation). None known: refused."""
    lookup = {_canonical(n): n for n in model_names}
    counts = np.zeros(len(gt.class_names), np.int64)
    for dets in gt.frames.values():
        counts += np.bincount(dets.class_id, minlength=len(gt.class_names))
    if not counts.any():
        return gt  # no box at all: nothing to map (every detection will count as false)
    unknown = {n: int(c) for n, c in zip(gt.class_names, counts, strict=True) if c and _canonical(n) not in lookup}
    names: list[str] = []
    table = np.full(len(gt.class_names), -1, np.int32)  # label class index -> new index, -1: not scored
    for i, (label, count) in enumerate(zip(gt.class_names, counts, strict=True)):
        if count and label not in unknown:
            name = lookup[_canonical(label)]
            if name not in names:
                names.append(name)
            table[i] = names.index(name)
    if unknown and not names:
        shown = ", ".join(list(model_names)[:8]) + (" …" if len(model_names) > 8 else "")
        raise GroundTruthError(
            f"none of the labels' classes {sorted(unknown)} is one of the model's classes ({shown}); "
            "rename them in the labels to the model's class names"
        )
    frames = {}
    for number, dets in gt.frames.items():
        mapped = table[dets.class_id]
        frames[number] = dets[mapped >= 0]
        frames[number].class_id = mapped[mapped >= 0]
    if gt.matching is not None:
        gt.matching.unknown_classes = unknown
    return replace(gt, frames=frames, class_names=tuple(names))


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
