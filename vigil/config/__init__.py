"""vigil's configuration: one YAML file, validated by strict pydantic models.

`load_config(path, env)` returns a `VigilConfig` or raises `ConfigError` listing every problem
with its YAML key path and line. `${NAME}` (or `${NAME:-default}`) in any string is replaced by
the environment variable from the `env` mapping the caller passes, so secrets stay out of files.
"""

from __future__ import annotations

import difflib
from typing import Literal

from pydantic import Field

from vigil.coco import COCO_CLASSES
from vigil.config.alerts import AlertsConfig, RuleConfig, TrackerConfig, WebhookConfig
from vigil.config.base import Section
from vigil.config.cameras import CameraConfig, MotionConfig, MotionMaskConfig, ReplayConfig, ZoneConfig
from vigil.config.detect import DetectConfig, StationaryConfig
from vigil.config.kafka import (
    ConsumerConfig,
    EmbeddedBrokerConfig,
    KafkaConfig,
    ProducerConfig,
    TopicConfig,
    TopicsConfig,
)
from vigil.config.objects import (
    DEFAULT_CLASS,
    CameraObjectsConfig,
    ObjectFilterConfig,
    ObjectMaskConfig,
    ObjectsConfig,
    camera_objects,
)
from vigil.config.web import WebConfig, WebTokenConfig, WebUserConfig, web_issues
from vigil.errors import ConfigIssue


class MetricsConfig(Section):
    enabled: bool = Field(True, title="Serve Prometheus /metrics, /healthz and /readyz")
    host: str = Field("127.0.0.1", title="Listen address of the metrics server")
    port: int = Field(
        9400, ge=0, le=65535, title="Port of the first process; others take the next ports (0: any free port)"
    )


class VigilConfig(Section):
    kafka: KafkaConfig = Field(default_factory=KafkaConfig, title="Kafka connection")
    topics: TopicsConfig = Field(default_factory=TopicsConfig, title="Topic names and partitions")
    cameras: list[CameraConfig] = Field(default_factory=list, title="Cameras and recordings")
    objects: ObjectsConfig = Field(
        default_factory=ObjectsConfig,
        title="Object filters and score history of every camera (cameras[].objects merge over it)",
    )
    detect: DetectConfig = Field(default_factory=DetectConfig, title="Detection functions")
    alerts: AlertsConfig = Field(default_factory=AlertsConfig, title="Alert aggregator and webhooks")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, title="Metrics and health endpoints")
    web: WebConfig = Field(default_factory=WebConfig, title="Review service: alert store, media, console login")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", title="Log level")

    def camera(self, camera_id: str) -> CameraConfig | None:
        return next((c for c in self.cameras if c.id == camera_id), None)

    def camera_objects(self, camera: CameraConfig) -> CameraObjectsConfig:
        """The camera's object filters and masks, merged over the global `objects`."""
        return camera_objects(self.objects, camera.objects)

    def class_names(self) -> tuple[str, ...]:
        """Class names rules are checked against: the override in `detect`, else COCO's 80."""
        return tuple(self.detect.class_names) if self.detect.class_names else COCO_CLASSES


def _class_issues(
    key: str, names: list[str], known: set[str], indexed: bool = False, allow_default: bool = False
) -> list[ConfigIssue]:
    """Class names that the model does not have, each at its key (`key[i]` for a list, `key.name` for a mapping)."""
    issues = []
    for index, class_name in enumerate(names):
        if class_name in known or (allow_default and class_name == DEFAULT_CLASS):
            continue
        close = difflib.get_close_matches(class_name, sorted(known), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        also = f", or `{DEFAULT_CLASS}` for every class without an entry" if allow_default else ""
        issues.append(
            ConfigIssue(
                f"{key}[{index}]" if indexed else f"{key}.{class_name}",
                f"unknown class {class_name!r}; {hint}classes are the model's (COCO by default; "
                f"set detect.class_names for a custom model){also}",
            )
        )
    return issues


def reference_issues(config: VigilConfig) -> list[ConfigIssue]:
    """Cross-section checks (names that refer to other sections), each pinned to its key."""
    issues: list[ConfigIssue] = []
    ids = [c.id for c in config.cameras]
    for index, camera_id in enumerate(ids):
        if ids.index(camera_id) != index:
            issues.append(ConfigIssue(f"cameras[{index}].id", f"camera id {camera_id!r} is used twice"))
    known_classes = set(config.class_names())
    issues += _class_issues("objects.filters", list(config.objects.filters), known_classes, allow_default=True)
    for c_index, camera in enumerate(config.cameras):
        where = f"cameras[{c_index}].objects"
        issues += _class_issues(f"{where}.filters", list(camera.objects.filters), known_classes, allow_default=True)
        for m_index, mask in enumerate(camera.objects.masks):
            issues += _class_issues(f"{where}.masks[{m_index}].classes", mask.classes, known_classes, indexed=True)
    rule_names = {r.name for r in config.alerts.rules}
    for r_index, rule in enumerate(config.alerts.rules):
        where = f"alerts.rules[{r_index}]"
        for c_index, camera_id in enumerate(rule.cameras):
            if camera_id not in ids:
                issues.append(ConfigIssue(f"{where}.cameras[{c_index}]", f"unknown camera {camera_id!r}; known: {ids}"))
        if rule.zone is not None:
            targets = [c for c in config.cameras if not rule.cameras or c.id in rule.cameras]
            lacking = [c.id for c in targets if c.zone(rule.zone) is None]
            if lacking:
                issues.append(
                    ConfigIssue(
                        f"{where}.zone",
                        f"zone {rule.zone!r} is not defined on camera(s) {lacking}; add it under "
                        "cameras[].zones or list only cameras that have it in the rule's cameras",
                    )
                )
        issues += _class_issues(f"{where}.classes", rule.classes, known_classes, indexed=True)
    for w_index, hook in enumerate(config.alerts.webhooks):
        for r_index, rule_name in enumerate(hook.rules):
            if rule_name not in rule_names:
                issues.append(
                    ConfigIssue(
                        f"alerts.webhooks[{w_index}].rules[{r_index}]",
                        f"unknown rule {rule_name!r}; defined rules: {sorted(rule_names)}",
                    )
                )
    for key, wait_ms in (
        ("detect.fetch_wait_ms", config.detect.fetch_wait_ms),
        ("alerts.fetch_wait_ms", config.alerts.fetch_wait_ms),
    ):
        # kafka-python refuses a consumer whose fetch wait is not below its request timeout, at the stage's start.
        if wait_ms >= config.kafka.request_timeout_ms:
            issues.append(
                ConfigIssue(
                    key,
                    f"{key} ({wait_ms}) must be less than kafka.request_timeout_ms "
                    f"({config.kafka.request_timeout_ms}); lower it or raise the timeout",
                )
            )
    issues.extend(web_issues(config.web))
    return issues


__all__ = [
    "AlertsConfig",
    "CameraConfig",
    "ConsumerConfig",
    "DetectConfig",
    "EmbeddedBrokerConfig",
    "KafkaConfig",
    "CameraObjectsConfig",
    "MetricsConfig",
    "MotionConfig",
    "MotionMaskConfig",
    "ObjectFilterConfig",
    "ObjectMaskConfig",
    "ObjectsConfig",
    "ProducerConfig",
    "ReplayConfig",
    "RuleConfig",
    "StationaryConfig",
    "TopicConfig",
    "TopicsConfig",
    "TrackerConfig",
    "VigilConfig",
    "WebConfig",
    "WebTokenConfig",
    "WebUserConfig",
    "WebhookConfig",
    "ZoneConfig",
    "camera_objects",
    "reference_issues",
]
