"""Alerts test fixtures: a webhook secret and a programmable loopback receiver."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from alerts_receiver import Receiver

from alerts.cli import new_secret


@pytest.fixture
def alerts_secret() -> str:
    return new_secret()


@pytest.fixture
def alerts_receiver(alerts_secret: str) -> Iterator[Receiver]:
    receiver = Receiver(alerts_secret)
    yield receiver
    receiver.stop()
