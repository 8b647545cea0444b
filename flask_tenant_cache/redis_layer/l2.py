"""The Redis second layer: a cache and a single flight shared by every process."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis

from flask_tenant_cache.identifiers import TenantIdentifier
from flask_tenant_cache.redis_layer.client import ERRORS, RedisConnection
from flask_tenant_cache.redis_layer.keys import KeySpace
from flask_tenant_cache.tenant import Tenant

__all__ = ["ENTRY_VERSION", "RedisL2"]

logger = logging.getLogger("flask_tenant_cache")

#: The format of an L2 entry; a reader skips entries of any other version.
ENTRY_VERSION = 1

#: How long a not-found answer stays readable by the processes that waited for it (ms).
NOT_FOUND_MARKER_MS = 1000

#: How often a process waiting for another's load looks again (s).
POLL_INTERVAL = 0.002

#: How often an invalidation is tried again when writes keep changing what it must delete.
DROP_ATTEMPTS = 10

# Ends a load this process claimed. A found tenant is stored, unless an invalidation bumped
# the epoch since the load began, and indexed under its id so an invalidation by any alias
# finds every key that holds it. A not-found answer becomes a marker tagged with that epoch,
# which waiting processes trust only while the epoch is unchanged.
# KEYS: epoch, claim, entry, then for a found tenant its alias set and one id pointer per
# alias. ARGV: epoch seen, entry ('' = not found), ttl, tenant id, node id, marker ms.
_FINISH = """
local fresh = (redis.call('GET', KEYS[1]) or '0') == ARGV[1]
if redis.call('GET', KEYS[2]) == ARGV[5] then redis.call('DEL', KEYS[2]) end
if not fresh then return 0 end
if ARGV[2] == '' then
  redis.call('SET', KEYS[2], 'none:' .. ARGV[1], 'PX', ARGV[6])
  return 1
end
redis.call('SET', KEYS[3], ARGV[2], 'EX', ARGV[3])
redis.call('SADD', KEYS[4], KEYS[3])
redis.call('EXPIRE', KEYS[4], ARGV[3])
for i = 5, #KEYS do redis.call('SET', KEYS[i], ARGV[4], 'EX', ARGV[3]) end
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

# Drops the entry of one identifier and every entry of the tenants it names, and bumps the
# epoch so loads already running cannot write their stale result back. The caller read the
# id pointer and the alias sets first, to declare every key here; if a write changed them
# since, nothing is done (0) and the caller reads again.
# KEYS: epoch, entry, id pointer, the alias sets, their members; ARGV: pointer read ('' =
# none), number of alias sets.
_DROP = """
if (redis.call('GET', KEYS[3]) or '') ~= ARGV[1] then return 0 end
local sets = tonumber(ARGV[2])
local declared = {}
for i = 4 + sets, #KEYS do declared[KEYS[i]] = true end
for i = 4, 3 + sets do
  for _, key in ipairs(redis.call('SMEMBERS', KEYS[i])) do
    if not declared[key] then return 0 end
  end
end
redis.call('DEL', KEYS[2])
for i = 4, #KEYS do redis.call('DEL', KEYS[i]) end
redis.call('INCR', KEYS[1])
return 1
"""

#: Every script's source (the start-up check tries each command they run).
SCRIPTS = (_FINISH, _GET_OR_CLAIM, _ABANDON, _DROP)


def _tenant(data: Any) -> Tenant:
    """The tenant of an entry, its every field checked: raises on anything unexpected."""
    tenant = data["tenant"]
    fields = ("id", "slug", "name")
    if not all(isinstance(tenant.get(f, ""), str) for f in fields):
        raise TypeError("a text field is not text")
    domains, extra = tenant.get("domains", []), tenant.get("extra", {})
    if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
        raise TypeError("domains")
    if not isinstance(tenant.get("is_active", True), bool) or not isinstance(extra, dict):
        raise TypeError("is_active or extra")
    return Tenant.from_dict(tenant)


def _tenant_id(raw: Any) -> str | None:
    try:
        return str(uuid.UUID(raw.decode())) if raw else None
    except (ValueError, UnicodeDecodeError):
        return None


class RedisL2:
    """The L2 (a :class:`~flask_tenant_cache.resolvers.base.SecondLayer`): read on an L1 miss.

    A miss here claims the load for this process (``SET NX``, expiring after ``load_timeout``);
    a process that finds the load claimed by another waits for its result (polling every
    2 ms) instead of querying the database too, so a cold tenant costs one query in the whole
    cluster. A claim that ends without a result (the load failed, or its owner died) lets the
    waiters load for themselves.

    :param conn: the process's Redis connection and health.
    :param keys: the app's key space.
    :param ttl: seconds an entry lives in Redis (whole seconds, at least 1).
    :param load_timeout: how long a claim lasts, and how long a waiter waits.
    """

    def __init__(
        self, conn: RedisConnection, keys: KeySpace, *, ttl: float, load_timeout: float | None
    ) -> None:
        self.conn = conn
        self.keys = keys
        self.ttl = max(1, int(ttl))
        self.load_timeout = load_timeout if load_timeout is not None else 5.0
        self._scripts_client: Any = None
        #: True while the L2 may hold what an unsent invalidation covers: it is not read then.
        self.held: Callable[[], bool] = lambda: False
        self._lock = threading.Lock()
        #: Loads claimed here; requests waiting now for another process's load; loads waited
        #: for instead of made ("remote_waits"), and of those, answered by its result.
        #: Entries that could not be read (each a miss the loader answered).
        self.counters = dict.fromkeys(
            ("claims", "waiting", "remote_waits", "remote_hits", "unreadable_entries"), 0
        )

    def _scripts(self) -> Any:
        client = self.conn.client
        if self._scripts_client is not client:  # a fork gives the connection a new client
            self._get_script = client.register_script(_GET_OR_CLAIM)
            self._finish_script = client.register_script(_FINISH)
            self._abandon_script = client.register_script(_ABANDON)
            self._drop_script = client.register_script(_DROP)
            self._scripts_client = client
        return self

    def get(self, ident: TenantIdentifier) -> tuple[bool | None, Tenant | None, Any]:
        """``(hit, tenant, epoch)``: on a miss this process holds the load's claim.

        ``(None, None, None)`` if Redis failed: the caller loads without the layer.
        """
        conn = self.conn
        if not conn.available() or self.held():
            return None, None, None
        try:
            result = self._get(ident)
        except ERRORS as exc:
            conn.failed("read", exc)
            return None, None, None
        conn.succeeded()
        return result

    def _get(self, ident: TenantIdentifier) -> tuple[bool, Tenant | None, Any]:
        get_or_claim = self._scripts()._get_script
        keys = [self.keys.entry(ident.cache_key), self.keys.claim(ident.cache_key), self.keys.epoch]
        args = [self.conn.node_id, self._claim_ms()]
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
            if isinstance(data, dict) and data.get("v") != ENTRY_VERSION:
                return False, None  # another format (a rolling deploy): skipped, not misread
            return True, _tenant(data)
        except Exception:
            with self._lock:
                self.counters["unreadable_entries"] += 1
            logger.warning("tenant cache: unreadable L2 entry for %s skipped", ident.cache_key)
            return False, None

    def put(self, ident: TenantIdentifier, tenant: Tenant | None, token: Any) -> bool:
        """End this process's load of ``ident``: store ``tenant`` (None: not found) unless an
        invalidation came since ``token``; False if Redis failed."""
        conn, keys = self.conn, self.keys
        if not conn.available():
            return True  # the outage was counted when it began
        names = [keys.epoch, keys.claim(ident.cache_key), keys.entry(ident.cache_key)]
        entry, tenant_id = "", ""
        if tenant is not None:
            aliases = sorted(tenant.alias_keys)
            entry = json.dumps({"v": ENTRY_VERSION, "tenant": tenant.to_dict(), "aliases": aliases})
            tenant_id = str(tenant.id)
            names += [keys.aliases(tenant_id), *(keys.pointer(a) for a in aliases)]
        args = [token, entry, self.ttl, tenant_id, conn.node_id, NOT_FOUND_MARKER_MS]
        try:
            self._scripts()._finish_script(keys=names, args=args)
        except ERRORS as exc:
            conn.failed("write", exc)
            return False
        conn.succeeded()
        return True

    def abandon(self, ident: TenantIdentifier) -> None:
        """Give up this process's claim on ``ident`` after a failed load."""
        conn = self.conn
        if not conn.available():
            return
        try:
            self._scripts()._abandon_script(
                keys=[self.keys.claim(ident.cache_key)], args=[conn.node_id]
            )
        except ERRORS as exc:
            conn.failed("write", exc)

    def drop(self, cache_key: str) -> list[str]:
        """Delete every entry of the tenant ``cache_key`` names and bump the epoch.

        :returns: the ids of the tenants found for it.
        :raises redis.RedisError: if Redis failed, or writes kept racing the deletion.
        """
        keys, client = self.keys, self.conn.client
        known = _tenant_id(cache_key[5:].encode()) if cache_key.startswith("uuid:") else None
        pointer = keys.pointer(cache_key)
        for _ in range(DROP_ATTEMPTS):
            raw = client.get(pointer)
            pointed = _tenant_id(raw)
            ids = sorted({i for i in (known, pointed) if i is not None})
            sets = [keys.aliases(i) for i in ids]
            pipe = client.pipeline(transaction=False)
            for name in sets:
                pipe.smembers(name)
            members = sorted({m for found in pipe.execute() for m in found})
            names = [keys.epoch, keys.entry(cache_key), pointer, *sets, *members]
            args = [raw or b"", len(sets)]
            if self._scripts()._drop_script(keys=names, args=args):
                return ids
        raise redis.RedisError("the invalidation kept racing concurrent writes")

    def flush(self) -> None:
        """Delete every key of this app's L2 (never another app's), bumping the epoch."""
        client, keys = self.conn.client, self.keys
        # The epoch first: a load that read the old epoch cannot write back behind the scan.
        client.incr(keys.epoch)
        kept = keys.kept()
        pipe = client.pipeline(transaction=False)
        for name in client.scan_iter(match=keys.pattern, count=500):
            if name not in kept:
                pipe.unlink(name)
        pipe.incr(keys.epoch)
        pipe.execute()

    def stats(self) -> dict[str, int]:
        """Loads claimed here, and loads waited for in another process (and answered)."""
        with self._lock:
            return dict(self.counters)
