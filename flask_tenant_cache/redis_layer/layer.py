"""One app's Redis layer: the connection, key space, L2, bus and shared override, composed."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from flask_tenant_cache.identifiers import TenantIdentifier
from flask_tenant_cache.redis_layer import rollout, scripts
from flask_tenant_cache.redis_layer.bus import InvalidationBus, InvalidationHandler
from flask_tenant_cache.redis_layer.client import RedisConnection, RedisSource, script_commands
from flask_tenant_cache.redis_layer.keys import KeySpace, default_channel
from flask_tenant_cache.redis_layer.l2 import RedisL2
from flask_tenant_cache.redis_layer.rollout import SharedOverride

__all__ = ["RedisLayer"]

#: Every Lua script the layer runs (the start-up check tries each command they call).
SCRIPTS = (
    *(scripts.GET_OR_CLAIM, scripts.FINISH, scripts.ABANDON, scripts.DROP),
    *(scripts.PUBLISH, scripts.RAISE, *rollout.SCRIPTS),
)

#: How many socket timeouts a process's first request waits for its subscription at most.
SYNC_TIMEOUTS = 4


class RedisLayer:
    """A process's Redis: the invalidation bus, the rollout override and the L2 (:attr:`l2`).

    A failing Redis is served around: reads and writes count an error and fall through to the
    loader (see :class:`~.client.RedisConnection` for the circuit breaker), and invalidations
    are queued until it answers (see :class:`~.bus.InvalidationBus`).

    :param source: the client, a callable that returns one, or a URL (see
        :data:`~.client.RedisSource`).
    :param prefix: what every key and the default channel are named under.
    :param channel: the invalidation channel (None: derived from the prefix).
    :param on_invalidate: applies a message from another process to this process's caches.
    :param on_resubscribe: flushes this process's caches.
    :param on_rollout: applies a rollout override to this process.
    """

    def __init__(
        self,
        source: RedisSource,
        *,
        prefix: str,
        ttl: float,
        channel: str | None,
        socket_timeout: float,
        on_invalidate: InvalidationHandler,
        on_resubscribe: Callable[[], object],
        on_rollout: Callable[[Any], object] = lambda value: None,
        load_timeout: float | None = 5.0,
        retry_interval: float = 1.0,
        max_pending: int = 1000,
    ) -> None:
        self.conn = RedisConnection(
            source, socket_timeout=socket_timeout, retry_interval=retry_interval
        )
        self.keys = KeySpace(prefix)
        #: The second layer, for the resolvers.
        self.l2 = RedisL2(self.conn, self.keys, ttl=ttl, load_timeout=load_timeout)
        self.bus = InvalidationBus(
            self.conn,
            self.l2,
            channel=channel if channel is not None else default_channel(prefix),
            on_invalidate=on_invalidate,
            on_resubscribe=on_resubscribe,
            on_subscribed=lambda: self.rollout.subscribed(),
            on_rollout=lambda value, version: self.rollout.received(value, version),
            max_pending=max_pending,
        )
        # While an invalidation is unsent, or the subscriber is not in step (it may be missing
        # messages), Redis may hold what was invalidated: the loader answers instead.
        self.l2.held = lambda: self.bus.pending > 0 or not self.bus.listening
        self.l2.on_lost = self.bus.after_loss
        self.rollout = SharedOverride(
            self.conn, self.keys, publish=self.bus.publish, apply=on_rollout
        )
        self._on_resubscribe = on_resubscribe
        self._fork_reset()
        self.conn.on_fork(self._fork_reset)

    def _fork_reset(self) -> None:
        #: True once this process may trust its local caches: its subscriber subscribed and
        #: dropped what it may have missed, or could not and they were flushed.
        self.ready = False
        self._ready_lock = threading.Lock()

    @property
    def serving(self) -> bool:
        """Whether requests may be served from the local caches without :meth:`start`."""
        return self.ready and self.bus.started

    def check(self) -> None:
        """Refuse (``ValueError``) a deployment this app cannot work with, if Redis answers."""
        self.conn.check(self.keys, self.bus.channel, script_commands(SCRIPTS))

    @property
    def started(self) -> bool:
        """Whether this process's subscriber thread was started."""
        return self.bus.started

    @property
    def node_id(self) -> str:
        """This process's identity on the bus and in claims."""
        return self.conn.node_id

    @property
    def pending(self) -> int:
        """Invalidations waiting for Redis to answer again."""
        return self.bus.pending

    def invalidate(self, ident: TenantIdentifier | None) -> list[str]:
        """Drop ``ident``'s tenant (None: everything) from L2, then tell every process."""
        return self.bus.invalidate(ident)

    def set_rollout(self, value: Any) -> bool:
        """Share the rollout override (None lifts it); False if Redis could not be told."""
        return self.rollout.set(value)

    def sync_rollout(self) -> None:
        """Apply the override stored in Redis to this process."""
        self.rollout.sync()

    def start(self) -> None:
        """Start this process's subscriber (idempotent; called lazily after a fork), and wait
        until it subscribed.

        The stored rollout override is read first, so the request that starts it is already
        decided by it (the subscriber reads it again once subscribed). Until the subscriber
        has subscribed and dropped whatever this process may have missed (inherited from a
        parent at a fork, or warmed), nothing is served from the local caches: the request
        waits for it (about a millisecond), at most a few socket timeouts; if Redis cannot
        be reached, the local caches are flushed instead.
        """
        if not self.bus.started:
            self.rollout.sync()
        self.bus.start()
        if not self.ready:
            self._await_sync()

    def _await_sync(self) -> None:
        deadline = time.monotonic() + SYNC_TIMEOUTS * self.conn.socket_timeout
        while not self.bus.synced.wait(0.002):
            if not self.conn.available() or time.monotonic() > deadline:
                with self._ready_lock:
                    if not self.ready:
                        self._on_resubscribe()  # nothing proven: start afresh
                        self.ready = True
                return
        self.ready = True

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the subscriber thread and close the connections."""
        self.bus.stop(timeout)
        self.conn.close()

    def stats(self) -> dict[str, int]:
        """The bus's and the L2's counters, Redis errors, and the invalidations queued."""
        return {
            **self.bus.stats(),
            **self.l2.stats(),
            "errors": self.conn.errors,
            "configuration_errors": self.conn.configuration_errors,
            "rollout_superseded": self.rollout.superseded,
        }
