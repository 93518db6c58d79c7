"""`vigil tune`'s object filter keys (`objects.<class>.min_score` / `.threshold`): where their defaults
come from, how a tuned value reaches the engine, and the snippet that carries the whole entry."""

from __future__ import annotations

from vigil.config import VigilConfig
from vigil.eval.pipeline import choose_target
from vigil.eval.search import Fold
from vigil.eval.tune import TuneResult, apply, configured, tuned_objects


def config() -> VigilConfig:
    return VigilConfig.model_validate(
        {
            "objects": {"filters": {"default": {"min_score": 0.3}, "person": {"min_area": 0.002, "threshold": 0.6}}},
            "cameras": [
                {
                    "id": "street",
                    "kind": "replay",
                    "url": "x.mp4",
                    "objects": {"filters": {"car": {"min_score": 0.5}}, "masks": [
                        {"name": "statue", "polygon": [[0, 0], [9, 0], [9, 9]]}]},
                }
            ],
            "alerts": {"rules": [{"name": "r", "classes": ["person", "dog"]}]},
        }
    )  # fmt: skip


def test_defaults_are_the_cameras_merged_filters_per_rule_class() -> None:
    cfg = config()
    target = choose_target(cfg, "x.mp4", None, None)
    setting = configured(cfg, target.rule, target.camera)
    assert setting["objects.person.threshold"] == 0.6 and setting["objects.person.min_score"] == 0.0
    assert setting["objects.dog.min_score"] == 0.3 and setting["objects.dog.threshold"] == 0.0  # from `default`
    assert "objects.car.min_score" not in setting  # not a class of the rule


def test_a_tuned_value_reaches_the_camera_with_the_rest_of_its_entry() -> None:
    cfg = config()
    target = choose_target(cfg, "x.mp4", None, None)
    assert target.rule is not None
    setting = configured(cfg, target.rule, target.camera) | {
        "objects.person.threshold": 0.7,
        "objects.dog.min_score": 0.5,
    }
    merged = cfg.camera_objects(target.camera)
    tuned = tuned_objects(merged, setting)
    person, dog = tuned.filters["person"], tuned.filters["dog"]
    assert (person.min_area, person.threshold) == (0.002, 0.7)  # the global entry, with the tuned threshold
    assert dog.min_score == 0.5 and tuned.filters["car"].min_score == 0.5 and tuned.masks == merged.masks
    alerts, camera = apply(cfg.alerts, target.rule, setting, target.camera, merged)
    assert camera.objects == tuned and alerts.rules[0].cameras == ["street"]


def test_snippet_writes_the_whole_entry_under_the_camera() -> None:
    default = {"detect.conf_threshold": 0.3, "detect.iou_threshold": 0.45, "objects.person.threshold": 0.6}
    tuned = {**default, "objects.person.threshold": 0.7}
    fold = Fold("a.mp4", ("b.mp4",), {"event_f1": 0.9}, {"event_f1": 0.95}, tuned)
    result = TuneResult(["a.mp4", "b.mp4"], "f1", "", default, tuned, {}, {}, "r", [fold], True, "recommended",
                        "street", {"person": {"min_area": 0.002, "threshold": 0.7}})  # fmt: skip
    assert result.changes() == {"objects.person.threshold": 0.7}
    snippet = result.snippet()
    assert "cameras:  # merge into the camera's entry\n  - id: street\n    objects:\n      filters:\n" in snippet
    assert snippet.endswith("        person: {min_area: 0.002, threshold: 0.7}")
