"""The invalidation bus: messages on a Redis channel, a queue while Redis is down, a subscriber."""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

from flask_tenant_cache.identifiers import TenantIdentifier
from flask_tenant_cache.redis_layer.client import ERRORS, RedisConnection
from flask_tenant_cache.redis_layer.l2 import RedisL2

__all__ = ["InvalidationBus", "InvalidationHandler"]

logger = logging.getLogger("flask_tenant_cache")

#: What the bus does on a message: (cache key or None for all, tenant ids).
InvalidationHandler = Callable[[str | None, list[str]], object]


class InvalidationBus:
    """Invalidations shared by every process: L2 first, then a message on ``channel``.

    Invalidations that cannot reach Redis are queued (bounded; past the bound, one flush of
    everything replaces them) and sent when it answers again. The subscriber thread flushes
    the local caches on every (re)subscribe, since messages published while it was
    disconnected are lost.

    :param on_invalidate: applies a message from another process to this process's caches.
    :param on_resubscribe: flushes this process's caches.
    :param on_subscribed: runs after each (re)subscribe and flush (the rollout's resync).
    :param on_rollout: applies a rollout override announced by another process.
    """

    def __init__(
        self,
        conn: RedisConnection,
        l2: RedisL2,
        *,
        channel: str,
        on_invalidate: InvalidationHandler,
        on_resubscribe: Callable[[], object],
        on_subscribed: Callable[[], object],
        on_rollout: Callable[[Any], object],
        max_pending: int = 1000,
    ) -> None:
        self.conn = conn
        self.l2 = l2
        self.channel = channel
        self._on_invalidate = on_invalidate
        self._on_resubscribe = on_resubscribe
        self._on_subscribed = on_subscribed
        self._on_rollout = on_rollout
        self._lock = threading.Lock()
        self._pending: collections.deque[str | None] = collections.deque(maxlen=max_pending)
        self._pending_overflow = False
        self.counters = dict.fromkeys(
            (
                "published",
                "received",
                "subscribes",
                "resubscribes",
                "disconnects",
                "pending_sent",
                "dropped_messages",
            ),
            0,
        )
        self._reset()
        conn.on_fork(self._reset)

    def _reset(self) -> None:
        """No thread: at start, and in a child after a fork."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started = False

    # -- sending ----------------------------------------------------------------------------

    def invalidate(self, ident: TenantIdentifier | None) -> list[str]:
        """Drop ``ident``'s tenant (None: everything) from L2, then tell every process.

        :returns: the ids of the tenants dropped from L2 (queued for later if Redis is down).
        """
        key = None if ident is None else ident.cache_key
        if self._pending and self.conn.available():
            self._send_pending()  # older ones first, whoever comes next
        try:
            ids = self._send(key)
        except ERRORS as exc:
            self.conn.failed("invalidation", exc)
            self._queue(key)
            return []
        self.conn.succeeded()
        return ids

    def _send(self, key: str | None) -> list[str]:
        if key is None:
            self.l2.flush()
            ids: list[str] = []
        else:
            ids = self.l2.drop(key)
        self.publish({"k": key, "ids": ids})
        return ids

    def publish(self, message: dict[str, Any]) -> None:
        """Announce ``message`` to every other process (raises what Redis raises)."""
        self.conn.publish(self.channel, json.dumps({"o": self.conn.node_id, **message}))
        with self._lock:
            self.counters["published"] += 1

    def _queue(self, key: str | None) -> None:
        with self._lock:
            if len(self._pending) == self._pending.maxlen:
                self._pending_overflow = True
            self._pending.append(key)

    def _send_pending(self) -> None:
        with self._lock:
            if self._pending_overflow:
                batch: list[str | None] = [None]
            else:
                batch = list(dict.fromkeys(self._pending))
            self._pending.clear()
            self._pending_overflow = False
        for index, key in enumerate(batch):
            try:
                self._send(key)
            except ERRORS as exc:
                self.conn.failed("queued invalidation", exc)
                for rest in batch[index:]:
                    self._queue(rest)
                return
            with self._lock:
                self.counters["pending_sent"] += 1

    @property
    def pending(self) -> int:
        """Invalidations waiting for Redis to answer again."""
        return len(self._pending)

    # -- the subscriber ---------------------------------------------------------------------

    def start(self) -> None:
        """Start this process's subscriber thread (idempotent; called lazily after a fork)."""
        with self._lock:
            if self.started:
                return
            self.started = True
            self._thread = threading.Thread(
                target=self._listen, name="tenant-cache-invalidation-bus", daemon=True
            )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the subscriber thread and make one last attempt at the queue."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._pending:
            self._send_pending()

    def _listen(self) -> None:
        backoff = 0.05
        subscribed_before = False
        while not self._stop.is_set():
            pubsub = self.conn.pubsub()
            try:
                pubsub.subscribe(self.channel)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if self._pending and self.conn.available():
                        self._send_pending()
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        backoff = 0.05
                        self._subscribed(again=subscribed_before)
                        subscribed_before = True
                    elif message["type"] == "message":
                        self._received(message["data"])
            except ERRORS as exc:
                with self._lock:
                    self.counters["disconnects"] += 1
                self.conn.failed("subscription", exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                with contextlib.suppress(*ERRORS):
                    pubsub.close()

    def _subscribed(self, *, again: bool) -> None:
        with self._lock:
            self.counters["resubscribes" if again else "subscribes"] += 1
        self.conn.succeeded()
        # Whatever was published while this process was not listening is lost: start afresh.
        self._on_resubscribe()
        self._on_subscribed()

    def _received(self, data: bytes) -> None:
        try:
            message = json.loads(data)
            if "rollout" in message:
                with self._lock:
                    self.counters["received"] += 1
                if message["o"] != self.conn.node_id:
                    self._on_rollout(message["rollout"])
                return
            origin, key, ids = message["o"], message["k"], message["ids"]
            if key is not None and not isinstance(key, str):
                raise TypeError("key")
            ids = [str(uuid.UUID(i)) for i in ids]
        except (ValueError, KeyError, TypeError, AttributeError):
            with self._lock:
                self.counters["dropped_messages"] += 1
            logger.warning("tenant cache: malformed invalidation message dropped: %r", data[:200])
            return
        with self._lock:
            self.counters["received"] += 1
        if origin != self.conn.node_id:
            self._on_invalidate(key, ids)

    def stats(self) -> dict[str, int]:
        """The bus's counters, with the invalidations still queued."""
        with self._lock:
            return {**self.counters, "pending": len(self._pending)}
