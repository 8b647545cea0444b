"""The Redis second layer: a cache and a single flight shared by every process."""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import redis

from .identifiers import TenantIdentifier
from .tenant import Tenant

if TYPE_CHECKING:
    from .redis_layer import RedisLayer

__all__ = ["ENTRY_VERSION", "RedisL2"]

logger = logging.getLogger("flask_tenant_cache")

#: The format of an L2 entry; a reader skips entries of any other version.
ENTRY_VERSION = 1

#: How long a not-found answer stays readable by the processes that waited for it (ms).
NOT_FOUND_MARKER_MS = 1000

#: How often a process waiting for another's load looks again (s).
POLL_INTERVAL = 0.002

# Ends a load this process claimed. A found tenant is stored, unless an invalidation bumped
# the epoch since the load began, and indexed under its id so an invalidation by any alias
# finds every key that holds it. A not-found answer becomes a marker tagged with that epoch,
# which waiting processes trust only while the epoch is unchanged.
# KEYS[1] epoch; ARGV: epoch seen, prefix, entry key, entry ('' = not found), ttl, tenant id,
# claim key, node id, marker ms, alias keys...
_FINISH = """
local fresh = (redis.call('GET', KEYS[1]) or '0') == ARGV[1]
if redis.call('GET', ARGV[7]) == ARGV[8] then redis.call('DEL', ARGV[7]) end
if not fresh then return 0 end
if ARGV[4] == '' then
  redis.call('SET', ARGV[7], 'none:' .. ARGV[1], 'PX', ARGV[9])
  return 1
end
redis.call('SET', ARGV[3], ARGV[4], 'EX', ARGV[5])
local set = ARGV[2] .. ':aliases:' .. ARGV[6]
redis.call('SADD', set, ARGV[3])
redis.call('EXPIRE', set, ARGV[5])
for i = 10, #ARGV do
  redis.call('SET', ARGV[2] .. ':id:' .. ARGV[i], ARGV[6], 'EX', ARGV[5])
end
return 1
"""

# Reads an entry, or claims its load when there is neither an entry nor a live claim, in one
# step: between a separate read and claim, another process could load, store and release.
# A not-found marker of an older epoch is no answer and no claim: it is replaced.
# KEYS: entry, claim, epoch; ARGV: node id, claim ms. Returns {entry, owner, epoch, claimed}.
_GET_OR_CLAIM = """
local raw = redis.call('GET', KEYS[1])
local owner = redis.call('GET', KEYS[2])
local epoch = redis.call('GET', KEYS[3]) or '0'
local claimed = 0
if not raw then
  local stale = owner and string.sub(owner, 1, 5) == 'none:' and owner ~= 'none:' .. epoch
  if not owner or stale then
    redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
    owner = ARGV[1]
    claimed = 1
  end
end
return {raw or false, owner or false, epoch, claimed}
"""

# Gives up a claim after a failed load, so the waiting processes load for themselves.
_ABANDON = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


class RedisL2:
    """The L2 (a :class:`~.resolvers.base.SecondLayer`): read on an L1 miss, before the loader.

    A miss here claims the load for this process (``SET NX``, expiring after ``load_timeout``);
    a process that finds the load claimed by another waits for its result (polling every
    2 ms) instead of querying the database too, so a cold tenant costs one query in the whole
    cluster. A claim that ends without a result (the load failed, or its owner died) lets the
    waiters load for themselves.

    :param layer: the process's Redis connection, health and epoch.
    :param load_timeout: how long a claim lasts, and how long a waiter waits.
    """

    def __init__(self, layer: RedisLayer, *, load_timeout: float | None) -> None:
        self.layer = layer
        self.load_timeout = load_timeout if load_timeout is not None else 5.0
        self._get_script: Any = None
        self._finish_script: Any = None
        self._abandon_script: Any = None
        self._scripts_client: Any = None
        self._lock = threading.Lock()
        #: Loads claimed here; requests waiting now for another process's load; loads waited
        #: for instead of made ("remote_waits"), and of those, answered by its result.
        self.counters = {"claims": 0, "waiting": 0, "remote_waits": 0, "remote_hits": 0}

    def _key(self, ident: TenantIdentifier) -> str:
        return f"{self.layer.prefix}:t:{ident.cache_key}"

    def _claim_key(self, ident: TenantIdentifier) -> str:
        return f"{self.layer.prefix}:load:{ident.cache_key}"

    def _scripts(self) -> tuple[Any, Any, Any]:
        client = self.layer.client
        if self._scripts_client is not client:  # a fork gives the layer a new client
            self._get_script = client.register_script(_GET_OR_CLAIM)
            self._finish_script = client.register_script(_FINISH)
            self._abandon_script = client.register_script(_ABANDON)
            self._scripts_client = client
        return self._get_script, self._finish_script, self._abandon_script

    def get(self, ident: TenantIdentifier) -> tuple[bool | None, Tenant | None, Any]:
        """``(hit, tenant, epoch)``: on a miss this process holds the load's claim.

        ``(None, None, None)`` if Redis failed: the caller loads without the layer.
        """
        layer = self.layer
        if not layer.available():
            return None, None, None
        try:
            result = self._get(ident)
        except redis.RedisError as exc:
            layer.failed("read", exc)
            return None, None, None
        layer.succeeded()
        return result

    def _get(self, ident: TenantIdentifier) -> tuple[bool, Tenant | None, Any]:
        get_or_claim = self._scripts()[0]
        keys = [self._key(ident), self._claim_key(ident), self.layer.epoch_key]
        args = [self.layer.node_id, self._claim_ms()]
        deadline = time.monotonic() + self.load_timeout
        waited = False
        while True:
            raw, owner, epoch, claimed = get_or_claim(keys=keys, args=args)
            if raw is not None:
                hit, tenant = self._read(ident, raw)
                if hit:
                    self._count(waited, hit=True)
                    return True, tenant, epoch
            if owner == b"none:" + epoch:
                self._count(waited, hit=True)
                return True, None, epoch
            if claimed or raw is not None or time.monotonic() >= deadline:
                # Claimed; or an unreadable entry, or a claim that outlived its load: no one
                # to wait for, so load here.
                self._count(waited, hit=False, claimed=bool(claimed))
                return False, None, epoch
            if not waited:  # another process is loading it: wait for its result
                waited = True
                with self._lock:
                    self.counters["waiting"] += 1
            time.sleep(POLL_INTERVAL)

    def _claim_ms(self) -> int:
        return max(1, int(self.load_timeout * 1000))

    def _count(self, waited: bool, *, hit: bool, claimed: bool = False) -> None:
        with self._lock:
            self.counters["claims"] += claimed
            if waited:
                self.counters["waiting"] -= 1
                self.counters["remote_waits"] += 1
                self.counters["remote_hits"] += hit

    def _read(self, ident: TenantIdentifier, raw: bytes) -> tuple[bool, Tenant | None]:
        try:
            data = json.loads(raw)
            if data.get("v") != ENTRY_VERSION:
                return False, None
            return True, Tenant.from_dict(data["tenant"])
        except (ValueError, KeyError, TypeError):
            logger.warning("tenant cache: unreadable L2 entry for %s skipped", ident.cache_key)
            return False, None

    def put(self, ident: TenantIdentifier, tenant: Tenant | None, token: Any) -> bool:
        """End this process's load of ``ident``: store ``tenant`` (None: not found) unless an
        invalidation came since ``token``; False if Redis failed."""
        layer = self.layer
        if not layer.available():
            return True  # the outage was counted when it began
        entry = ""
        args: list[Any] = [token, layer.prefix, self._key(ident), entry, layer.ttl, ""]
        if tenant is not None:
            aliases = sorted(tenant.alias_keys)
            entry = json.dumps({"v": ENTRY_VERSION, "tenant": tenant.to_dict(), "aliases": aliases})
            args = [token, layer.prefix, self._key(ident), entry, layer.ttl, str(tenant.id)]
        args += [self._claim_key(ident), layer.node_id, NOT_FOUND_MARKER_MS]
        if tenant is not None:
            args += sorted(tenant.alias_keys)
        try:
            self._scripts()[1](keys=[layer.epoch_key], args=args)
        except redis.RedisError as exc:
            layer.failed("write", exc)
            return False
        layer.succeeded()
        return True

    def stats(self) -> dict[str, int]:
        """Loads claimed here, and loads waited for in another process (and answered)."""
        with self._lock:
            return dict(self.counters)

    def abandon(self, ident: TenantIdentifier) -> None:
        """Give up this process's claim on ``ident`` after a failed load."""
        layer = self.layer
        if not layer.available():
            return
        try:
            self._scripts()[2](keys=[self._claim_key(ident)], args=[layer.node_id])
        except redis.RedisError as exc:
            layer.failed("write", exc)
