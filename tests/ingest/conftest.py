"""Ingest test fixtures: a real GStreamer RTSP server (system Python + gi) and a frames reader."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka import TopicPartition

from vigil.config import VigilConfig
from vigil.contracts import FrameMeta
from vigil.kafka import make_consumer

SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
SYSTEM_PYTHON = "/usr/bin/python3"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RtspServer:
    """One GStreamer RTSP server subprocess. `stop()`/`start()` keep the port, so a restart is
    the same camera coming back; `freeze()`/`thaw()` SIGSTOP/SIGCONT it."""

    def __init__(self, port: int, codec: str, user: str | None, password: str | None) -> None:
        self.port = port
        self.codec = codec
        self.user = user
        self.password = password
        self.proc: subprocess.Popen[str] | None = None

    def url(self, user: str | None = None, password: str | None = None) -> str:
        user, password = user or self.user, password or self.password
        auth = f"{user}:{password}@" if user else ""
        return f"rtsp://{auth}127.0.0.1:{self.port}/test"

    def start(self, timeout_s: float = 20.0) -> None:
        command = [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port), "--codec", self.codec]
        if self.user:
            command += ["--user", self.user, "--password", self.password or ""]
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("READY"):
                return
            if not line and self.proc.poll() is not None:
                break
        self.stop()
        pytest.fail(
            f"RTSP test server did not start on port {self.port} (needs python3-gi, gir1.2-gst-rtsp-server-1.0)"
        )

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def freeze(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)


@pytest.fixture
def rtsp_server() -> Iterator[Callable[..., RtspServer]]:
    """Factory: `rtsp_server(codec="h264", user=None, password=None)` -> a started server."""
    if not Path(SYSTEM_PYTHON).exists():
        pytest.fail(f"{SYSTEM_PYTHON} with python3-gi and gir1.2-gst-rtsp-server-1.0 is needed for rtsp tests")
    servers: list[RtspServer] = []

    def start(codec: str = "h264", user: str | None = None, password: str | None = None) -> RtspServer:
        server = RtspServer(free_port(), codec, user, password)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


class FramesReader:
    """Reads the frames topic from the beginning, all partitions, without a group."""

    def __init__(self, config: VigilConfig) -> None:
        self.topic = config.topics.frames.name
        self.consumer = make_consumer(config.kafka, "test-reader", None)
        partitions = [TopicPartition(self.topic, p) for p in range(config.topics.frames.partitions)]
        self.consumer.assign(partitions)
        self.consumer.seek_to_beginning(*partitions)
        self.records: list[tuple[FrameMeta, bytes, bytes]] = []

    def poll(self, timeout_s: float = 1.0) -> list[tuple[FrameMeta, bytes, bytes]]:
        new = []
        for batch in self.consumer.poll(timeout_ms=int(timeout_s * 1000)).values():
            for record in batch:
                new.append((FrameMeta.from_headers(record.headers), record.key, record.value))
        self.records.extend(new)
        return new

    def wait_for(self, predicate: Callable[[list[tuple[FrameMeta, bytes, bytes]]], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.poll(0.5)
            if predicate(self.records):
                return True
        return False

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def frames_reader() -> Iterator[Callable[[VigilConfig], FramesReader]]:
    readers: list[FramesReader] = []

    def make(config: VigilConfig) -> FramesReader:
        reader = FramesReader(config)
        readers.append(reader)
        return reader

    yield make
    for reader in readers:
        reader.close()
