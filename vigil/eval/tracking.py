"""Multi-object tracking scores of predicted tracks against ground-truth identities: CLEAR MOT (MOTA,
MOTP, ID switches, fragmentations, mostly tracked / lost), the identity scores (IDF1, IDP, IDR) and
HOTA (DetA, AssA, LocA, averaged over localisation thresholds alpha 0.05..0.95).

Pure numpy / scipy. Each figure follows its reference implementation, and the tests check that it
agrees with them to 1e-3 on real tracks:

* CLEAR MOT and the identity scores as `motmetrics` (1.4.0) computes them, with a hit at IoU >= 0.5:
  per frame, a ground-truth object keeps the track it was matched to last if they still overlap;
  the rest are assigned by minimum total distance (1 - IoU) among the pairs that overlap. A switch
  is a ground-truth object matched to a track other than its last one. MOTP here is the mean IoU of
  the matches (motmetrics reports 1 - that, a distance). IDF1 comes from the one-to-one assignment
  of ground-truth ids to track ids that maximises the frames where they overlap.
* HOTA as `trackeval` (1.3.0) computes it (Luiten et al., IJCV 2021).

Ground-truth boxes marked `data["ignore"]` (crowds, reflections) are neither objects nor misses, and
a predicted box that overlaps no real object but lies on an ignore region (half of its own area) is
dropped before scoring, as the detection scores do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import linear_sum_assignment

from vigil.detections import Detections
from vigil.errors import ContractError
from vigil.geometry import box_iou

FloatMatrix = npt.NDArray[np.float64]
# trackeval's localisation thresholds: 0.05, 0.10, ..., 0.95.
HOTA_ALPHAS = np.arange(0.05, 0.99, 0.05)
MOSTLY_TRACKED, MOSTLY_LOST = 0.8, 0.2


@dataclass(frozen=True)
class TrackingScores:
    """Scores of one sequence. Counts are boxes (object-frames) unless named otherwise."""

    frames: int
    gt_boxes: int
    gt_ids: int
    predicted_boxes: int
    predicted_ids: int
    iou: float
    mota: float
    motp: float
    matches: int
    misses: int
    false_positives: int
    id_switches: int
    fragmentations: int
    mostly_tracked: int
    partially_tracked: int
    mostly_lost: int
    idf1: float
    idp: float
    idr: float
    hota: float
    deta: float
    assa: float
    loca: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _Frame:
    gt_ids: npt.NDArray[np.int64]
    pred_ids: npt.NDArray[np.int64]
    iou: FloatMatrix  # (gt, pred), 0 where the classes differ


def _frame(gt: Detections, pred: Detections, number: int, iou_threshold: float) -> _Frame:
    if gt.tracker_id is None:
        raise ContractError(f"ground truth of frame {number} has no tracker_id (identities are needed to score tracks)")
    if pred.tracker_id is None:
        raise ContractError(f"predictions of frame {number} have no tracker_id; pass the tracker's output")
    if len(np.unique(pred.tracker_id)) != len(pred):
        raise ContractError(f"predictions of frame {number} repeat a tracker_id: {pred.tracker_id.tolist()}")
    ignore = gt.data["ignore"] if "ignore" in gt.data else np.zeros(len(gt), bool)
    real, regions = gt[~ignore], gt.xyxy[ignore]
    iou = box_iou(real.xyxy, pred.xyxy).astype(np.float64)
    iou[real.class_id[:, None] != pred.class_id[None, :]] = 0.0
    if len(regions) and len(pred):
        lt = np.maximum(pred.xyxy[:, None, :2], regions[None, :, :2])
        rb = np.minimum(pred.xyxy[:, None, 2:], regions[None, :, 2:])
        overlap = np.prod(np.clip(rb - lt, 0, None), axis=2) / np.maximum(pred.area()[:, None], 1e-9)
        hits_real = (iou >= iou_threshold).any(axis=0) if len(real) else np.zeros(len(pred), bool)
        keep = hits_real | ~(overlap >= iou_threshold).any(axis=1)
        pred, iou = pred[keep], iou[:, keep]
    assert real.tracker_id is not None and pred.tracker_id is not None
    return _Frame(real.tracker_id, pred.tracker_id, iou)


def _min_cost_pairs(cost: FloatMatrix, valid: npt.NDArray[np.bool_]) -> list[tuple[int, int]]:
    """Most pairs among `valid` ones, then least total cost (motmetrics' expensive-edge trick)."""
    if not valid.any():
        return []
    big = 2 * min(cost.shape) * (np.abs(cost[valid]).max() + 1) + 1
    rows, cols = linear_sum_assignment(np.where(valid, cost, big))
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if valid[r, c]]


@dataclass
class _Clear:
    matches: int = 0
    misses: int = 0
    false_positives: int = 0
    switches: int = 0
    iou_sum: float = 0.0


def _clear(frames: list[_Frame], iou_threshold: float) -> tuple[_Clear, dict[int, list[bool]]]:
    """CLEAR MOT counts, and per ground-truth id whether it was matched in each frame it appears in."""
    counts = _Clear()
    last: dict[int, int] = {}  # gt id -> the track it was last matched to
    tracked: dict[int, list[bool]] = {}
    for f in frames:
        distance = 1.0 - f.iou
        valid = distance <= 1.0 - iou_threshold
        pairs: list[tuple[int, int]] = []
        gt_free, pred_free = np.ones(len(f.gt_ids), bool), np.ones(len(f.pred_ids), bool)
        for i, gid in enumerate(f.gt_ids.tolist()):
            if gid not in last:
                continue
            js = np.flatnonzero(pred_free & (f.pred_ids == last[gid]))
            if js.size and valid[i, js[0]]:
                pairs.append((i, int(js[0])))
                gt_free[i] = pred_free[js[0]] = False
        rest = valid & gt_free[:, None] & pred_free[None, :]
        for i, j in _min_cost_pairs(distance, rest):
            gid, pid = int(f.gt_ids[i]), int(f.pred_ids[j])
            counts.switches += int(gid in last and last[gid] != pid)
            pairs.append((i, j))
            gt_free[i] = pred_free[j] = False
        for i, j in pairs:
            last[int(f.gt_ids[i])] = int(f.pred_ids[j])
            counts.iou_sum += float(f.iou[i, j])
        counts.matches += len(pairs)
        counts.misses += int(gt_free.sum())
        counts.false_positives += int(pred_free.sum())
        for i, gid in enumerate(f.gt_ids.tolist()):
            tracked.setdefault(gid, []).append(not gt_free[i])
    return counts, tracked


def _fragmentations(tracked: Sequence[bool]) -> int:
    """Times a ground-truth object goes from tracked to missed between its first and last match."""
    hits = np.flatnonzero(tracked)
    if hits.size == 0:
        return 0
    span = np.asarray(tracked[hits[0] : hits[-1] + 1], bool)
    return int((span[:-1] & ~span[1:]).sum())


def _identity(frames: list[_Frame], iou_threshold: float) -> tuple[int, int, int]:
    """(IDTP, gt boxes, predicted boxes) of the id-to-id assignment with the most overlapping frames."""
    gt_index = {g: i for i, g in enumerate(sorted({int(g) for f in frames for g in f.gt_ids}))}
    pred_index = {p: i for i, p in enumerate(sorted({int(p) for f in frames for p in f.pred_ids}))}
    overlap = np.zeros((len(gt_index), len(pred_index)))
    for f in frames:
        rows, cols = np.nonzero(1.0 - f.iou <= 1.0 - iou_threshold)
        for r, c in zip(rows.tolist(), cols.tolist(), strict=True):
            overlap[gt_index[int(f.gt_ids[r])], pred_index[int(f.pred_ids[c])]] += 1
    idtp = 0
    if overlap.size:
        rows, cols = linear_sum_assignment(-overlap)
        idtp = int(overlap[rows, cols].sum())
    return idtp, sum(len(f.gt_ids) for f in frames), sum(len(f.pred_ids) for f in frames)


def _hota(frames: list[_Frame]) -> tuple[float, float, float, float]:
    """(HOTA, DetA, AssA, LocA), each averaged over HOTA_ALPHAS, as trackeval's HOTA.eval_sequence."""
    gt_index = {g: i for i, g in enumerate(sorted({int(g) for f in frames for g in f.gt_ids}))}
    pred_index = {p: i for i, p in enumerate(sorted({int(p) for f in frames for p in f.pred_ids}))}
    n_gt_dets, n_pred_dets = sum(len(f.gt_ids) for f in frames), sum(len(f.pred_ids) for f in frames)
    if n_gt_dets == 0 or n_pred_dets == 0:
        return 0.0, 0.0, 0.0, 1.0
    ids = [
        (
            np.array([gt_index[int(g)] for g in f.gt_ids], np.int64),
            np.array([pred_index[int(p)] for p in f.pred_ids], np.int64),
        )
        for f in frames
    ]
    eps = np.finfo(float).eps
    potential = np.zeros((len(gt_index), len(pred_index)))
    gt_count, pred_count = np.zeros((len(gt_index), 1)), np.zeros((1, len(pred_index)))
    for f, (g, p) in zip(frames, ids, strict=True):
        sim = f.iou
        denom = sim.sum(0)[None, :] + sim.sum(1)[:, None] - sim
        sim_iou = np.where(denom > eps, sim / np.where(denom > eps, denom, 1.0), 0.0)
        potential[g[:, None], p[None, :]] += sim_iou
        gt_count[g] += 1
        pred_count[0, p] += 1
    alignment = potential / (gt_count + pred_count - potential)
    tp, fn, fp, loc = (np.zeros(len(HOTA_ALPHAS)) for _ in range(4))
    matched = np.zeros((len(HOTA_ALPHAS), len(gt_index), len(pred_index)))
    for f, (g, p) in zip(frames, ids, strict=True):
        if len(g) == 0 or len(p) == 0:
            fp += len(p)
            fn += len(g)
            continue
        rows, cols = linear_sum_assignment(-(alignment[g[:, None], p[None, :]] * f.iou))
        sims = f.iou[rows, cols]
        for a, alpha in enumerate(HOTA_ALPHAS):
            ok = sims >= alpha - eps
            tp[a] += ok.sum()
            fn[a] += len(g) - ok.sum()
            fp[a] += len(p) - ok.sum()
            loc[a] += sims[ok].sum()
            matched[a, g[rows[ok]], p[cols[ok]]] += 1
    assa = np.array(
        [
            np.sum(m * (m / np.maximum(1, gt_count + pred_count - m))) / max(1.0, t)
            for m, t in zip(matched, tp, strict=True)
        ]
    )
    deta = tp / np.maximum(1, tp + fn + fp)
    loca = np.maximum(1e-10, loc) / np.maximum(1e-10, tp)
    return float(np.sqrt(deta * assa).mean()), float(deta.mean()), float(assa.mean()), float(loca.mean())


def score_tracking(
    gt: Mapping[int, Detections],
    predictions: Mapping[int, Detections],
    frame_numbers: Sequence[int],
    iou_threshold: float = 0.5,
) -> TrackingScores:
    """Score tracks over `frame_numbers` (the frames that were tracked; a frame missing from either
    mapping has no boxes there). Both sides carry `tracker_id`; `class_id`s are in one space (a
    prediction only matches ground truth of its class)."""
    if not 0.0 < iou_threshold <= 1.0:
        raise ContractError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    empty = Detections(
        np.empty((0, 4), np.float32), np.empty(0, np.float32), np.empty(0, np.int32), np.empty(0, np.int64)
    )
    frames = [_frame(gt.get(n, empty), predictions.get(n, empty), n, iou_threshold) for n in sorted(set(frame_numbers))]
    clear, tracked = _clear(frames, iou_threshold)
    idtp, n_gt, n_pred = _identity(frames, iou_threshold)
    hota, deta, assa, loca = _hota(frames)
    ratios = [sum(t) / len(t) for t in tracked.values()]
    return TrackingScores(
        frames=len(frames),
        gt_boxes=n_gt,
        gt_ids=len(tracked),
        predicted_boxes=n_pred,
        predicted_ids=len({int(p) for f in frames for p in f.pred_ids}),
        iou=iou_threshold,
        mota=1.0 - (clear.misses + clear.false_positives + clear.switches) / n_gt if n_gt else 0.0,
        motp=clear.iou_sum / clear.matches if clear.matches else 0.0,
        matches=clear.matches,
        misses=clear.misses,
        false_positives=clear.false_positives,
        id_switches=clear.switches,
        fragmentations=sum(_fragmentations(t) for t in tracked.values()),
        mostly_tracked=sum(r >= MOSTLY_TRACKED for r in ratios),
        partially_tracked=sum(MOSTLY_LOST <= r < MOSTLY_TRACKED for r in ratios),
        mostly_lost=sum(r < MOSTLY_LOST for r in ratios),
        idf1=2 * idtp / (n_gt + n_pred) if n_gt + n_pred else 0.0,
        idp=idtp / n_pred if n_pred else 0.0,
        idr=idtp / n_gt if n_gt else 0.0,
        hota=hota,
        deta=deta,
        assa=assa,
        loca=loca,
    )
