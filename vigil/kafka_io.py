"""Two costs kafka-python 3.0 pays on every record that vigil has no use for, and the public options that drop them.

* **Client metrics.** A producer and its consumer update about 35 sensors per record (rates, averages and maxima
  per topic, node and request). Nothing reads them: vigil exports its own Prometheus metrics, and kafka-python's
  are only reachable through `client.metrics()`. `metrics_enabled=False` (producer and consumer) skips them.
* **Selector lookups.** kafka-python's event loop registers a socket for every I/O wait and first asks the
  selector whether it already is; the standard library answers "no" with a `KeyError` whose message formats the
  socket's repr twice, each a `getsockname` and a `getpeername` system call. `QuietSelector` answers the same
  without formatting anything; kafka-python takes it through its public `selector` option.

What each costs and what turning them off saved: docs/operations.md (Capacity), measured by
`bench/bench_kafka.py`'s client-overhead part.
"""

from __future__ import annotations

import selectors
from collections.abc import Callable
from typing import Any


class QuietSelector(selectors.DefaultSelector):
    """The platform's default selector, whose `get_key` of an unregistered file object raises a bare `KeyError`
    instead of one whose message holds the object's repr (a socket's costs two system calls).

    It reads the selector's own fd-to-key map, which every selector of the standard library keeps
    (`_BaseSelectorImpl`); a selector without one gets the standard lookup."""

    def get_key(self, fileobj: Any) -> selectors.SelectorKey:
        keys: dict[int, selectors.SelectorKey] | None = getattr(self, "_fd_to_key", None)
        fd_of: Callable[[Any], int] | None = getattr(self, "_fileobj_lookup", None)
        if keys is None or fd_of is None or self.get_map() is None:  # closed (the standard error), or not standard
            return super().get_key(fileobj)
        key = keys.get(fd_of(fileobj))
        if key is None:
            raise KeyError(fileobj)  # the object, not its formatted repr: str() of the error still names it
        return key
