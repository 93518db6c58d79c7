"""Server-sent events: a hub that threads publish to and each `GET /api/events` client reads from.

Publishers (the Kafka follower threads) never block on a client: each client has a bounded queue
on its own event loop, and a client that falls behind loses its oldest `frame` events first (the
newest frame is the one worth drawing); alert and camera events are kept while there is room.
A client that disconnects is removed by its own generator's `finally`, so nothing leaks.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import Gauge

CLIENTS = Gauge("vigil_web_sse_clients", "Connected server-sent event clients")
QUEUE_SIZE = 256
PING_S = 15.0


@dataclass(eq=False)
class Subscriber:
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[tuple[str, str]]
    frames: bool = True
    cameras: frozenset[str] | None = None
    dropped: int = 0

    def wants(self, kind: str, camera: str | None) -> bool:
        if kind != "frame":
            return True
        return self.frames and (self.cameras is None or camera in self.cameras)

    def offer(self, item: tuple[str, str]) -> None:
        """Runs on the subscriber's loop."""
        if self.queue.full():
            self.dropped += 1
            if item[0] == "frame":
                return
            try:
                self.queue.get_nowait()  # make room for an alert or camera change
            except asyncio.QueueEmpty:
                return
        self.queue.put_nowait(item)


@dataclass
class EventHub:
    _subscribers: set[Subscriber] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, kind: str, data: dict[str, Any], camera: str | None = None) -> None:
        """From any thread: send one event to every subscriber that wants it."""
        with self._lock:
            targets = [s for s in self._subscribers if s.wants(kind, camera)]
        if not targets:
            return
        item = (kind, json.dumps(data, separators=(",", ":"), allow_nan=False))
        for subscriber in targets:
            try:
                subscriber.loop.call_soon_threadsafe(subscriber.offer, item)
            except RuntimeError:
                pass  # that client's loop has closed: its generator's finally removes it

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._subscribers)

    async def stream(self, frames: bool, cameras: frozenset[str] | None) -> AsyncIterator[str]:
        """The text of an event stream for one client, until it disconnects (cancels us)."""
        subscriber = Subscriber(asyncio.get_running_loop(), asyncio.Queue(QUEUE_SIZE), frames, cameras)
        with self._lock:
            self._subscribers.add(subscriber)
        CLIENTS.inc()
        try:
            yield "retry: 2000\n\n"
            while True:
                try:
                    kind, data = await asyncio.wait_for(subscriber.queue.get(), PING_S)
                except TimeoutError:
                    kind, data = "ping", "{}"
                yield f"event: {kind}\ndata: {data}\n\n"
        finally:
            with self._lock:
                self._subscribers.discard(subscriber)
            CLIENTS.dec()
