"""Cache entries and the bounded store both resolvers keep them in."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from cachetools import Cache, LRUCache

from ..identifiers import TenantIdentifier
from ..tenant import Tenant

__all__ = ["CachedTenant", "Found", "NotFound", "TenantLRU", "keys_to_invalidate", "names"]


class Found:
    """A cached tenant, with when it expires and when it was last read (for the idle timeout)."""

    __slots__ = ("expires", "tenant", "touched")

    def __init__(self, tenant: Tenant, now: float, expires: float) -> None:
        self.tenant: Tenant | None = tenant
        self.touched = now
        self.expires = expires


class NotFound:
    """A cached answer that no tenant has this identifier."""

    __slots__ = ("expires", "touched")
    tenant: ClassVar[None] = None

    def __init__(self, now: float, expires: float) -> None:
        self.touched = now
        self.expires = expires


#: What a cache holds under an identifier's key.
CachedTenant = Found | NotFound


class TenantLRU(LRUCache[str, CachedTenant]):
    """A cachetools LRU cache of entries that carry their own deadlines.

    When full, the least recently used entry is evicted. An entry past its ``expires``, or not
    read for ``idle`` seconds, is a miss; it is kept ``grace`` seconds more (to be served
    stale while the loader fails) and then removed, when read or by :meth:`sweep`. Checking
    deadlines on read keeps a hit to one LRU lookup (cachetools' TTL caches keep a heap and
    read the clock twice per lookup).

    Not-found entries may be capped at ``max_negative`` (the oldest dropped first), so a flood
    of unknown names cannot evict the tenants.
    """

    def __init__(
        self,
        maxsize: int,
        idle: float | None = None,
        *,
        grace: float = 0.0,
        max_negative: int | None = None,
    ) -> None:
        super().__init__(maxsize)
        self.idle = idle
        self.grace = grace
        self.max_negative = max_negative
        self._negatives: dict[str, None] = {}  # insertion-ordered: the oldest first
        self.evictions = 0
        self.negative_evictions = 0
        self.expirations = 0

    def deadline(self, entry: CachedTenant) -> float:
        """When ``entry`` expires, by its TTL or its idle timeout."""
        idle = self.idle
        return entry.expires if idle is None else min(entry.expires, entry.touched + idle)

    def __setitem__(self, key: str, entry: CachedTenant) -> None:
        super().__setitem__(key, entry)
        if entry.tenant is not None:
            self._negatives.pop(key, None)
            return
        self._negatives.pop(key, None)
        self._negatives[key] = None
        if self.max_negative is not None and len(self._negatives) > self.max_negative:
            del self[next(iter(self._negatives))]
            self.negative_evictions += 1

    def __delitem__(self, key: str) -> None:
        super().__delitem__(key)
        self._negatives.pop(key, None)

    def popitem(self) -> tuple[str, CachedTenant]:
        item = super().popitem()
        self.evictions += 1
        return item

    def clear(self) -> None:
        for key in list(Cache.__iter__(self)):
            del self[key]  # not popitem(): a clear is no eviction

    @property
    def negative_count(self) -> int:
        """How many not-found entries are stored."""
        return len(self._negatives)

    def live(self, key: str, now: float) -> CachedTenant | None:
        """The entry for ``key`` if it has not expired (marking it read); None otherwise."""
        try:
            entry = self[key]
        except KeyError:
            return None
        idle = self.idle
        if now < entry.expires and (idle is None or now - entry.touched < idle):
            entry.touched = now
            return entry
        if now >= self.deadline(entry) + self.grace:
            del self[key]
            self.expirations += 1
        return None

    def stale(self, key: str, now: float) -> Tenant | None:
        """The tenant of an expired found entry still within its grace period, or None."""
        if not Cache.__contains__(self, key):
            return None
        entry = Cache.__getitem__(self, key)
        if entry.tenant is not None and now < self.deadline(entry) + self.grace:
            return entry.tenant
        return None

    def sweep(self, now: float) -> None:
        """Remove every entry expired for longer than the grace period."""
        for key, entry in self.scan():
            if now >= self.deadline(entry) + self.grace:
                del self[key]
                self.expirations += 1

    def live_count(self, now: float) -> int:
        """How many entries have not expired (stale ones in their grace period excluded)."""
        return sum(now < self.deadline(entry) for _, entry in self.scan())

    def scan(self) -> list[tuple[str, CachedTenant]]:
        """Every stored entry, expired ones included, without touching the LRU order."""
        return [(key, Cache.__getitem__(self, key)) for key in list(Cache.__iter__(self))]

    def discard(self, key: str) -> bool:
        """Remove ``key`` if stored; return whether it was."""
        if key not in self:
            return False
        del self[key]
        return True


def names(tenant: Tenant, ident: TenantIdentifier) -> bool:
    """Whether ``ident`` is one of ``tenant``'s aliases."""
    if ident.kind == "slug":
        return tenant.slug == ident.value
    if ident.kind == "host":
        return ident.value in tenant.domains
    return str(tenant.id) == ident.value


def keys_to_invalidate(
    entries: Iterable[tuple[str, CachedTenant]], ident: TenantIdentifier
) -> list[str]:
    """The keys an invalidation of ``ident`` drops.

    That is every entry holding a tenant that ``ident`` names (whatever key it was cached
    under, old names of a renamed tenant included) and every not-found entry, since a name
    that was unknown may belong to the tenant just created or renamed.
    """
    entries = list(entries)
    target = ident.cache_key
    ids = {
        e.tenant.id
        for k, e in entries
        if e.tenant is not None and (k == target or names(e.tenant, ident))
    }
    return [k for k, e in entries if k == target or e.tenant is None or e.tenant.id in ids]
