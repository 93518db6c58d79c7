"""Which replayed frame each labelled image belongs to, and how many found one.

Labels exported by annotation tools name their images in their own ways: a path prefix
(`images/1.jpg`, `..\\media\\upload\\4\\1.jpg`), Label Studio's upload prefix (`cb0618f6-1.jpg`),
Roboflow's renamed copies (`1_jpg.rf.<32 hex>.jpg`), a frame number (`frame_000123.jpg`). An image
folder is matched by file name; a video by `frame_index`, else a number in the name, else the id.
`Matching` records the rule and the counts so `vigil eval` can refuse labels that do not line up.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any
from urllib.parse import unquote

from vigil.errors import VigilError
from vigil.imagefolder import natural_key

MIN_MATCHED = 0.9  # of the labelled images; fewer means the labels are not this recording's
_ROBOFLOW = re.compile(r"^(?P<stem>.+)_(?P<ext>[A-Za-z0-9]{2,5})\.rf\.[0-9a-fA-F]{32}(?:\.[A-Za-z0-9]+)?$")
_LABEL_STUDIO = re.compile(r"^[0-9a-f]{8}-(?P<name>.+)$")
_LAST_NUMBER = re.compile(r"(\d+)(?!.*\d)")
_AMBIGUOUS = -1
_EXAMPLES = 5


class GroundTruthError(VigilError):
    """A ground-truth file is missing or does not follow its format."""


@dataclass(frozen=True)
class Recording:
    """What labels are matched against: an image folder's file names in replay (natural) order,
    or a video's frame count (None when the container does not say) and frame size."""

    path: str
    names: tuple[str, ...] | None = None
    frames: int | None = None
    width: int | None = None
    height: int | None = None

    @property
    def is_folder(self) -> bool:
        return self.names is not None


@dataclass
class Matching:
    """How the labels were placed on the recording's frames, and how many found a frame."""

    rule: str
    labelled: int  # images (COCO), label files (YOLO) or frames (MOT) in the label set
    matched: int  # of those, placed on a frame of the recording
    frames: int | None  # frames in the recording (None: unknown)
    frames_with_labels: int
    offset: int = 0
    offset_given: bool = False  # --gt-offset was given: a shift is the user's choice, so it only warns
    unmatched: list[str] = field(default_factory=list)  # a few labelled images without a frame
    unknown_classes: dict[str, int] = field(default_factory=dict)  # label class -> boxes not scored
    identities: bool = True  # the labels carry track ids (alert scoring needs them)
    alignment: dict[str, Any] | None = None  # AP by frame offset, once checked (vigil.eval.alignment)

    @property
    def fraction(self) -> float:
        return self.matched / self.labelled if self.labelled else 0.0

    def summary(self) -> str:
        frames = f"{self.frames} frames" if self.frames is not None else "frames (count unknown)"
        offset = f", shifted by --gt-offset {self.offset:+d}" if self.offset else ""
        return (
            f"{self.matched} of {self.labelled} labelled images ({100 * self.fraction:.0f} %) matched a frame "
            f"by {self.rule}{offset}; {self.frames_with_labels} of the recording's {frames} have labels"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "labelled_images": self.labelled,
            "matched_images": self.matched,
            "matched_fraction": self.fraction,
            "frames": self.frames,
            "frames_with_labels": self.frames_with_labels,
            "offset": self.offset,
            "unmatched_examples": self.unmatched,
            "unknown_classes": self.unknown_classes,
            "identities": self.identities,
            "alignment": self.alignment,
        }


class LabelMismatchError(GroundTruthError):
    """The labels do not line up with the recording's frames; `matching` holds the counts."""

    def __init__(self, message: str, matching: Matching) -> None:
        super().__init__(message)
        self.matching = matching


@dataclass(frozen=True)
class LabelledImage:
    """One image of a label set as the labels name it."""

    name: str  # COCO file_name or a YOLO label file's name, as written
    frame_index: int | None = None  # COCO frame_index (0-based video frame), when given
    image_id: int | None = None  # COCO id


def basename(name: str) -> str:
    """The file name without any path prefix (`/`, `\\` or a URL query like `?d=dir/1.jpg`)."""
    tail = re.split(r"[/\\]", name.strip())[-1]
    return unquote(tail) if "%" in tail else tail


def original_names(name: str) -> list[str]:
    """The name as written, then as it was before an annotation tool renamed it."""
    names = [name]
    if match := _ROBOFLOW.match(name):
        names.append(f"{match['stem']}.{match['ext']}")
    if match := _LABEL_STUDIO.match(names[-1]):
        names.append(match["name"])
    return names


class FrameNames:
    """An image folder's file names -> replay position, looked up the tolerant way: exact name,
    any case, a tool's renamed copy, and finally the stem alone (`1.png` labels a re-encoded `1.jpg`)."""

    def __init__(self, names: Sequence[str]) -> None:
        self.by_name: dict[str, int] = {}
        self.by_stem: dict[str, int] = {}
        for position, name in enumerate(names):
            for table, key in ((self.by_name, name.casefold()), (self.by_stem, PurePath(name).stem.casefold())):
                table[key] = _AMBIGUOUS if key in table else position

    def find(self, label: str, stem_only: bool = False) -> int | None:
        candidates = original_names(basename(label))
        if not stem_only:
            for candidate in candidates:
                position = self.by_name.get(candidate.casefold())
                if position is not None:
                    return position if position != _AMBIGUOUS else None
        for candidate in candidates:
            position = self.by_stem.get(PurePath(candidate).stem.casefold())
            if position is not None:
                return position if position != _AMBIGUOUS else None
        return None


def name_number(name: str) -> int | None:
    """The frame number a file name carries: the last run of digits of its original stem
    (`frame_000123.jpg` -> 123, `video3_0042.png` -> 42)."""
    stem = PurePath(original_names(basename(name))[-1]).stem
    found = _LAST_NUMBER.search(stem)
    return int(found.group(1)) if found else None


def _counted(numbers: list[int], what: str) -> tuple[list[int], str]:
    """0-based frame indices from numbers that count from 0 (CVAT's frame_000000) or from 1 (MOT,
    ffmpeg's %d, most ids): the smallest number decides."""
    base = 0 if min(numbers) == 0 else 1
    return [n - base for n in numbers], f"{what} ({base}-based)"


def video_indices(images: Sequence[LabelledImage], what: str) -> tuple[list[int], str]:
    """0-based frame indices of labelled images of a video, and the rule used: `frame_index` if every
    image has one, else the number in every file name (if they are distinct), else the id."""
    if images and all(i.frame_index is not None for i in images):
        return [int(i.frame_index) for i in images if i.frame_index is not None], "frame_index"
    numbers = [name_number(i.name) for i in images]
    if numbers and all(n is not None for n in numbers) and len(set(numbers)) == len(numbers):
        return _counted([n for n in numbers if n is not None], f"the frame number in the {what}")
    ids = [i.image_id for i in images]
    if ids and all(n is not None for n in ids):
        return _counted([n for n in ids if n is not None], "image id")
    example = next((i.name for i, n in zip(images, numbers, strict=True) if n is None), "")
    raise GroundTruthError(
        f"cannot tell which video frame each label belongs to: {what} {example!r} carries no frame number; "
        "name the labels after their frames (frame_000123.jpg, 0-based), give COCO images a frame_index, "
        "or replay the image folder the labels were made on"
    )


def place(
    images: Sequence[LabelledImage], recording: Recording | None, offset: int, what: str, stem_only: bool = False
) -> tuple[list[int | None], Matching]:
    """The 0-based frame index of each labelled image (None: no frame of the recording), after
    `offset`, and the counts: by file name in an image folder, by the video rules otherwise."""
    if recording is not None and recording.names is not None:
        index = FrameNames(recording.names)
        found: list[int | None] = [index.find(i.name, stem_only) for i in images]
        rule = f"{what} against the folder's image names"
    else:
        indices, rule = video_indices(images, what)
        found = list(indices)
    return settle([i.name for i in images], found, rule, recording, offset)


def settle(
    names: Sequence[str], found: Sequence[int | None], rule: str, recording: Recording | None, offset: int
) -> tuple[list[int | None], Matching]:
    """Shift the found frame indices by `offset`, drop those outside the recording, and count.
    Two labelled images on one frame are refused: which one holds would be arbitrary."""
    frames = recording.frames if recording is not None else None
    placed: list[int | None] = []
    for position in found:
        shifted = None if position is None else position + offset
        in_range = shifted is not None and shifted >= 0 and (frames is None or shifted < frames)
        placed.append(shifted if in_range else None)
    owner: dict[int, str] = {}
    for name, frame in zip(names, placed, strict=True):
        if frame is None:
            continue
        if frame in owner:
            raise GroundTruthError(
                f"labels {owner[frame]!r} and {name!r} both belong to frame {frame} (0-based) by {rule}; "
                "a frame may be labelled once: remove the duplicate or give the images distinct names"
            )
        owner[frame] = name
    unmatched = sorted((n for n, f in zip(names, placed, strict=True) if f is None), key=natural_key)
    matching = Matching(rule, len(names), len(owner), frames, len(owner), offset, unmatched=unmatched[:_EXAMPLES])
    return placed, matching


def _fix(matching: Matching, recording: Recording) -> str:
    if matching.rule.startswith("MOT"):
        return (
            "MOT frame n is the recording's n-th frame (of an image folder: its n-th image in natural order); "
            "check that the labels were made on this recording and that it holds all of its frames"
        )
    if recording.names is not None:
        names = recording.names
        shown = ", ".join(names[:3]) + (f" … {names[-1]}" if len(names) > 3 else "")
        return (
            f"the folder holds {shown}; make the labels' file names those of the folder's images (COCO "
            "file_name, YOLO label file stems), or check that the labels were made on this recording"
        )
    if matching.rule == "frame_index":
        return "frame_index is the 0-based frame of the video: check it, and that the labels were made on this video"
    return (
        "give COCO images a frame_index (0-based video frame), or name them after their frames "
        "(frame_000123.jpg), and check that the labels were made on this video"
    )


def check_matching(matching: Matching, recording: Recording) -> None:
    """Refuse labels of which fewer than MIN_MATCHED found a frame (before anything is scored)."""
    if matching.labelled and matching.fraction >= MIN_MATCHED:
        return
    missing = matching.labelled - matching.matched
    unmatched = ""
    if matching.unmatched:
        more = " …" if missing > len(matching.unmatched) else ""
        unmatched = f" (without a frame: {', '.join(matching.unmatched)}{more})"
    raise LabelMismatchError(
        f"the labels do not line up with {recording.path}: {matching.summary()}, under the "
        f"{100 * MIN_MATCHED:.0f} % needed{unmatched}. Fix: {_fix(matching, recording)}; "
        "if every label is off by the same number of frames, --gt-offset N moves them N frames later",
        matching,
    )
