"""The Redis second layer: a cache and a single flight shared by every process."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from flask_tenant_cache.identifiers import TenantIdentifier
from flask_tenant_cache.redis_layer import entries, scripts
from flask_tenant_cache.redis_layer.client import ERRORS, RedisConnection
from flask_tenant_cache.redis_layer.keys import KeySpace
from flask_tenant_cache.tenant import Tenant

__all__ = ["RedisL2"]

logger = logging.getLogger("flask_tenant_cache")

#: How long a not-found answer stays readable by the processes that waited for it (ms).
NOT_FOUND_MARKER_MS = 1000

#: How often a process waiting for another's load looks again when the bus cannot wake it
#: (its subscriber is not listening), in seconds.
POLL_INTERVAL = 0.01

#: How many times a waiter woken by the bus looks again over ``load_timeout``: a wake-up
#: lost with a message is caught within a quarter of it.
RECHECKS = 4

#: Finishes of loads (stores, releases) kept for when Redis answers again; past this, the
#: oldest is dropped and its claim expires with ``load_timeout``.
MAX_UNFINISHED = 1000

#: How far past the highest value seen here a counter is raised after Redis lost writes:
#: beyond what any other process can have seen, so they need not raise it again.
LOSS_MARGIN = 1_000_000

#: How often an invalidation is tried again when writes keep changing what it must delete.
DROP_ATTEMPTS = 10


class LostWrites(Exception):
    """Redis holds less than this process saw it hold: it lost acknowledged writes."""


class OutdatedRead(Exception):
    """A read that began before the L2 was discarded answered from before it."""


class RedisL2:
    """The L2 (a :class:`~flask_tenant_cache.resolvers.base.SecondLayer`): read on an L1 miss.

    A miss here claims the load for this process (``SET NX``, expiring after ``load_timeout``);
    a process that finds the load claimed by another waits for its result (woken by the
    bus when it is stored) instead of querying the database too, so a cold tenant costs one
    query in the whole cluster. A claim that ends without a result (the load failed, or its
    owner died) lets the waiters load for themselves.

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
        #: Called once the L2 was discarded after Redis lost writes (drops the local caches).
        self.on_lost: Callable[[], object] = lambda: None
        #: The highest epoch this process saw: one lower later means Redis lost writes.
        self.highest_epoch = 0
        #: Set when Redis lost writes, until this app's L2 was discarded: not read meanwhile.
        self._distrusted = False
        #: How many times the L2 was discarded after lost writes.
        self.generation = 0
        #: Loads claimed here; requests waiting now for another process's load; loads waited
        #: for instead of made ("remote_waits"), and of those, answered by its result.
        #: Entries that could not be read (each a miss the loader answered).
        #: Finishes sent late, once Redis answered again, and finishes given up; times Redis
        #: was found to have lost writes (see :meth:`distrust`).
        self.counters = dict.fromkeys(
            (
                "claims",
                "waiting",
                "remote_waits",
                "remote_hits",
                "unreadable_entries",
                "finishes_retried",
                "finishes_dropped",
                "lost_writes",
            ),
            0,
        )
        self._reset()
        conn.on_fork(self._reset)

    def _reset(self) -> None:
        """Nothing shared with the parent: at start, and in a child after a fork."""
        self._lock = threading.Lock()
        self._recovery = threading.Lock()
        #: The events of the requests here waiting for another process's load, per key.
        self._waiters: dict[str, set[threading.Event]] = {}
        #: Finishes that could not reach Redis: cache key -> (script, keys, args). A child's
        #: claims are its own: the parent finishes the parent's.
        self._unfinished: dict[str, tuple[str, list[Any], list[Any]]] = {}
        #: Set by the bus while it listens on the channel that wakes waiters.
        self.wakeups = False

    def _scripts(self) -> Any:
        client = self.conn.client
        if self._scripts_client is not client:  # a fork gives the connection a new client
            self._get_script = client.register_script(scripts.GET_OR_CLAIM)
            self._finish_script = client.register_script(scripts.FINISH)
            self._abandon_script = client.register_script(scripts.ABANDON)
            self._drop_script = client.register_script(scripts.DROP)
            self._raise_script = client.register_script(scripts.RAISE)
            self._scripts_client = client
        return self

    def get(self, ident: TenantIdentifier) -> tuple[bool | None, Tenant | None, Any]:
        """``(hit, tenant, epoch)``: on a miss this process holds the load's claim.

        ``(None, None, None)`` if Redis failed: the caller loads without the layer.
        """
        conn = self.conn
        if not conn.available() or self.held():
            return None, None, None
        if self._distrusted and not self._recover():
            return None, None, None
        if self._unfinished:
            self.retry()
        try:
            result = self._get(ident)
        except LostWrites as exc:
            self.distrust(str(exc))
            return None, None, None
        except OutdatedRead:
            return None, None, None
        except ERRORS as exc:
            conn.failed("read", exc)
            return None, None, None
        conn.succeeded()
        return result

    def _seen(self, epoch: Any) -> bool:
        """Note an epoch read from Redis; False if it is lower than one seen before."""
        value = int(epoch)
        with self._lock:
            if value < self.highest_epoch:
                return False
            self.highest_epoch = value
            return True

    def distrust(self, why: str) -> None:
        """Redis lost acknowledged writes: discard this app's L2 and the local caches.

        Invalidations made after what Redis kept are gone from it, so any entry it holds may
        be one of them come back. Nothing is read from the L2 until it was discarded.
        """
        with self._lock:
            noticed, self._distrusted = self._distrusted, True
            if not noticed:
                self.counters["lost_writes"] += 1
        if noticed:
            self._recover()
            return
        logger.warning(
            "tenant cache: Redis lost writes (%s): discarding the L2 under %r and the local caches",
            why,
            self.keys.prefix,
        )
        self._recover()

    def _recover(self) -> bool:
        if not self._recovery.acquire(blocking=False):
            return False  # another thread is discarding it: not read meanwhile
        try:
            if not self._distrusted:
                return True
            try:
                self.flush()
            except ERRORS as exc:
                self.conn.failed("discard of the L2", exc)
                return False
            self._distrusted = False
            self.generation += 1
            self.on_lost()
            return True
        finally:
            self._recovery.release()

    def _get(self, ident: TenantIdentifier) -> tuple[bool, Tenant | None, Any]:
        get_or_claim = self._scripts()._get_script
        key = ident.cache_key
        keys = [self.keys.entry(key), self.keys.claim(key), self.keys.epoch]
        args = [self.conn.node_id, self._claim_ms()]
        deadline = time.monotonic() + self.load_timeout
        # A read that began before this process discarded the L2 may still answer with the
        # epoch of before: that is no new loss.
        generation = self.generation
        waited = False
        # Registered before the first read: a result stored between a read and the wait
        # still wakes it.
        woken = threading.Event()
        with self._lock:
            self._waiters.setdefault(key, set()).add(woken)
        try:
            while True:
                woken.clear()
                raw, owner, epoch, claimed = get_or_claim(keys=keys, args=args)
                if not self._seen(epoch):
                    if generation != self.generation:
                        if claimed:
                            self.abandon(ident)
                        raise OutdatedRead
                    raise LostWrites(f"the epoch went back to {int(epoch)}")
                if raw is not None:
                    hit, tenant = self._read(ident, raw)
                    if hit:
                        self._count(waited, hit=True)
                        return True, tenant, epoch
                if owner == b"none:" + epoch:
                    self._count(waited, hit=True)
                    return True, None, epoch
                now = time.monotonic()
                if claimed or raw is not None or now >= deadline:
                    # Claimed; or an unreadable entry, or a claim that outlived its load: no
                    # one to wait for, so load here.
                    self._count(waited, hit=False, claimed=bool(claimed))
                    return False, None, epoch
                if not waited:  # another process is loading it: wait for its result
                    waited = True
                    with self._lock:
                        self.counters["waiting"] += 1
                pause = self.load_timeout / RECHECKS if self.wakeups else POLL_INTERVAL
                woken.wait(min(pause, deadline - now))
        finally:
            with self._lock:
                waiting = self._waiters[key]
                waiting.discard(woken)
                if not waiting:
                    del self._waiters[key]

    def wake(self, cache_key: str) -> None:
        """A load of ``cache_key`` ended somewhere: its waiters here look again."""
        with self._lock:
            for event in self._waiters.get(cache_key, ()):
                event.set()

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
            tenant = entries.decode(raw)
        except Exception:
            with self._lock:
                self.counters["unreadable_entries"] += 1
            logger.warning("tenant cache: unreadable L2 entry for %s skipped", ident.cache_key)
            return False, None
        return tenant is not None, tenant  # another format (a rolling deploy): skipped

    def put(self, ident: TenantIdentifier, tenant: Tenant | None, token: Any) -> bool:
        """End this process's load of ``ident``: store ``tenant`` (None: not found) unless an
        invalidation came since ``token``, and release the claim.

        :returns: False if Redis could not be reached: it is done when Redis answers again,
            so the processes waiting for this load are never left waiting for nothing.
        """
        names, args = self._finish_args(ident, tenant, token)
        return self._finish(ident.cache_key, "_finish_script", names, args)

    def _finish_args(
        self, ident: TenantIdentifier, tenant: Tenant | None, token: Any
    ) -> tuple[list[Any], list[Any]]:
        keys, key = self.keys, ident.cache_key
        names = [keys.epoch, keys.claim(key), keys.entry(key)]
        entry, tenant_id = "", ""
        if tenant is not None:
            entry = entries.encode(tenant)
            tenant_id = str(tenant.id)
            aliases = sorted(tenant.alias_keys)
            names += [keys.aliases(tenant_id), *(keys.pointer(a) for a in aliases)]
        args = [token, entry, self.ttl, tenant_id, self.conn.node_id, NOT_FOUND_MARKER_MS]
        return names, [*args, keys.loaded, key, self.conn.publish_command]

    def epoch(self) -> Any:
        """The invalidation epoch now: read it before reading what :meth:`store` is given.

        :raises redis.RedisError: if Redis failed.
        """
        return self.conn.client.get(self.keys.epoch) or b"0"

    def store(self, tenant: Tenant, epoch: Any) -> bool:
        """Store ``tenant`` under every alias (a warm), unless an invalidation came since
        ``epoch``; False if one did.

        :raises redis.RedisError: if Redis failed (nothing is queued: the caller reports it).
        """
        finish = self._scripts()._finish_script
        for alias in tenant.aliases:
            names, args = self._finish_args(alias, tenant, epoch)
            if not finish(keys=names, args=args):
                return False
        return True

    def abandon(self, ident: TenantIdentifier) -> None:
        """Give up this process's claim on ``ident`` after a failed load (now or later)."""
        key = ident.cache_key
        args = [self.conn.node_id, self.keys.loaded, key, self.conn.publish_command]
        self._finish(key, "_abandon_script", [self.keys.claim(key)], args)

    def _finish(self, cache_key: str, script: str, keys: list[Any], args: list[Any]) -> bool:
        conn = self.conn
        if conn.available():
            try:
                getattr(self._scripts(), script)(keys=keys, args=args)
            except ERRORS as exc:
                conn.failed("write", exc)
            else:
                conn.succeeded()
                return True
        with self._lock:
            if cache_key not in self._unfinished and len(self._unfinished) >= MAX_UNFINISHED:
                del self._unfinished[next(iter(self._unfinished))]
                self.counters["finishes_dropped"] += 1
            self._unfinished[cache_key] = (script, keys, args)
        return False

    @property
    def unfinished(self) -> int:
        """Finishes of loads waiting for Redis to answer again."""
        return len(self._unfinished)

    def retry(self) -> None:
        """Send the finishes that could not reach Redis (the epoch still guards each store)."""
        with self._lock:
            batch = list(self._unfinished.items())
        for key, finish in batch:
            script, keys, args = finish
            try:
                getattr(self._scripts(), script)(keys=keys, args=args)
            except ERRORS as exc:
                self.conn.failed("write", exc)
                return
            with self._lock:
                if self._unfinished.get(key) is finish:
                    del self._unfinished[key]
                self.counters["finishes_retried"] += 1
        self.conn.succeeded()

    def drop(self, cache_key: str) -> list[str]:
        """Delete every entry of the tenant ``cache_key`` names and bump the epoch.

        :returns: the ids of the tenants found for it.
        :raises redis.RedisError: if Redis failed, or writes kept racing the deletion.
        """
        keys, client = self.keys, self.conn.client
        kind, _, value = cache_key.partition(":")
        known = entries.tenant_id(value.encode()) if kind in ("uuid", "id") else None
        pointer = keys.pointer(cache_key)
        for _ in range(DROP_ATTEMPTS):
            raw = client.get(pointer)
            pointed = entries.tenant_id(raw)
            ids = sorted({i for i in (known, pointed) if i is not None})
            sets = [keys.aliases(i) for i in ids]
            pipe = client.pipeline(transaction=False)
            for name in sets:
                pipe.smembers(name)
            members = sorted({m for found in pipe.execute() for m in found})
            names = [keys.epoch, keys.entry(cache_key), pointer, *sets, *members]
            args = [raw or b"", len(sets)]
            epoch = self._scripts()._drop_script(keys=names, args=args)
            if epoch:
                self._seen(epoch)
                return ids
        raise redis.RedisError("the invalidation kept racing concurrent writes")

    def flush(self) -> None:
        """Delete every key of this app's L2 (never another app's), bumping the epoch.

        The epoch ends above every epoch this process saw, even if Redis had gone back.
        """
        client, keys = self.conn.client, self.keys
        # The epoch first: a load that read the old epoch cannot write back behind the scan.
        client.incr(keys.epoch)
        kept = keys.kept()
        pipe = client.pipeline(transaction=False)
        for name in client.scan_iter(match=keys.pattern, count=500):
            if name not in kept:
                pipe.unlink(name)
        pipe.execute()
        self.raise_counter(keys.epoch, self.highest_epoch + LOSS_MARGIN)
        self._seen(client.incr(keys.epoch))

    def raise_counter(self, key: str, floor: int) -> int:
        """Raise the counter ``key`` to at least ``floor``; its value (raises what Redis raises)."""
        return int(self._scripts()._raise_script(keys=[key], args=[floor]))

    def stats(self) -> dict[str, int]:
        """Loads claimed here, and loads waited for in another process (and answered)."""
        with self._lock:
            return {**self.counters, "unfinished": len(self._unfinished)}
