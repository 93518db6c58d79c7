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
from vigil.config.cameras import CameraConfig, MotionConfig, ReplayConfig, ZoneConfig
from vigil.config.detect import DetectConfig, StationaryConfig
from vigil.config.kafka import (
    ConsumerConfig,
    EmbeddedBrokerConfig,
    KafkaConfig,
    ProducerConfig,
    TopicConfig,
    TopicsConfig,
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
    detect: DetectConfig = Field(default_factory=DetectConfig, title="Detection functions")
    alerts: AlertsConfig = Field(default_factory=AlertsConfig, title="Alert aggregator and webhooks")
    metrics: MetricsConfig = Field(default_factory=MetricsConfig, title="Metrics and health endpoints")
    web: WebConfig = Field(default_factory=WebConfig, title="Review service: alert store, media, console login")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", title="Log level")

    def camera(self, camera_id: str) -> CameraConfig | None:
        return next((c for c in self.cameras if c.id == camera_id), None)

    def class_names(self) -> tuple[str, ...]:
        """Class names rules are checked against: the override in `detect`, else COCO's 80."""
        return tuple(self.detect.class_names) if self.detect.class_names else COCO_CLASSES


def reference_issues(config: VigilConfig) -> list[ConfigIssue]:
    """Cross-section checks (names that refer to other sections), each pinned to its key."""
    issues: list[ConfigIssue] = []
    ids = [c.id for c in config.cameras]
    for index, camera_id in enumerate(ids):
        if ids.index(camera_id) != index:
            issues.append(ConfigIssue(f"cameras[{index}].id", f"camera id {camera_id!r} is used twice"))
    known_classes = set(config.class_names())
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
        for k_index, class_name in enumerate(rule.classes):
            if class_name not in known_classes:
                close = difflib.get_close_matches(class_name, sorted(known_classes), n=1)
                hint = f"did you mean {close[0]!r}? " if close else ""
                issues.append(
                    ConfigIssue(
                        f"{where}.classes[{k_index}]",
                        f"unknown class {class_name!r}; {hint}classes are the model's (COCO by default; "
                        "set detect.class_names for a custom model)",
                    )
                )
    for w_index, hook in enumerate(config.alerts.webhooks):
        for r_index, rule_name in enumerate(hook.rules):
            if rule_name not in rule_names:
                issues.append(
                    ConfigIssue(
                        f"alerts.webhooks[{w_index}].rules[{r_index}]",
                        f"unknown rule {rule_name!r}; defined rules: {sorted(rule_names)}",
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
    "MetricsConfig",
    "MotionConfig",
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
    "reference_issues",
]
