"""Graceful stop for every long-running vigil process: the first SIGINT/SIGTERM asks the process
to finish what it holds (flush, commit) and stop; a second one interrupts at once."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)


@contextmanager
def stop_on_signals(stop: threading.Event, finishing: str = "finishing current work") -> Iterator[None]:
    """Within the block, SIGINT/SIGTERM set `stop`; a second signal raises KeyboardInterrupt.
    The previous handlers are restored afterwards."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.info("%s received: %s, then stopping", signal.Signals(signum).name, finishing)
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
