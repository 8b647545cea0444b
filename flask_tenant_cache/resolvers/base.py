"""What every resolver shares: the protocol, cache entries, the load path and invalidation."""

from __future__ import annotations

import collections
import functools
import logging
import os
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Protocol

from ..errors import TenantLookupError
from ..identifiers import TenantIdentifier
from ..loaders import TenantLoader
from ..metrics import LoadStats, SecondLayerStats
from ..tenant import Tenant
from ._coalesce import SingleFlight
from ._store import TenantStore

__all__ = ["CachingResolver", "Resolver", "SecondLayer"]

logger = logging.getLogger("flask_tenant_cache")

#: How many invalidations a load may be overtaken by and still tell whether they concern it.
_RECENT_INVALIDATIONS = 256

Timer = Callable[[], float]


class Resolver(Protocol):
    """What the extension needs of a resolver."""

    @property
    def version(self) -> str:
        """``"v1"`` or ``"v2"``."""

    def resolve(self, ident: TenantIdentifier) -> Tenant | None:
        """The tenant ``ident`` names, None if there is none; raises TenantLookupError."""

    def invalidate(self, ident: TenantIdentifier) -> int:
        """Drop every cached alias of the tenant ``ident`` names; return the entries dropped."""

    def invalidate_all(self) -> int:
        """Drop every entry; return how many there were."""

    def warm(self, tenants: Iterable[Tenant]) -> int:
        """Store ``tenants`` under all their aliases; return how many tenants were stored."""

    def stats(self) -> Any:
        """A snapshot of the counters, with ``as_dict()``."""


class SecondLayer(Protocol):
    """A cache shared by processes (Redis), read on an L1 miss before the loader."""

    def get(self, ident: TenantIdentifier) -> tuple[bool | None, Tenant | None, Any]:
        """``(hit, tenant, token)``: hit is None when the layer failed; ``token`` guards put."""

    def put(self, ident: TenantIdentifier, tenant: Tenant | None, token: Any) -> bool:
        """Store ``tenant`` (None: not found) unless an invalidation came after ``token``;
        False if it failed."""

    def abandon(self, ident: TenantIdentifier) -> None:
        """The load that :meth:`get` let this process make failed."""


class CachingResolver(ABC):
    """The load path both resolvers share: coalesced loads, guarded against invalidation races.

    A hit reads the store's table without a lock (a dict read, a deadline check and two
    attribute writes); misses, loads, invalidations and stats take ``self._lock``.
    Subclasses choose the store's bounds (see :class:`~._store.TenantStore`) and shape
    :meth:`stats`; the options below are theirs too.

    :param loader: what :meth:`resolve` calls on a miss.
    :param bounds: the store's ``max_found``, ``max_total``, ``max_negative`` and ``idle``.
    :param ttl: seconds a found tenant is cached.
    :param negative_ttl: seconds a not-found answer is cached (0: not at all).
    :param load_timeout: seconds a request waits for another's load before a 503.
    :param stale_if_error: seconds after its expiry that a tenant is still served while the
        loader fails (0: never).
    :param timer: the clock, injected so tests move time instead of sleeping.
    """

    version: ClassVar[str]

    def __init__(
        self,
        loader: TenantLoader,
        *,
        bounds: dict[str, Any],
        ttl: float = 300.0,
        negative_ttl: float = 30.0,
        load_timeout: float | None = 5.0,
        stale_if_error: float = 0.0,
        timer: Timer = time.monotonic,
    ) -> None:
        self.loader = loader
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.stale_if_error = stale_if_error
        #: The optional second layer shared by processes (see :mod:`.redis_layer`).
        self.l2: SecondLayer | None = None
        self._store = store = TenantStore(grace=stale_if_error, **bounds)
        self._idle = store.idle
        self._timer = timer
        self._lock = threading.Lock()
        self._flights: SingleFlight[Tenant | None] = SingleFlight(load_timeout)
        # The invalidations made so far, and the last few with the keys they dropped: a load
        # that an invalidation of its tenant overtook returns its result to the requests that
        # were waiting for it but does not store it. Loads of other tenants are unaffected.
        self._seq = 0
        self._recent: collections.deque[tuple[int, frozenset[str] | None]] = collections.deque(
            maxlen=_RECENT_INVALIDATIONS
        )
        self._hits = self._negative_hits = self._misses = 0
        self._loads = self._load_errors = self._stale_loads = self._invalidations = 0
        self._stale_serves = 0
        self._load_time_sum = self._load_time_max = 0.0
        self._l2_hits = self._l2_misses = self._l2_errors = 0
        os.register_at_fork(after_in_child=functools.partial(_after_fork, weakref.ref(self)))

    def resolve(self, ident: TenantIdentifier) -> Tenant | None:
        """Return the tenant ``ident`` names, or None; one coalesced load on a miss.

        :raises TenantLookupError: if the loader failed (never cached as not-found).
        """
        key = ident.cache_key
        now = self._timer()
        entry = self._store.table.get(key)
        # The counter and the marks are plain attribute writes: with the GIL no other thread
        # runs between the read and the write of ``+= 1`` (no call and no loop between them).
        if entry is not None and now < entry.expires and now - entry.touched < self._idle:
            entry.touched = now
            entry.stamp = hits = self._hits + 1
            self._hits = hits
            return entry.tenant
        with self._lock:
            store = self._store
            if store.negative(key, now) is not None:
                self._negative_hits += 1
                return None
            store.expire(key, now)
            self._misses += 1
        return self._flights.do(key, lambda: self._load(ident))

    def _load(self, ident: TenantIdentifier) -> Tenant | None:
        key = ident.cache_key
        with self._lock:
            # A load that finished just before this one began may have stored it already.
            entry = self._store.peek(key, self._timer())
            if entry is not None:
                return entry.tenant
            seq = self._seq
        started = self._timer()
        try:
            tenant = self._fetch(ident)
        except Exception as exc:
            with self._lock:
                self._load_errors += 1
                stale = self._store.stale(key, self._timer()) if self.stale_if_error else None
                if stale is not None:
                    self._stale_serves += 1
            logger.warning("tenant lookup for %s failed: %r", key, exc)
            if stale is not None:
                return stale  # never stored: the next request tries the loader again
            if isinstance(exc, TenantLookupError):
                raise
            raise TenantLookupError("the tenant could not be looked up") from exc
        elapsed = self._timer() - started
        with self._lock:
            self._loads += 1
            self._load_time_sum += elapsed
            self._load_time_max = max(self._load_time_max, elapsed)
            if self._overtaken(seq, tenant, key):
                self._stale_loads += 1
            else:
                self._put(key, tenant, self._timer())
        return tenant

    def _overtaken(self, seq: int, tenant: Tenant | None, key: str | None) -> bool:
        """Whether an invalidation since ``seq`` concerns ``tenant`` (loaded by ``key``)."""
        if seq == self._seq:
            return False
        recent = self._recent
        if not recent or recent[0][0] > seq + 1 or tenant is None:
            # The log no longer reaches back that far; or a not-found answer, which every
            # invalidation drops (the name may belong to the tenant just created or renamed).
            return True
        names = tenant.alias_keys if key is None else tenant.alias_keys | {key}
        for made, keys in reversed(recent):
            if made <= seq:
                break
            if keys is None or not names.isdisjoint(keys):
                return True
        return False

    def _put(self, key: str, tenant: Tenant | None, now: float) -> None:
        store = self._store
        if tenant is not None:
            store.put_found(key, tenant, now, now + self.ttl, self._stamp())
        elif self.negative_ttl > 0:
            store.put_missing(key, now, now + self.negative_ttl)
        else:
            store.discard(key)

    def _stamp(self) -> float:
        # A store comes after the hits counted so far and before the next one: between them.
        return self._hits + 0.5

    def _fetch(self, ident: TenantIdentifier) -> Tenant | None:
        """Ask the second layer, if any, then the loader (whose tenant goes to the layer)."""
        l2, token = self.l2, None
        if l2 is not None:
            hit, cached, token = l2.get(ident)
            with self._lock:
                if hit:
                    self._l2_hits += 1
                    return cached
                if hit is None:
                    self._l2_errors += 1
                else:
                    self._l2_misses += 1
        try:
            tenant = self.loader.load(ident)
            if tenant is not None and not isinstance(tenant, Tenant):
                raise TypeError(f"the loader returned {type(tenant).__name__}, not Tenant or None")
        except Exception:
            if l2 is not None and token is not None:
                l2.abandon(ident)  # the other processes waiting for it load for themselves
            raise
        stored = l2 is None or token is None or l2.put(ident, tenant, token)
        if not stored:
            with self._lock:
                self._l2_errors += 1
        return tenant

    def invalidate(self, ident: TenantIdentifier) -> int:
        """Drop every cached alias of the tenant ``ident`` names, and all not-found entries.

        Costs the number of that tenant's aliases, whatever the size of the store. Every load
        in flight is detached (there are as many as requests running, not as tenants cached):
        a request after this one returns must not wait for a load that began before it, and
        a load by any name may concern the tenant, whose new names are not known until it is
        loaded again. Only the loads of this tenant are kept from storing their result.
        """
        key = ident.cache_key
        with self._lock:
            store = self._store
            dropped, keys = store.discard(key)
            dropped += store.drop_negatives()
            self._record(keys)
        self._flights.forget()
        return dropped

    def invalidate_all(self) -> int:
        """Drop every entry; return how many there were."""
        with self._lock:
            dropped = self._store.clear()
            self._record(None)
        self._flights.forget()
        return dropped

    def _record(self, keys: frozenset[str] | None) -> None:
        self._seq += 1
        self._invalidations += 1
        self._recent.append((self._seq, keys))

    def warm(self, tenants: Iterable[Tenant]) -> int:
        """Store ``tenants`` under all their aliases; return how many were stored.

        A tenant that an invalidation concerned while the warm-up was under way is left out,
        as a load would be: it may have been read before the change that was invalidated.
        """
        with self._lock:
            seq = self._seq
        stored = 0
        for tenant in tenants:
            with self._lock:
                if self._overtaken(seq, tenant, None):
                    self._stale_loads += 1
                    continue
                now = self._timer()
                self._store.put_found(None, tenant, now, now + self.ttl, self._stamp())
                stored += 1
        return stored

    def _load_stats(self) -> LoadStats:
        return LoadStats(
            loads=self._loads,
            load_errors=self._load_errors,
            load_time_sum=self._load_time_sum,
            load_time_max=self._load_time_max,
            coalesced=self._flights.coalesced,
            load_timeouts=self._flights.timeouts,
            stale_loads_discarded=self._stale_loads,
            stale_serves=self._stale_serves,
        )

    def _l2_stats(self) -> SecondLayerStats:
        return SecondLayerStats(self._l2_hits, self._l2_misses, self._l2_errors)

    @abstractmethod
    def stats(self) -> Any:
        """A snapshot of the counters, with ``as_dict()``."""


def _after_fork(ref: weakref.ref[CachingResolver]) -> None:
    # A load in flight in the parent never finishes in the child, and a lock held there stays
    # held: the child starts with its own.
    resolver = ref()
    if resolver is not None:
        resolver._lock = threading.Lock()
        resolver._flights = SingleFlight(resolver._flights.timeout)
