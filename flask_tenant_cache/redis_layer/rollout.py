"""The rollout override shared through Redis: stored under the prefix, announced on the bus."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from flask_tenant_cache.redis_layer.client import ERRORS, RedisConnection
from flask_tenant_cache.redis_layer.keys import KeySpace

__all__ = ["SharedOverride"]

#: What reading the stored override may raise: Redis failing, or a value that is not JSON.
_READ_ERRORS: tuple[type[Exception], ...] = (*ERRORS, ValueError)


class SharedOverride:
    """The operator's rollout override, the same on every process.

    :param publish: announces a message to every process (the bus's).
    :param apply: applies an override to this process.
    """

    def __init__(
        self,
        conn: RedisConnection,
        keys: KeySpace,
        *,
        publish: Callable[[dict[str, Any]], object],
        apply: Callable[[Any], object],
    ) -> None:
        self.conn = conn
        self.keys = keys
        self._publish = publish
        self._apply = apply
        self._lock = threading.Lock()
        #: An override set while Redis was unreachable, as a 1-tuple (its value may be None).
        self._pending: tuple[Any] | None = None

    def set(self, value: Any) -> bool:
        """Store the override (None lifts it) and tell every process.

        If Redis cannot be reached, the override is kept and shared when the subscriber
        reconnects (it then wins over the one stored in Redis: it is the newer decision).

        :returns: whether every process was told now.
        """
        try:
            self._share(value)
        except ERRORS as exc:
            self.conn.failed("rollout write", exc)
            with self._lock:
                self._pending = (value,)
            return False
        with self._lock:
            self._pending = None
        return True

    def _share(self, value: Any) -> None:
        client = self.conn.client
        if value is None:
            client.delete(self.keys.rollout)
        else:
            client.set(self.keys.rollout, json.dumps(value))
        self._publish({"rollout": value})

    def read(self) -> Any:
        """The override stored in Redis (None if none)."""
        raw = self.conn.client.get(self.keys.rollout)
        return None if raw is None else json.loads(raw)

    def sync(self) -> None:
        """Apply the override stored in Redis here (unless one here awaits sharing)."""
        if self._pending is not None or not self.conn.available():
            return
        try:
            self._apply(self.read())
        except _READ_ERRORS as exc:
            self.conn.failed("rollout read", exc)

    def subscribed(self) -> None:
        """The bus (re)subscribed: share the override kept here, or read the stored one."""
        with self._lock:
            pending = self._pending
        if pending is not None:
            self.set(pending[0])
            return
        self.sync()

    def received(self, value: Any) -> None:
        """Another process announced ``value``."""
        self._apply(value)
