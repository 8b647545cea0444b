"""The rollout plan's state and the mismatch records in Redis, shared by every process."""

from __future__ import annotations

import json
from typing import Any

from flask_tenant_cache.mismatches import MismatchLog
from flask_tenant_cache.plan import PlanState, StoreUnavailable
from flask_tenant_cache.redis_layer.client import ERRORS, RedisConnection
from flask_tenant_cache.redis_layer.keys import KeySpace

__all__ = ["RedisControlStore", "RedisMismatchLog"]

# Compare-and-set: store ARGV[2] (a state without its version) if the stored version is still
# ARGV[1]; Redis assigns the next version, so of two writes based on one state only one wins.
# Returns the state stored afterwards, as JSON.
_SAVE = """
local raw = redis.call('GET', KEYS[1])
local current = 0
if raw then current = cjson.decode(raw)['version'] end
if current ~= tonumber(ARGV[1]) then return {0, raw} end
local state = cjson.decode(ARGV[2])
state['version'] = current + 1
local encoded = cjson.encode(state)
redis.call('SET', KEYS[1], encoded)
return {1, encoded}
"""


class RedisControlStore:
    """The plan state at ``{prefix}:plan`` (JSON, no expiry): one decision for the cluster."""

    scope = "cluster"

    def __init__(self, conn: RedisConnection, keys: KeySpace) -> None:
        self.conn = conn
        self.key = keys.plan
        #: Registered on first use: a client the app's callable builds may not exist yet.
        self._save: Any = None

    def load(self) -> PlanState | None:
        """The stored state.

        :raises StoreUnavailable: if Redis fails or holds something that is not a state.
        """
        if not self.conn.available():
            raise StoreUnavailable("Redis is resting after a failure")
        try:
            raw = self.conn.client.get(self.key)
        except ERRORS as exc:
            self.conn.failed("rollout plan read", exc)
            raise StoreUnavailable(str(exc)) from exc
        self.conn.succeeded()
        return None if raw is None else _decode(raw)

    def save(self, state: PlanState, expected: int) -> tuple[bool, PlanState | None]:
        """Store ``state`` if the stored version is ``expected``; the stored state either way.

        :raises StoreUnavailable: if Redis fails.
        """
        data = state.as_dict()
        try:
            client = self.conn.client
            if self._save is None:
                self._save = client.register_script(_SAVE)
            # The client is replaced after a fork: bind the script to it.
            won, raw = self._save(keys=[self.key], args=[expected, json.dumps(data)], client=client)
        except ERRORS as exc:
            self.conn.failed("rollout plan write", exc)
            raise StoreUnavailable(str(exc)) from exc
        self.conn.succeeded()
        return bool(won), None if raw is None else _decode(raw)


def _decode(raw: bytes | str) -> PlanState:
    try:
        data: Any = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        # cjson encodes an empty Lua table as an object, not a list.
        if data.get("steps") == {}:
            data["steps"] = []
        return PlanState.from_dict(data)
    except ValueError as exc:
        raise StoreUnavailable(f"the stored rollout plan is unreadable: {exc}") from None


class RedisMismatchLog:
    """The last ``size`` mismatches of every process, in the list ``{prefix}:mismatches``.

    Written from the shadow pool, never from a request. Each record is kept in this process
    too, and read from there while Redis does not answer (its failures are counted by the
    connection).
    """

    scope = "cluster"

    def __init__(self, conn: RedisConnection, keys: KeySpace, size: int) -> None:
        self.conn = conn
        self.size = size
        self.key = keys.mismatches
        self.local = MismatchLog(size)

    def add(self, record: dict[str, Any]) -> None:
        """Push ``record``, trimming the list to ``size``."""
        self.local.add(record)
        if not self.conn.available():
            return
        try:
            pipe = self.conn.client.pipeline(transaction=True)
            pipe.lpush(self.key, json.dumps(record))
            pipe.ltrim(self.key, 0, self.size - 1)
            pipe.execute()
        except ERRORS as exc:
            self.conn.failed("mismatch record write", exc)
            return
        self.conn.succeeded()

    def recent(self) -> list[dict[str, Any]]:
        """The records, newest first (this process's if Redis does not answer)."""
        try:
            raw = self.conn.client.lrange(self.key, 0, self.size - 1)
        except ERRORS as exc:
            self.conn.failed("mismatch record read", exc)
            return self.local.recent()
        records = []
        for item in raw:
            try:
                record = json.loads(item)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
        return records
