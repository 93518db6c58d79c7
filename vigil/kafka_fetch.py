"""A workaround for a fetch-session race in kafka-python 3.0 that stalled records by `fetch_max_wait_ms`.

kafka-python 3.0 handles fetch responses on its IO thread while the caller's `poll()` drains them on its own.
When a response with records for partition P lands just before the next fetch request is built (the caller
asked for one at the start of `poll()`), P is left out of that request because its records are still
buffered, and the incremental fetch session (KIP-227) *forgets* P. The broker then holds that request for up
to `fetch_max_wait_ms` (500 ms by default) waiting for data on the other partitions, and P's new records wait
with it: measured here with 4 partitions, one busy, and a poll loop of 5 ms, produce -> consume was p50 12 ms
but p90 267 ms and p99 461 ms (`bench/bench_kafka.py`, latency part). A frame crossed three such hops on
its way to a webhook (frames, detections, alerts).

The fix keeps the session whole: while any of a broker's partitions still has buffered records, no fetch is
sent to that broker (the caller's next `poll()` drains them and sends one fetch with every partition: the
Java consumer's order of things), and a `poll()` that found nothing in flight because of that drains again
at once instead of sleeping `retry_backoff_ms`. Only private attributes of kafka-python's `Fetcher` are
touched; if a release renames them, `keep_fetch_sessions_whole` logs that and leaves the consumer as it is
(correct, only slower), and tests/core/test_kafka_fetch.py fails on the latency it measures.
"""

from __future__ import annotations

import logging
import types
from typing import Any

from kafka import KafkaConsumer

log = logging.getLogger(__name__)

_NEEDED = ("_fetchable_partitions", "fetch_records", "_select_read_replica", "_completed_fetches", "_subscriptions")


def keep_fetch_sessions_whole(consumer: KafkaConsumer) -> bool:
    """Patch `consumer`'s fetcher (see the module's doc); returns False, after logging why, if it cannot."""
    fetcher: Any = getattr(consumer, "_fetcher", None)
    missing = [name for name in _NEEDED if not hasattr(fetcher, name)]
    if fetcher is None or missing:
        log.warning(
            "kafka-python's fetcher has no %s: records may wait up to kafka.consumer.fetch_max_wait_ms when "
            "partitions are busy at different times (lower it to bound that)",
            ", ".join(missing) or "_fetcher",
        )
        return False
    original_fetchable = fetcher._fetchable_partitions
    original_fetch_records = fetcher.fetch_records

    def buffered(self: Any) -> set[Any]:
        """Partitions whose fetched records the caller has not taken yet."""
        held = {completion.topic_partition for completion in list(self._completed_fetches)}
        current = getattr(self, "_next_partition_records", None)
        if current:
            held.add(current.topic_partition)
        return held

    def fetchable_partitions(self: Any) -> list[Any]:
        fetchable = original_fetchable()
        held = buffered(self) & set(self._subscriptions.fetchable_partitions())
        if not held:
            return list(fetchable)
        # A request to a broker without these partitions would make its session forget them.
        waiting = {self._select_read_replica(tp) for tp in held}
        return [tp for tp in fetchable if self._select_read_replica(tp) not in waiting]

    def fetch_records(
        self: Any, max_records: Any = None, update_offsets: bool = True, timeout_ms: Any = None
    ) -> tuple[dict[Any, list[Any]], bool]:
        records, idle = original_fetch_records(max_records, update_offsets=update_offsets, timeout_ms=timeout_ms)
        if not records and idle and buffered(self):
            # Nothing was in flight only because a response landed while this poll began: take it now.
            return original_fetch_records(max_records, update_offsets=update_offsets, timeout_ms=0)  # type: ignore[no-any-return]
        return records, idle

    fetcher._fetchable_partitions = types.MethodType(fetchable_partitions, fetcher)
    fetcher.fetch_records = types.MethodType(fetch_records, fetcher)
    return True
