"""Native libraries' own log lines (FFmpeg, OpenCV) go through vigil's logging, never straight to
the terminal.

FFmpeg (inside OpenCV's video I/O) writes `[tcp @ 0x7efd18004d00] Connection to tcp://… failed` and
OpenCV writes `[ WARN:0@3.519] global cap.cpp:212 open VIDEOIO(FFMPEG): …` from C code straight to
file descriptor 2. The libraries' own switches do not cover both: `OPENCV_LOG_LEVEL` /
`cv2.setLogLevel` quiet OpenCV's lines only, and `OPENCV_FFMPEG_LOGLEVEL` moves FFmpeg's lines to
stdout (OpenCV's `printf` callback, losing the `[tcp @ …]` context) where `vigil predict --json`
writes its results. So descriptor 2 becomes a pipe, read by a thread that turns every line into a
log record:

* FFmpeg and OpenCV lines at DEBUG, on the loggers `native.ffmpeg` and `native.opencv`: vigil says
  what they mean in its own words (the one-line camera messages); `--log-level DEBUG` shows them;
  OpenCV's FATAL lines at ERROR;
* any other line (a library vigil does not know) at WARNING on `native`, so nothing is lost.

Python's own `sys.stderr` is pointed at the original descriptor, so tracebacks and vigil's log
lines never pass through the pipe. Every routed line passes the log handler's secret filter, so no
library line can print a camera password. A fatal crash in native code (a segfault) can lose the
last lines still in the pipe; the exit status still tells.
"""

from __future__ import annotations

import io
import logging
import os
import re
import select
import sys
import threading
from types import TracebackType
from typing import TextIO

MAX_LINE = 2000  # longer lines are cut: a library dumping binary must not flood the log
_FFMPEG = re.compile(
    r"^(?:\[[^\]@]{1,80} @ (?:0x)?[0-9a-fA-F]{1,16}\] |\[OPENCV:FFMPEG:\d+\] |\s+Last message repeated)"
)
_OPENCV = re.compile(r"^\[\s*(FATAL|ERROR|WARN|INFO|DEBUG|VERBOSE)(?::\d+)?(?:@[\d.]+)?\]")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def classify(line: str) -> tuple[str, int]:
    """(logger name, level) for one line a native library wrote to stderr."""
    if _FFMPEG.match(line):
        return "native.ffmpeg", logging.DEBUG
    found = _OPENCV.match(line)
    if found:
        return "native.opencv", logging.ERROR if found.group(1) == "FATAL" else logging.DEBUG
    return "native", logging.WARNING


def route(line: str) -> None:
    """Log one native line (without its newline) as `classify` says."""
    text = _ANSI.sub("", line).rstrip("\r\n")
    if not text.strip():
        return
    if len(text) > MAX_LINE:
        text = text[:MAX_LINE] + " …(cut)"
    name, level = classify(text)
    logging.getLogger(name).log(level, "%s", text)


class NativeLogCapture:
    """Descriptor 2 -> pipe -> `route`, for as long as it runs; `stop()` (or leaving the `with`
    block) restores descriptor 2 and `sys.stderr` and routes what is left in the pipe."""

    def __init__(self, fd: int = 2) -> None:
        self.fd = fd
        self._saved: int | None = None
        self._read: int | None = None
        self._python_stderr: TextIO | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

    @property
    def active(self) -> bool:
        return self._saved is not None

    def start(self) -> NativeLogCapture:
        """Start capturing, unless Python's stderr is not descriptor 2 already (a test harness
        captured it; swapping it would hide that harness's output): then nothing changes."""
        if self.active:
            return self
        try:
            if sys.stderr.fileno() != self.fd:
                return self
            sys.stderr.flush()
        except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError
            return self
        saved = os.dup(self.fd)
        read, write = os.pipe()
        os.dup2(write, self.fd)
        os.close(write)
        self._saved, self._read = saved, read
        self._python_stderr = sys.stderr
        encoding = getattr(sys.stderr, "encoding", None) or "utf-8"
        sys.stderr = io.TextIOWrapper(
            io.FileIO(saved, "w", closefd=False), encoding=encoding, errors="backslashreplace", write_through=True
        )
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, args=(read,), name="native-logs", daemon=True)
        self._thread.start()
        return self

    def _run(self, read: int) -> None:
        pending = b""
        while True:
            # Wake now and then so a line without its newline yet is not held for ever.
            ready, _, _ = select.select([read], [], [], 0.5)
            if not ready:
                if pending:
                    route(pending.decode("utf-8", "replace"))
                    pending = b""
                if self._stopping.is_set():
                    return
                continue
            chunk = os.read(read, 65536)
            if not chunk:  # every write end closed
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                route(line.decode("utf-8", "replace"))
            if len(pending) > MAX_LINE:
                route(pending.decode("utf-8", "replace"))
                pending = b""
        if pending:
            route(pending.decode("utf-8", "replace"))

    def stop(self, timeout_s: float = 2.0) -> None:
        if self._saved is None:
            return
        saved, read = self._saved, self._read
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(saved, self.fd)  # closes the pipe's write end: the reader sees the end
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
        if self._python_stderr is not None:
            sys.stderr = self._python_stderr
        self._saved = self._read = None
        os.close(saved)
        if read is not None and (self._thread is None or not self._thread.is_alive()):
            os.close(read)  # else a child process still holds a write end: leave the daemon reader be
        self._thread = None

    def __enter__(self) -> NativeLogCapture:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()
