"""`vigil topics`: create the configured topics."""

from __future__ import annotations

import argparse

from vigil.kafka import ensure_topics
from vigil.settings import resolve_config


def topics_main(args: argparse.Namespace) -> int:
    config = resolve_config(args.config, args.log_level)
    created = ensure_topics(config.kafka, config.topics)
    for topic in config.topics.all():
        state = "created" if topic.name in created else "exists"
        print(f"{topic.name}: {topic.partitions} partitions ({state})")
    return 0
