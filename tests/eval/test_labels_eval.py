"""`vigil eval` end to end on the labels people have: TUD-Campus as the folder `1.jpg … 71.jpg`,
labelled by MOT gt.txt (the reference), by COCO JSON linked by file name with shuffled ids, and by
YOLO label files, through the real pipeline on the real broker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.eval.labelsets import write_coco, write_frames, write_yolo
from tests.eval.test_eval_run import clip, write_config
from vigil.cli import main
from vigil.eval.groundtruth import load_mot

pytestmark = pytest.mark.broker


@pytest.fixture(scope="module")
def labelled(kafka_bootstrap: str, shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("labels-eval")
    video, gt = clip(shared_data, "TUD-Campus")
    frames = root / "frames"
    write_frames(video, frames)
    mot = load_mot(gt)
    return {
        "root": root,
        "frames": frames,
        "config": write_config(root, kafka_bootstrap),
        "mot": gt,
        "coco": write_coco(mot, root / "campus.json", lambda n: f"images/{n}.jpg"),
        "yolo": write_yolo(mot, root / "yolo"),
        "late": write_coco(mot, root / "late.json", lambda n: f"{n + 2}.jpg"),
    }


def evaluate(labelled: dict[str, Path], labels: str, *extra: str) -> tuple[int, dict[str, Any]]:
    out = labelled["root"] / f"out-{labels}"
    argv = ["eval", "--video", str(labelled["frames"]), "--gt", str(labelled[labels])]
    code = main([*argv, "--config", str(labelled["config"]), "--out", str(out), *extra])
    return code, json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def mot_report(labelled: dict[str, Path]) -> dict[str, Any]:
    code, report = evaluate(labelled, "mot")
    assert code == 0
    return report


@pytest.mark.timeout(600)
def test_coco_by_file_name_scores_like_mot_through_the_pipeline(
    labelled: dict[str, Path], mot_report: dict[str, Any]
) -> None:
    code, report = evaluate(labelled, "coco")
    assert code == 0 and (report["frames_expected"], report["frames_scored"]) == (71, 71)
    matching = report["ground_truth_matching"]
    assert matching["rule"] == "COCO file_name against the folder's image names"
    assert (matching["labelled_images"], matching["matched_images"], matching["frames_with_labels"]) == (71, 71, 71)
    assert matching["alignment"]["best_offset"] == 0 and matching["alignment"]["predictions"] == "bare model"
    reference = mot_report["pipeline"]["overall"]["ap50"]
    assert reference > 0.5 and mot_report["ground_truth_matching"]["rule"].startswith("MOT frame number")
    assert abs(report["pipeline"]["overall"]["ap50"] - reference) <= 0.005
    assert abs(report["bare_model"]["overall"]["ap50"] - mot_report["bare_model"]["overall"]["ap50"]) <= 0.005
    assert report["pipeline"]["overall"]["gt_boxes"] == 359


@pytest.mark.timeout(600)
def test_yolo_labels_score_like_mot_through_the_pipeline(labelled: dict[str, Path], mot_report: dict[str, Any]) -> None:
    code, report = evaluate(labelled, "yolo", "--gt-format", "yolo", "--no-bare")
    assert code == 0 and report["frames_scored"] == 71 and report["bare_model"] is None
    matching = report["ground_truth_matching"]
    assert (matching["matched_images"], matching["labelled_images"]) == (71, 71) and not matching["identities"]
    assert matching["alignment"]["predictions"] == "pipeline"  # --no-bare: the time check uses the pipeline's boxes
    assert any("no track identities" in note for note in report["notes"])
    assert abs(report["pipeline"]["overall"]["ap50"] - mot_report["pipeline"]["overall"]["ap50"]) <= 0.005


@pytest.mark.timeout(600)
def test_shifted_labels_are_refused_before_scoring(labelled: dict[str, Path]) -> None:
    code, report = evaluate(labelled, "late", "--no-bare")
    assert code == 2 and "pipeline" not in report  # refused: nothing was scored
    assert "69 of 71 labelled images" in report["error"] and "--gt-offset -2" in report["error"]
    assert report["ground_truth_matching"]["alignment"]["best_offset"] == -2
