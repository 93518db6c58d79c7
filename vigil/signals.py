"""Graceful stop for every long-running vigil process: the first SIGINT/SIGTERM asks the process
to finish what it holds (flush, commit) and stop; a second one interrupts at once."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType

from vigil.errors import VigilError

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


def guarded(
    name: str, target: Callable[[], None], stop: threading.Event, failures: list[str], logger: logging.Logger
) -> Callable[[], None]:
    """`target` wrapped for a part of a process (a thread, or the main loop): when it ends, for any reason,
    `stop` is set, so the whole process stops and its supervisor restarts it rather than running on
    without that part. A `VigilError` is logged and recorded in `failures` by name; any other exception
    (its traceback printed as it propagates) is recorded as `<name>: crashed`."""

    def run() -> None:
        finished = False
        try:
            target()
            finished = True
        except VigilError as exc:
            finished = True
            failures.append(f"{name}: {exc}")
            logger.error("%s stopped: %s", name, exc)
        finally:
            if not finished:
                failures.append(f"{name}: crashed")
            stop.set()

    return run
