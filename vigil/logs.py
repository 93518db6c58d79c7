"""Logging set-up for vigil processes: one line per event, secrets filtered on every handler, and
repeated warnings folded into a count per minute.

Repeated warnings: an event that can happen once per record or per retry (a dead letter, a stale
frame, a webhook retry, a camera's failed reconnect) is logged with `log_repeated(log, WARNING,
reason, camera, msg, *args)`. The first event of each (logger, reason, camera) is logged as it
is; the next ones within `REPEAT_WINDOW_S` are only counted, and one line then says how many
there were, with the latest message. The metrics keep exact counts; the log stays readable.

    log_repeated(log, logging.WARNING, "unknown_camera", "ghost", "dead-lettered %s: %s", ref, reason)
"""

from __future__ import annotations

import atexit
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

from pydantic import BaseModel, SecretStr

from vigil.config import VigilConfig
from vigil.redact import SecretFilter, url_secrets

REPEAT_WINDOW_S = 60.0
# Third-party loggers whose warnings repeat by the hundred (kafka-python marks the coordinator
# dead on every retry while a fresh broker elects one), folded like vigil's own repeats.
FOLDED_LOGGERS = ("kafka", "native")
_SUMMARY = "vigil_repeat_summary"  # LogRecord attribute of the count lines, which pass unfolded

_FILTER = SecretFilter()


def config_secrets(config: VigilConfig) -> list[str]:
    """Every secret value in a loaded config, so the log filter can mask it wherever it appears.

    A camera URL is a secret as a whole, but its host and path are useful in logs: for it only the
    password is registered (the URL redactor masks it wherever a URL is printed). A webhook URL
    often carries its token in the path, so its path and query are registered too."""
    found: list[str] = []
    webhook_urls = {hook.url.get_secret_value() for hook in config.alerts.webhooks}
    # A recording's path is typed as a camera url but is no secret: masking it would hide which
    # file is missing.
    file_paths = {c.url.get_secret_value() for c in config.cameras if "://" not in c.url.get_secret_value()}

    def walk(value: object) -> None:
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            if "://" in secret:
                found.extend(url_secrets(secret, path_is_secret=secret in webhook_urls))
            elif secret not in file_paths:
                found.append(secret)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))

    walk(config)
    return found


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stderr` is when a record is emitted, not when the handler was made:
    the native-log capture (vigil.native_logs) points `sys.stderr` at the terminal while file
    descriptor 2 becomes its pipe, and a handler holding the old stream would feed the pipe."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


def setup_logging(level: str = "INFO", config: VigilConfig | None = None) -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_vigil", False) for h in root.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
        handler.addFilter(_FILTER)
        handler.addFilter(FoldRepeats(FOLDED_LOGGERS))
        handler._vigil = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    # kafka-python logs every reconnect attempt at INFO/WARNING; keep it to real problems.
    logging.getLogger("kafka").setLevel(max(logging.WARNING, root.level))
    if config is not None:
        _FILTER.add(*config_secrets(config))


# ---------------------------------------------------------------------------------------------- repeats


@dataclass
class _Window:
    """One (logger, reason, camera) key: when its minute began, what was folded since."""

    logger: logging.Logger
    started: float
    level: int
    count: int = 0
    last: str = ""


class RepeatedLog:
    """Folds repeats per key: the first event is logged, later ones within `window_s` are counted
    and reported as one line when the window closes (by `flush`, which a daemon thread calls every
    few seconds, and at exit). A key quiet for a whole window is forgotten: its next event is
    logged in full again."""

    def __init__(self, window_s: float = REPEAT_WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        self.window_s = window_s
        self.clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str, str | None], _Window] = {}
        self._ticker: threading.Thread | None = None

    def log(self, logger: logging.Logger, level: int, reason: str, camera: str | None, msg: str, *args: object) -> bool:
        """Log `msg % args` now if it is the first of its key in this window (returns True), else count it."""
        if not logger.isEnabledFor(level):
            return False
        return self.admit(logger, level, reason, camera, lambda: msg % args if args else msg, msg, args)

    def admit(
        self,
        logger: logging.Logger,
        level: int,
        reason: str,
        camera: str | None,
        render: Callable[[], str],
        msg: str | None = None,
        args: tuple[object, ...] = (),
    ) -> bool:
        """Count one event; True when the caller should let it through (the first of its window).
        With `msg`, a first event is logged here; without, the caller emits it (a logging filter)."""
        key = (logger.name, reason, camera)
        now = self.clock()
        due = self._due(now)
        with self._lock:
            window = self._windows.get(key)
            first = window is None
            if window is None:
                self._windows[key] = _Window(logger, now, level)
            else:
                window.count += 1
                window.level = max(window.level, level)
                window.last = render()
        self._emit(due)
        if first and msg is not None:
            logger.log(level, msg, *args)
        self._start_ticker()
        return first

    def forget(self, camera: str, logger: logging.Logger | None = None) -> None:
        """Drop the windows of `camera` without reporting them (its recovery line says what happened)."""
        with self._lock:
            for key in [k for k in self._windows if k[2] == camera and (logger is None or k[0] == logger.name)]:
                del self._windows[key]

    def flush(self, force: bool = False) -> None:
        """Report the windows that closed (all that counted something, with `force`)."""
        self._emit(self._due(self.clock(), force))

    def _due(self, now: float, force: bool = False) -> list[tuple[_Window, float]]:
        due: list[tuple[_Window, float]] = []
        with self._lock:
            for key, window in list(self._windows.items()):
                elapsed = now - window.started
                if elapsed < self.window_s and not (force and window.count):
                    continue
                if window.count:
                    due.append(
                        (_Window(window.logger, window.started, window.level, window.count, window.last), elapsed)
                    )
                    self._windows[key] = _Window(window.logger, now, window.level)
                else:
                    del self._windows[key]
        return due

    def _emit(self, due: list[tuple[_Window, float]]) -> None:
        for window, elapsed in due:
            more = "1 more like this" if window.count == 1 else f"{window.count} more like this"
            window.logger.log(
                window.level,
                "%s [%s in the last %d s]",
                window.last,
                more,
                max(1, round(elapsed)),
                extra={_SUMMARY: True},
            )

    def _start_ticker(self) -> None:
        if self._ticker is not None:
            return
        with self._lock:
            if self._ticker is not None:
                return
            self._ticker = threading.Thread(target=self._tick, name="vigil-log-repeats", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        step = min(5.0, self.window_s / 6)
        while True:
            time.sleep(step)
            self.flush()


class FoldRepeats(logging.Filter):
    """A handler filter folding the warnings of the named loggers (and their children) by message
    template, through the process's `RepeatedLog`. Count lines and vigil's own loggers pass."""

    def __init__(self, prefixes: tuple[str, ...], repeats: RepeatedLog | None = None) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.repeats = repeats

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or getattr(record, _SUMMARY, False):
            return True
        if not any(record.name == p or record.name.startswith(p + ".") for p in self.prefixes):
            return True
        repeats = self.repeats or REPEATS
        logger = logging.getLogger(record.name)
        return repeats.admit(logger, record.levelno, str(record.msg), None, record.getMessage)


REPEATS = RepeatedLog()
atexit.register(REPEATS.flush, True)


def log_repeated(logger: logging.Logger, level: int, reason: str, camera: str | None, msg: str, *args: object) -> bool:
    """`logger.log(level, msg, *args)` once per (reason, camera) and minute, then a count; see the module doc."""
    return REPEATS.log(logger, level, reason, camera, msg, *args)
