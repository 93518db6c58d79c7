"""Do the labels line up with the frames in time? The model's AP with the labels shifted by
-2 … +2 frames must peak at 0.

Predictions already exist for every replayed frame (the bare model's, or the pipeline's), so each
offset is one re-scoring, no inference. AP@[.5:.95] is the measure: at 25 fps people move a few
pixels a frame, which AP@0.5 barely sees (on TUD-Campus it even peaks at +1 by noise) while the
tighter IoU thresholds do (AP@[.5:.95] drops 0.015 to 0.02 a frame either side of 0 on both
shared clips).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from vigil.detections import Detections
from vigil.eval.groundtruth import GroundTruth
from vigil.eval.labels_match import LabelMismatchError
from vigil.eval.scoring import score_detections

OFFSETS = (-2, -1, 0, 1, 2)
# A neighbour must beat offset 0 by this much AP@[.5:.95] to count as a shift: a static scene scores
# all offsets alike, and noise of that size must not refuse it.
SHIFT_MARGIN = 0.005
# AP@0.5 this low at every offset: the labels do not describe what is in these frames at all.
UNRELATED_AP50 = 0.05
MIN_FRAMES = 5


def shifted(gt: GroundTruth, numbers: Sequence[int], offset: int) -> GroundTruth:
    """The labels of frames `numbers`, each moved `offset` frames later."""
    frames = {n + offset: gt.frames[n] for n in numbers if n in gt.frames}
    return GroundTruth(frames, gt.class_names, gt.width, gt.height, gt.fps, gt.source, [n + offset for n in numbers])


def comparable_frames(gt: GroundTruth, predictions: Mapping[int, Detections]) -> list[int]:
    """Labelled frames whose every shifted position has predictions, so all offsets score alike."""
    return [n for n in gt.frame_numbers if all(n + d in predictions for d in OFFSETS)]


def offset_scores(
    gt: GroundTruth, predictions: Mapping[int, Detections], model_names: tuple[str, ...], numbers: Sequence[int]
) -> dict[int, tuple[float, float]]:
    """(AP@0.5, AP@[.5:.95]) of the labels of frames `numbers` at each offset."""
    scores = {}
    for offset in OFFSETS:
        overall = score_detections(shifted(gt, numbers, offset), predictions, model_names, 1.0).overall
        scores[offset] = (overall.ap50, overall.ap50_95)
    return scores


def check_alignment(
    gt: GroundTruth, predictions: Mapping[int, Detections], model_names: tuple[str, ...], what: str
) -> list[str]:
    """Score the offsets, keep them in `gt.matching.alignment`, and refuse labels that peak away
    from 0 or match nothing at any offset (`LabelMismatchError`), unless --gt-offset was given, in
    which case the finding is returned as a note. `what` names the predictions (bare model, pipeline)."""
    matching = gt.matching
    if matching is None:
        return []
    common = comparable_frames(gt, predictions)
    boxes = sum(len(gt.boxes(n)) for n in common)
    if len(common) < MIN_FRAMES or boxes == 0:
        note = (
            f"Time check of the labels skipped: {len(common)} labelled frames ({boxes} boxes) have predictions "
            f"on all their neighbours {OFFSETS[0]}…+{OFFSETS[-1]}, under the {MIN_FRAMES} needed "
            "(--fps replays frames apart)."
        )
        matching.alignment = {"checked": False, "note": note}
        return [note]
    scores = offset_scores(gt, predictions, model_names, common)
    best = max(OFFSETS, key=lambda d: (scores[d][1], -abs(d)))
    shift = best != 0 and scores[best][1] - scores[0][1] > SHIFT_MARGIN
    unrelated = max(ap50 for ap50, _ in scores.values()) < UNRELATED_AP50
    table = ", ".join(f"{d:+d}: {scores[d][1]:.3f}" for d in OFFSETS)
    matching.alignment = {
        "checked": True,
        "predictions": what,
        "frames": len(common),
        "ap50_95_by_offset": {str(d): scores[d][1] for d in OFFSETS},
        "ap50_by_offset": {str(d): scores[d][0] for d in OFFSETS},
        "best_offset": best,
        "shifted": shift,
        "unrelated": unrelated,
    }
    if not shift and not unrelated:
        matching.alignment["note"] = f"Labels line up in time: the {what}'s AP@[.5:.95] peaks at offset 0 ({table})."
        return [matching.alignment["note"]]
    if unrelated:
        finding = (
            f"the labels match nothing the {what} finds: AP@0.5 under {UNRELATED_AP50} at every offset "
            f"{OFFSETS[0]}…+{OFFSETS[-1]}, so they are most likely for another recording"
        )
        fix = "check that the labels were made on this recording"
    else:
        edge = " (at the edge: the shift may be larger)" if abs(best) == max(OFFSETS) else ""
        finding = (
            f"the labels look shifted in time: the {what}'s AP@[.5:.95] with the labels moved by "
            f"{OFFSETS[0]}…+{OFFSETS[-1]} frames peaks at {best:+d}{edge}, not 0 ({table})"
        )
        fix = (
            f"if the labels really are {abs(best)} frame{'s' if abs(best) > 1 else ''} "
            f"{'early' if best > 0 else 'late'}, pass --gt-offset {matching.offset + best}; check the numbering "
            "(frame_index is 0-based, MOT frames count from 1) and the file names"
        )
    if matching.offset_given:
        matching.alignment["note"] = (
            f"Warning: {finding}; scored anyway because --gt-offset {matching.offset} was given."
        )
        return [matching.alignment["note"]]
    raise LabelMismatchError(
        f"{finding}. Matching: {matching.summary()}. Fix: {fix}; --gt-offset 0 scores the labels as they are.",
        matching,
    )
