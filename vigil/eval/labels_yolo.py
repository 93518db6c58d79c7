"""YOLO-format labels (the ultralytics dataset layout): one `.txt` per image, a row per box
`class cx cy w h` normalised to 0-1 (a polygon row `class x1 y1 x2 y2 ...` counts as its bounding
box), the class names in `data.yaml` (`names`), `classes.txt` or `obj.names`.

Label files are matched to frames by file stem (`000123.txt` labels `000123.jpg`); for a video by
the frame number in the stem (CVAT's `frame_000123.txt`). An image without a label file is not
scored; an empty label file means the image has no objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from vigil.errors import ContractError
from vigil.eval.groundtruth import Box, GroundTruth, boxes_of
from vigil.eval.labels_match import GroundTruthError, LabelledImage, Recording, place
from vigil.imaging import probe_image

NAME_FILES = ("data.yaml", "data.yml", "classes.txt", "obj.names")
# .txt files of these names in a YOLO export are lists of image paths or notes, not labels.
NOT_LABELS = frozenset({"classes.txt", "train.txt", "val.txt", "valid.txt", "test.txt"})
# Normalised coordinates may overshoot 0-1 by rounding; more means pixel coordinates.
SLACK = 1e-3


def class_names(folder: Path) -> tuple[tuple[str, ...], Path]:
    """The class names and the file they came from: the nearest of `NAME_FILES` in `folder` or up
    to two folders above it (`labels/train/` under a dataset root with data.yaml)."""
    for where in (folder, folder.parent, folder.parent.parent):
        for name in NAME_FILES:
            path = where / name
            if path.is_file():
                return _read_names(path), path
    raise GroundTruthError(
        f"YOLO labels in {folder} need their class names: a data.yaml with `names`, or a classes.txt / obj.names "
        "with one name per line, in that folder or up to two folders above it"
    )


def _read_names(path: Path) -> tuple[str, ...]:
    text = path.read_text(encoding="utf-8")
    if path.suffix not in (".yaml", ".yml"):
        return tuple(line.strip() for line in text.splitlines() if line.strip())
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise GroundTruthError(f"{path}: not YAML: {exc}") from exc
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict) and all(isinstance(k, int) for k in names):
        if sorted(names) != list(range(len(names))):
            raise GroundTruthError(f"{path}: `names` must number the classes 0..{len(names) - 1}, got {sorted(names)}")
        return tuple(str(names[i]) for i in range(len(names)))
    if isinstance(names, list):
        return tuple(str(n) for n in names)
    raise GroundTruthError(f"{path}: needs `names`, a list of class names or a mapping {{0: name, ...}}")


def label_files(folder: Path) -> list[Path]:
    """Every label file under `folder` (any depth), without the lists and notes exports add."""
    if not folder.is_dir():
        raise GroundTruthError(f"--gt-format yolo needs a folder of .txt label files; {folder} is not a folder")
    files = [
        p
        for p in folder.rglob("*.txt")
        if p.is_file() and p.name.casefold() not in NOT_LABELS and not p.name.casefold().startswith("readme")
    ]
    if not files:
        raise GroundTruthError(f"no YOLO label files (.txt) under {folder}")
    return sorted(files)


def _rows(path: Path, classes: int) -> list[tuple[int, float, float, float, float]]:
    """(class, x1, y1, x2, y2) normalised, per row of a label file."""
    rows = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        values = line.split()
        if not values:
            continue
        try:
            numbers = [float(v) for v in values]
        except ValueError as exc:
            raise GroundTruthError(f"{path}:{line_no}: not a number: {exc}") from exc
        cls = int(numbers[0])
        coords = numbers[1:]
        if cls != numbers[0] or not 0 <= cls < classes:
            raise GroundTruthError(f"{path}:{line_no}: class {values[0]} is not one of the {classes} named classes")
        if len(coords) == 4:
            cx, cy, w, h = coords
            box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        elif len(coords) >= 6 and len(coords) % 2 == 0:
            xs, ys = coords[0::2], coords[1::2]
            box = (min(xs), min(ys), max(xs), max(ys))
        else:
            raise GroundTruthError(
                f"{path}:{line_no}: expected `class cx cy w h` or a polygon `class x1 y1 x2 y2 x3 y3 ...`, "
                f"got {len(values)} values"
            )
        if min(coords) < -SLACK or max(coords) > 1 + SLACK:
            raise GroundTruthError(
                f"{path}:{line_no}: YOLO coordinates are fractions of the image (0-1), got {line.strip()!r}; "
                "divide pixel coordinates by the image width and height"
            )
        rows.append((cls, *box))
    return rows


def _image_size(recording: Recording, index: int) -> tuple[int, int]:
    """The labelled image's size: the folder's image (its header), or the video's frame size."""
    if recording.names is not None:
        path = Path(recording.path) / recording.names[index]
        try:
            info = probe_image(path.read_bytes())
        except ContractError:
            import cv2

            image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if image is None:
                raise GroundTruthError(f"cannot read the size of {path} (needed to scale YOLO labels)") from None
            return int(image.shape[1]), int(image.shape[0])
        return info.width, info.height
    if recording.width is None or recording.height is None:
        raise GroundTruthError(f"the frame size of {recording.path} is unknown; YOLO labels need it")
    return recording.width, recording.height


def load_yolo(folder: str | Path, recording: Recording, offset: int = 0) -> GroundTruth:
    """YOLO label files under `folder`, placed on the frames of `recording`, in pixels."""
    root = Path(folder)
    names, names_file = class_names(root)
    files = label_files(root)
    entries = [LabelledImage(str(f.relative_to(root))) for f in files]
    placed, matching = place(entries, recording, offset, "YOLO label file name", stem_only=True)
    matching.identities = False  # YOLO labels carry no track identities
    frames = {}
    size: tuple[int, int] | None = None
    for file, index in zip(files, placed, strict=True):
        if index is None:
            continue
        width, height = _image_size(recording, index)
        size = size or (width, height)
        items: list[Box] = [
            (x1 * width, y1 * height, x2 * width, y2 * height, cls, -1, False)
            for cls, x1, y1, x2, y2 in _rows(file, len(names))
        ]
        frames[index + 1] = boxes_of(items)
    source = f"{root} (classes from {names_file.name})"
    return GroundTruth(
        frames, names, size[0] if size else None, size[1] if size else None, None, source, sorted(frames), matching
    )
