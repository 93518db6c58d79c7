"""Child processes of `vigil up` and `vigil eval`: free loopback ports and process-group signals."""

from __future__ import annotations

import os
import signal
import socket


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def port_free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def signal_group(pid: int, sig: signal.Signals) -> None:
    """Signal the process group a child leads (children run in sessions of their own)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass  # it exited between poll() and the signal: what stopping wanted anyway
