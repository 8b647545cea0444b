"""The rollout override shared through Redis, ordered by a version that Redis assigns."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from flask_tenant_cache.redis_layer.client import ERRORS, RedisConnection
from flask_tenant_cache.redis_layer.keys import KeySpace

__all__ = ["SharedOverride"]

logger = logging.getLogger("flask_tenant_cache")

#: What reading the stored override may raise: Redis failing, or a value that is not JSON.
_READ_ERRORS: tuple[type[Exception], ...] = (*ERRORS, ValueError, TypeError)

# Stores an override under a new version, unless it was decided on top of a version older
# than the stored one (ARGV[1], '' for a decision made now): a newer decision then stands.
# KEYS: override, version; ARGV: base version or '', value JSON ('' lifts it).
# Returns {stored (0/1), version}.
_SET = """
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if ARGV[1] ~= '' and current > tonumber(ARGV[1]) then return {0, current} end
local version = redis.call('INCR', KEYS[2])
if ARGV[2] == '' then redis.call('DEL', KEYS[1]) else redis.call('SET', KEYS[1], ARGV[2]) end
return {1, version}
"""

#: Every script's source (the start-up check tries each command they run).
SCRIPTS = (_SET,)


class SharedOverride:
    """The operator's rollout override, the same on every process.

    Every override stored gets the next version from Redis, and a process applies only an
    override newer than the last it applied. One set while Redis was unreachable is kept,
    with the version it was decided on, and written when Redis returns only if no newer one
    was stored meanwhile: an older decision never undoes a newer one.

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
        conn.on_fork(self._reset_lock)
        #: The version of the override applied here last (0: none seen).
        self.version = 0
        #: An override set while Redis was unreachable: (value, the version it was set on).
        self._pending: tuple[Any, int] | None = None
        #: Kept overrides that a newer one, decided elsewhere, made void.
        self.superseded = 0

    def _reset_lock(self) -> None:
        self._lock = threading.Lock()  # it may have been held by a thread the fork left behind

    def set(self, value: Any) -> bool:
        """Store the override (None lifts it) and tell every process.

        :returns: whether every process was told now.
        """
        with self._lock:
            base = self.version
        try:
            self._share(value, base=None)
        except ERRORS as exc:
            self.conn.failed("rollout write", exc)
            with self._lock:
                self._pending = (value, base)
            return False
        with self._lock:
            self._pending = None
        return True

    def _share(self, value: Any, *, base: int | None) -> bool:
        script = self.conn.client.register_script(_SET)
        body = "" if value is None else json.dumps(value)
        stored, version = script(
            keys=[self.keys.rollout, self.keys.version(self.keys.rollout)],
            args=["" if base is None else base, body],
        )
        if not stored:
            return False
        with self._lock:
            self.version = max(self.version, int(version))
        self._publish({"rollout": value, "rv": int(version)})
        return True

    def read(self) -> tuple[Any, int]:
        """The override stored in Redis (None if none) and its version."""
        raw, version = self.conn.client.mget(
            [self.keys.rollout, self.keys.version(self.keys.rollout)]
        )
        return (None if raw is None else json.loads(raw)), int(version or 0)

    def sync(self) -> None:
        """Apply the override stored in Redis here (unless one here awaits sharing)."""
        if self._pending is not None or not self.conn.available():
            return
        try:
            value, version = self.read()
        except _READ_ERRORS as exc:
            self.conn.failed("rollout read", exc)
            return
        # A version lower than the one applied here means Redis lost writes (a restart from
        # an older snapshot): what it holds now is what every new process will read, so it
        # is what this one follows too.
        with self._lock:
            self.version = version
        self._apply(value)

    def subscribed(self) -> None:
        """The bus (re)subscribed: share the override kept here if still newest, else read."""
        with self._lock:
            pending = self._pending
        if pending is not None:
            try:
                shared = self._share(pending[0], base=pending[1])
            except ERRORS as exc:
                self.conn.failed("rollout write", exc)
                return
            with self._lock:
                self._pending = None
            if shared:
                return
            self._superseded()
        self.sync()

    def received(self, value: Any, version: int) -> None:
        """Another process stored ``value`` as ``version``: applied if newer than ours."""
        with self._lock:
            if version <= self.version:
                return
            self.version = version
            voided, self._pending = self._pending is not None, None
        if voided:
            self._superseded()
        self._apply(value)

    def _superseded(self) -> None:
        with self._lock:
            self.superseded += 1
        logger.warning(
            "tenant cache: the rollout override set while Redis was unreachable was dropped: "
            "a newer one was set meanwhile"
        )
