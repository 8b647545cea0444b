"""This process's Redis client: built from the URL, its health, and a fresh one after a fork."""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable

try:
    import redis
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "TENANT_CACHE_REDIS_URL needs redis-py: pip install 'flask-tenant-cache[redis]'"
    ) from exc

__all__ = ["ERRORS", "RedisConnection"]

logger = logging.getLogger("flask_tenant_cache")

#: What a Redis call may raise when Redis fails; caught, counted and served around.
ERRORS: tuple[type[Exception], ...] = (redis.RedisError, OSError)


class RedisConnection:
    """This process's Redis client, its health and circuit breaker, and its identity.

    After a failure, :meth:`available` is false for ``retry_interval`` seconds, so a slow or
    dead server costs no request more than one socket timeout. In a child forked from this
    process the client, the identity and the health are new, and the hooks given to
    :meth:`on_fork` run: nothing per-process is shared across a fork.

    :param url: a ``redis://``, ``rediss://`` or ``unix://`` URL.
    :param socket_timeout: seconds any call or connection attempt waits for Redis.
    :param retry_interval: seconds Redis is left alone after a failure.
    :param timer: the clock, injected so tests move time instead of sleeping.
    """

    def __init__(
        self,
        url: str,
        *,
        socket_timeout: float,
        retry_interval: float = 1.0,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.socket_timeout = socket_timeout
        self.retry_interval = retry_interval
        self._timer = timer
        self._fork_hooks: list[Callable[[], object]] = []
        self._recovery_hooks: list[Callable[[], object]] = []
        self.errors = 0
        self._reset()
        ref = weakref.WeakMethod(self._after_fork)
        os.register_at_fork(after_in_child=lambda: (m := ref()) and m())

    def _reset(self) -> None:
        #: This process's identity: new in each process and after each fork.
        self.node_id = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._outage = False
        self._client = self._build()

    def _build(self) -> redis.Redis:
        return redis.Redis.from_url(
            self.url,
            socket_timeout=self.socket_timeout,
            socket_connect_timeout=self.socket_timeout,
            health_check_interval=5,
        )

    def _after_fork(self) -> None:
        self._reset()
        for hook in self._fork_hooks:
            hook()

    def on_fork(self, hook: Callable[[], object]) -> None:
        """Run ``hook`` in a forked child, after the client was replaced."""
        self._fork_hooks.append(hook)

    def on_recovery(self, hook: Callable[[], object]) -> None:
        """Run ``hook`` when Redis answers again after an outage."""
        self._recovery_hooks.append(hook)

    @property
    def client(self) -> redis.Redis:
        """This process's Redis client (a new one after a fork)."""
        return self._client

    def available(self) -> bool:
        """False for ``retry_interval`` seconds after a failure: Redis is left alone then."""
        return self._timer() >= self._down_until

    def failed(self, what: str, exc: BaseException) -> None:
        """Count a failure, start the pause, and log the first of an outage."""
        with self._lock:
            self.errors += 1
            self._down_until = self._timer() + self.retry_interval
            first = not self._outage
            self._outage = True
        if first:
            logger.warning("tenant cache: Redis %s failed, serving around it: %r", what, exc)

    def succeeded(self) -> None:
        """Note that Redis answered: the pause ends (logged once after an outage)."""
        if self._outage:
            with self._lock:
                recovered, self._outage = self._outage, False
                self._down_until = 0.0  # whoever saw it answer, every caller may use it now
            if recovered:
                logger.warning("tenant cache: Redis answers again")
                for hook in self._recovery_hooks:
                    hook()

    def close(self) -> None:
        """Close the client's connections."""
        self._client.close()
