"""The Redis connection of a process: health, the invalidation bus and the rollout override."""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from typing import Any

from .identifiers import TenantIdentifier

try:
    import redis
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "TENANT_CACHE_REDIS_URL needs redis-py: pip install 'flask-tenant-cache[redis]'"
    ) from exc

from .redis_l2 import RedisL2

__all__ = ["RedisLayer"]

logger = logging.getLogger("flask_tenant_cache")

# Drops the entry of one identifier and every entry of the tenants it names, and bumps the
# epoch so loads already running cannot write their stale result back. Returns the ids.
# KEYS[1] epoch; ARGV: prefix, cache key, tenant ids known to the caller...
_INVALIDATE = """
local ids = {}
for i = 3, #ARGV do ids[#ids + 1] = ARGV[i] end
local pointed = redis.call('GET', ARGV[1] .. ':id:' .. ARGV[2])
if pointed then ids[#ids + 1] = pointed end
redis.call('DEL', ARGV[1] .. ':t:' .. ARGV[2])
for _, id in ipairs(ids) do
  local set = ARGV[1] .. ':aliases:' .. id
  for _, key in ipairs(redis.call('SMEMBERS', set)) do redis.call('DEL', key) end
  redis.call('DEL', set)
end
redis.call('INCR', KEYS[1])
return ids
"""

#: What the bus does on a message: (cache key or None for all, tenant ids).
InvalidationHandler = Callable[[str | None, list[str]], object]


class RedisLayer:
    """A process's Redis: the invalidation bus, the rollout override and the L2 (:attr:`l2`).

    A failing Redis is served around: reads and writes count an error and fall through to the
    loader, and after an error Redis is left alone for ``retry_interval`` seconds so a slow or
    dead server costs no request more than one socket timeout. Invalidations that cannot reach
    Redis are queued (bounded; past the bound, one flush of everything replaces them) and sent
    when it answers again. The subscriber thread flushes the local caches on every (re)subscribe,
    since messages published while it was disconnected are lost.

    :param on_invalidate: applies a message from another process to this process's caches.
    :param on_resubscribe: flushes this process's caches.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        ttl: float,
        channel: str,
        socket_timeout: float,
        on_invalidate: InvalidationHandler,
        on_resubscribe: Callable[[], object],
        on_rollout: Callable[[Any], object] = lambda value: None,
        load_timeout: float | None = 5.0,
        retry_interval: float = 1.0,
        max_pending: int = 1000,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.ttl = max(1, int(ttl))
        self.channel = channel
        self.socket_timeout = socket_timeout
        self.retry_interval = retry_interval
        self._on_invalidate = on_invalidate
        self._on_resubscribe = on_resubscribe
        self._on_rollout = on_rollout
        self._rollout_key = f"{prefix}:rollout"
        #: An override set while Redis was unreachable, as a 1-tuple (its value may be None).
        self._pending_rollout: tuple[Any] | None = None
        self.epoch_key = f"{prefix}:epoch"
        # Decisions, not cache: a flush of everything leaves them (the plan, its records too).
        self._kept_keys = {
            f"{prefix}:{name}".encode() for name in ("epoch", "rollout", "plan", "mismatches")
        }
        self._lock = threading.Lock()
        self._pending: collections.deque[str | None] = collections.deque(maxlen=max_pending)
        self._pending_overflow = False
        self._down_until = 0.0
        self._outage = False
        self.counters = dict.fromkeys(
            (
                "published",
                "received",
                "subscribes",
                "resubscribes",
                "disconnects",
                "errors",
                "pending_sent",
                "dropped_messages",
            ),
            0,
        )
        self._setup()
        #: The second layer, for the resolvers.
        self.l2 = RedisL2(self, load_timeout=load_timeout)
        ref = weakref.WeakMethod(self._setup)
        os.register_at_fork(after_in_child=lambda: (m := ref()) and m())

    def _setup(self) -> None:
        """Fresh clients, no thread: at start, and in a child after a fork."""
        self.node_id = uuid.uuid4().hex
        self._client = redis.Redis.from_url(
            self.url,
            socket_timeout=self.socket_timeout,
            socket_connect_timeout=self.socket_timeout,
            health_check_interval=5,
        )
        self._invalidate = self._client.register_script(_INVALIDATE)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started = False

    # -- health -----------------------------------------------------------------------------

    @property
    def client(self) -> redis.Redis:
        """This process's Redis client (a new one after a fork)."""
        return self._client

    def available(self) -> bool:
        """False for ``retry_interval`` seconds after a failure: Redis is left alone then."""
        return time.monotonic() >= self._down_until

    def failed(self, what: str, exc: BaseException) -> None:
        """Count a failure, start the pause, and log the first of an outage."""
        with self._lock:
            self.counters["errors"] += 1
            self._down_until = time.monotonic() + self.retry_interval
            first = not self._outage
            self._outage = True
        if first:
            logger.warning("tenant cache: Redis %s failed, serving around it: %r", what, exc)

    def succeeded(self) -> None:
        """Note that Redis answered (logged once after an outage)."""
        if self._outage:
            with self._lock:
                recovered, self._outage = self._outage, False
            if recovered:
                logger.warning("tenant cache: Redis answers again")

    # -- invalidation -----------------------------------------------------------------------

    def invalidate(self, ident: TenantIdentifier | None) -> list[str]:
        """Drop ``ident``'s tenant (None: everything) from L2, then tell every process.

        :returns: the ids of the tenants dropped from L2 (queued for later if Redis is down).
        """
        key = None if ident is None else ident.cache_key
        if self._pending and self.available():
            self._send_pending()  # older ones first, whoever comes next
        try:
            ids = self._send(key)
        except redis.RedisError as exc:
            self.failed("invalidation", exc)
            self._queue(key)
            return []
        self.succeeded()
        return ids

    def _send(self, key: str | None) -> list[str]:
        if key is None:
            self._flush_l2()
            ids: list[str] = []
        else:
            known = [key.partition(":")[2]] if key.startswith("uuid:") else []
            raw_ids = self._invalidate(keys=[self.epoch_key], args=[self.prefix, key, *known])
            ids = sorted({i.decode() if isinstance(i, bytes) else str(i) for i in raw_ids})
        message = json.dumps({"o": self.node_id, "k": key, "ids": ids})
        self._client.publish(self.channel, message)
        with self._lock:
            self.counters["published"] += 1
        return ids

    def _flush_l2(self) -> None:
        # The epoch first: a load that read the old epoch cannot write back behind the scan.
        self._client.incr(self.epoch_key)
        pipe = self._client.pipeline(transaction=False)
        for name in self._client.scan_iter(match=f"{self.prefix}:*", count=500):
            if name not in self._kept_keys:
                pipe.unlink(name)
        pipe.incr(self.epoch_key)
        pipe.execute()

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
            except redis.RedisError as exc:
                self.failed("queued invalidation", exc)
                for rest in batch[index:]:
                    self._queue(rest)
                return
            with self._lock:
                self.counters["pending_sent"] += 1

    # -- the rollout override ---------------------------------------------------------------

    def set_rollout(self, value: Any) -> bool:
        """Store the rollout override (None lifts it) and tell every process.

        If Redis cannot be reached, the override is kept and shared when the subscriber
        reconnects (it then wins over the one stored in Redis: it is the newer decision).

        :returns: whether every process was told now.
        """
        try:
            self._share_rollout(value)
        except redis.RedisError as exc:
            self.failed("rollout write", exc)
            with self._lock:
                self._pending_rollout = (value,)
            return False
        with self._lock:
            self._pending_rollout = None
        return True

    def _share_rollout(self, value: Any) -> None:
        if value is None:
            self._client.delete(self._rollout_key)
        else:
            self._client.set(self._rollout_key, json.dumps(value))
        self._client.publish(self.channel, json.dumps({"o": self.node_id, "rollout": value}))
        with self._lock:
            self.counters["published"] += 1

    def read_rollout(self) -> Any:
        """The override stored in Redis (None if none)."""
        raw = self._client.get(self._rollout_key)
        return None if raw is None else json.loads(raw)

    @property
    def pending(self) -> int:
        """Invalidations waiting for Redis to answer again."""
        return len(self._pending)

    # -- the subscriber ---------------------------------------------------------------------

    def start(self) -> None:
        """Start this process's subscriber thread (idempotent; called lazily after a fork).

        The stored rollout override is read first, so the request that starts it is already
        decided by it (the subscriber reads it again once subscribed).
        """
        with self._lock:
            if self.started:
                return
            self.started = True
            self._thread = threading.Thread(
                target=self._listen, name="tenant-cache-invalidation-bus", daemon=True
            )
        self.sync_rollout()
        self._thread.start()

    def sync_rollout(self) -> None:
        """Apply the override stored in Redis to this process (unless one here awaits sharing)."""
        if self._pending_rollout is not None or not self.available():
            return
        try:
            self._on_rollout(self.read_rollout())
        except (redis.RedisError, ValueError) as exc:
            self.failed("rollout read", exc)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the subscriber thread and close the connections."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self._pending:
            self._send_pending()
        self._client.close()

    def _listen(self) -> None:
        backoff = 0.05
        subscribed_before = False
        while not self._stop.is_set():
            pubsub = self._client.pubsub()  # type: ignore[no-untyped-call]
            try:
                pubsub.subscribe(self.channel)
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.2)
                    if self._pending and self.available():
                        self._send_pending()
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        backoff = 0.05
                        self._subscribed(again=subscribed_before)
                        subscribed_before = True
                    elif message["type"] == "message":
                        self._received(message["data"])
            except (redis.RedisError, OSError) as exc:
                with self._lock:
                    self.counters["disconnects"] += 1
                self.failed("subscription", exc)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 2.0)
            finally:
                with contextlib.suppress(redis.RedisError, OSError):
                    pubsub.close()

    def _subscribed(self, *, again: bool) -> None:
        with self._lock:
            self.counters["resubscribes" if again else "subscribes"] += 1
        self.succeeded()
        # Whatever was published while this process was not listening is lost: start afresh.
        self._on_resubscribe()
        with self._lock:
            pending = self._pending_rollout
        if pending is not None:
            self.set_rollout(pending[0])
            return
        self.sync_rollout()

    def _received(self, data: bytes) -> None:
        try:
            message = json.loads(data)
            if "rollout" in message:
                with self._lock:
                    self.counters["received"] += 1
                if message["o"] != self.node_id:
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
        if origin != self.node_id:
            self._on_invalidate(key, ids)

    def stats(self) -> dict[str, int]:
        """The bus's and the L2's counters, with the invalidations still queued."""
        l2 = self.l2.stats()
        with self._lock:
            return {**self.counters, **l2, "pending": len(self._pending)}
