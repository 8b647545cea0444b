"""The bounded tenant store both resolvers keep their entries in, indexed by alias."""

from __future__ import annotations

import collections
import math
from typing import Any, ClassVar

from cachetools import Cache, LRUCache

from ..tenant import Tenant

__all__ = ["CachedTenant", "Found", "NotFound", "TenantStore"]

#: The ``expires`` of an entry taken out of the store: a reader that fetched it just before
#: sees it expired, so an invalidated tenant is never served after ``invalidate()`` returns.
_REMOVED = -math.inf

#: How many entries the clock hand passes per write, reclaiming expired and removed ones.
_HAND_STEPS = 2
#: How many tenants at the hand an eviction compares, evicting the least recently read: as
#: exact as LRU for a store that small, and close to it beyond (the way Redis approximates
#: LRU), without reordering anything on a hit.
_SAMPLES = 8
#: How many entries of a swapped-out table are released per write or stats call.
_RELEASE_STEPS = 256


class Found:
    """A cached tenant, stored under every one of its alias keys (one object per tenant).

    ``touched`` is when it was last read (for the idle timeout); ``stamp`` orders reads and
    stores for eviction: the resolver's hit count at the last read, plus a half if it has
    not been read since it was stored.
    """

    __slots__ = ("expires", "extra_key", "stamp", "tenant", "touched")

    def __init__(
        self, tenant: Tenant, now: float, expires: float, stamp: float, extra_key: str | None
    ) -> None:
        self.tenant: Tenant | None = tenant
        self.touched = now
        self.expires = expires
        self.stamp = stamp
        #: The key it was loaded by when that is not one of its aliases (a loader's choice).
        self.extra_key = extra_key

    def aliases(self) -> frozenset[str]:
        """The keys this entry is stored under."""
        assert self.tenant is not None
        keys = self.tenant.alias_keys
        return keys if self.extra_key is None else keys | {self.extra_key}


class NotFound:
    """A cached answer that no tenant has ``key``, valid for one generation."""

    __slots__ = ("expires", "gen", "key", "touched")
    tenant: ClassVar[None] = None

    def __init__(self, key: str, now: float, expires: float, gen: int) -> None:
        self.key = key
        self.touched = now
        self.expires = expires
        self.gen = gen


#: What a store holds under an identifier's key.
CachedTenant = Found | NotFound


class _Negatives(LRUCache[str, NotFound]):
    """The not-found entries: a cachetools LRU cache whose entries die with their generation.

    Every invalidation may have created a tenant under a name answered "not found", so it
    drops them all; bumping :attr:`gen` does that in O(1): an entry of an older generation is
    a miss, and LRU eviction reclaims it. ``current`` counts the entries of this generation.
    """

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self.gen = 0
        self.current = 0
        self.evictions = 0

    def __setitem__(self, key: str, entry: NotFound) -> None:
        self._forget(key)
        super().__setitem__(key, entry)
        self.current += 1

    def __delitem__(self, key: str) -> None:
        self._forget(key)
        super().__delitem__(key)

    def popitem(self) -> tuple[str, NotFound]:
        key, entry = super().popitem()  # through __delitem__, which keeps ``current``
        if entry.gen == self.gen:
            self.evictions += 1
        return key, entry

    def _forget(self, key: str) -> None:
        entry = self.peek(key)
        if entry is not None and entry.gen == self.gen:
            self.current -= 1

    def peek(self, key: str) -> NotFound | None:
        """The entry for ``key``, leaving the LRU order alone."""
        try:
            return Cache.__getitem__(self, key)
        except KeyError:
            return None

    def bump(self) -> int:
        """Invalidate every entry; return how many were current."""
        dropped, self.current = self.current, 0
        self.gen += 1
        return dropped


class TenantStore:
    """Found tenants and not-found answers, bounded, with O(aliases) invalidation.

    A found tenant is one :class:`Found` entry stored in :attr:`table` under every alias key
    (its id, slug and domains), so an invalidation by any alias finds every key of that
    tenant in one lookup, and a fresher snapshot of a tenant (after a rename) replaces every
    key of the old one. Reading :attr:`table` takes no lock; everything else is called with
    the owning resolver's lock held.

    Found tenants are kept in a ring; an eviction compares the few at its hand and evicts the
    least recently read, which approximates LRU without reordering anything on a hit. The
    hand also moves a couple of steps on every write, reclaiming entries expired
    for longer than ``grace`` and dropping ring slots of removed entries, so nothing ever
    scans the store. Not-found answers live in a cachetools LRU cache of their own
    (:class:`_Negatives`), bounded by ``max_negative``.

    Bounds count entries: a found tenant is one entry, whatever its number of aliases, and so
    is a not-found answer.

    :param max_found: the most found tenants (None: only ``max_total`` binds).
    :param max_total: the most entries of both kinds together (None: each its own bound).
    :param max_negative: the most not-found answers.
    :param idle: seconds after its last read that an entry expires (None: never).
    :param grace: seconds an expired tenant is kept to be served while the loader fails.
    """

    def __init__(
        self,
        *,
        max_found: int | None,
        max_total: int | None,
        max_negative: int,
        idle: float | None = None,
        grace: float = 0.0,
    ) -> None:
        self.max_found = max_found if max_found is not None else math.inf
        self.max_total = max_total if max_total is not None else math.inf
        self.idle = idle if idle is not None else math.inf
        self.grace = grace
        #: Key -> found entry. Readers use it without the lock.
        self.table: dict[str, Found] = {}
        self._ring: collections.deque[Found] = collections.deque()
        self._negatives = _Negatives(max_negative)
        # Not-found entries in the order they were stored, for reclaiming expired ones.
        self._negative_ring: collections.deque[NotFound] = collections.deque()
        #: Found tenants held, and the keys they are held under.
        self.found = 0
        self.found_keys = 0
        self.evictions = 0
        self.expirations = 0
        # Tables swapped out by clear(), released a bounded number of entries at a time.
        self._garbage: list[Any] = []

    # -- reads ------------------------------------------------------------------------------

    def deadline(self, entry: CachedTenant) -> float:
        """When ``entry`` expires, by its TTL or its idle timeout."""
        return min(entry.expires, entry.touched + self.idle)

    def negative(self, key: str, now: float) -> NotFound | None:
        """The live not-found entry for ``key`` (marking it read), or None."""
        negatives = self._negatives
        entry = negatives.get(key)
        if entry is None:
            return None
        if entry.gen == negatives.gen and now < self.deadline(entry):
            entry.touched = now
            return entry
        if entry.gen == negatives.gen:
            self.expirations += 1
        del negatives[key]
        return None

    def peek(self, key: str, now: float) -> CachedTenant | None:
        """The live entry for ``key`` of either kind, without marking it read."""
        entry = self.table.get(key)
        if entry is not None and now < self.deadline(entry):
            return entry
        negative = self._negatives.peek(key)
        if negative is not None and negative.gen == self._negatives.gen:
            return negative if now < self.deadline(negative) else None
        return None

    def expire(self, key: str, now: float) -> None:
        """Reclaim the found entry for ``key`` if it expired for longer than the grace."""
        entry = self.table.get(key)
        if entry is not None and now >= self.deadline(entry) + self.grace:
            self._remove(entry)
            self.expirations += 1

    def stale(self, key: str, now: float) -> Tenant | None:
        """The tenant of an expired found entry still within its grace period, or None."""
        entry = self.table.get(key)
        if entry is not None and now < self.deadline(entry) + self.grace:
            return entry.tenant
        return None

    @property
    def negative_count(self) -> int:
        """How many not-found entries are current."""
        return self._negatives.current

    @property
    def negative_bound(self) -> int:
        """The most not-found answers kept."""
        return int(self._negatives.maxsize)

    @property
    def negative_evictions(self) -> int:
        """Not-found entries evicted by their bound."""
        return self._negatives.evictions

    @property
    def size(self) -> int:
        """Entries held (found tenants and not-found answers), expired ones included."""
        return self.found + len(self._negatives)

    # -- writes -----------------------------------------------------------------------------

    def put_found(
        self, key: str | None, tenant: Tenant, now: float, expires: float, stamp: float
    ) -> None:
        """Store ``tenant`` under all its aliases (and ``key``), replacing what they held."""
        keys = tenant.alias_keys
        extra = None if key is None or key in keys else key
        entry = Found(tenant, now, expires, stamp, extra)
        if extra is not None:
            keys = keys | {extra}
        negatives = self._negatives
        table = self.table
        for alias in keys:
            held = table.get(alias)
            if held is not None:
                # An older snapshot of this tenant, or another tenant that held this name
                # before a rename: either way it no longer tells the truth about it.
                self._remove(held)
            if alias in negatives:
                del negatives[alias]
        for alias in keys:
            table[alias] = entry
        self.found += 1
        self.found_keys += len(keys)
        self._ring.append(entry)
        self._advance(now)
        self._evict_found(now)

    def put_missing(self, key: str, now: float, expires: float) -> None:
        """Store a not-found answer for ``key``."""
        held = self.table.get(key)
        if held is not None:
            self._remove(held)
        negatives = self._negatives
        entry = negatives[key] = NotFound(key, now, expires, negatives.gen)
        self._negative_ring.append(entry)
        while self.size > self.max_total and len(negatives) > 1:
            negatives.popitem()
        self._advance(now)
        self._evict_found(now)

    def discard(self, key: str) -> tuple[int, frozenset[str]]:
        """Remove what ``key`` holds: its tenant under every alias, or its not-found answer.

        :returns: how many entries were dropped (a tenant is one, under all its aliases), and
            the keys they were held under (``key`` itself among them).
        """
        dropped, keys = 0, frozenset((key,))
        entry = self.table.get(key)
        if entry is not None:
            keys |= entry.aliases()
            dropped += self._remove(entry, keys) > 0
        negatives = self._negatives
        negative = negatives.peek(key)
        if negative is not None:
            dropped += negative.gen == negatives.gen
            del negatives[key]
        return dropped, keys

    def drop_negatives(self) -> int:
        """Invalidate every not-found answer in O(1); return how many there were."""
        return self._negatives.bump()

    def clear(self) -> int:
        """Drop everything in O(1): the old table is released a bounded amount per write."""
        dropped = self.found + self.drop_negatives()
        self._garbage += [self.table, self._ring]
        self.table, self._ring = {}, collections.deque()
        self.found = self.found_keys = 0
        return dropped

    def maintain(self, now: float) -> None:
        """Advance the hand and release swapped-out tables, a bounded amount (stats calls)."""
        self._advance(now)

    def _remove(self, entry: Found, keys: frozenset[str] | None = None) -> int:
        """Take ``entry`` out under each of its keys (``keys``, when the caller has them)."""
        table = self.table
        count = 0
        for alias in keys if keys is not None else entry.aliases():
            if table.get(alias) is entry:
                del table[alias]
                count += 1
        if count:
            self.found -= 1
            self.found_keys -= count
        entry.expires = _REMOVED
        return count

    def _advance(self, now: float) -> None:
        ring = self._ring
        for _ in range(min(_HAND_STEPS, len(ring))):
            entry = ring.popleft()
            if entry.expires == _REMOVED:
                continue
            if now >= self.deadline(entry) + self.grace:
                self._remove(entry)
                self.expirations += 1
                continue
            ring.append(entry)
        self._advance_negatives(now)
        self._release()

    def _advance_negatives(self, now: float) -> None:
        ring, negatives = self._negative_ring, self._negatives
        for _ in range(min(_HAND_STEPS, len(ring))):
            entry = ring.popleft()
            if negatives.peek(entry.key) is not entry:
                continue  # replaced, evicted or dropped since
            if entry.gen == negatives.gen and now < self.deadline(entry):
                ring.append(entry)
                continue
            if entry.gen == negatives.gen:
                self.expirations += 1
            del negatives[entry.key]

    def _release(self) -> None:
        if not self._garbage:
            return
        old = self._garbage[-1]
        for _ in range(min(_RELEASE_STEPS, len(old))):
            old.popitem() if isinstance(old, dict) else old.pop()
        if not old:
            self._garbage.pop()

    def _evict_found(self, now: float) -> None:
        ring = self._ring
        while ring and (self.found > self.max_found or self.size > self.max_total):
            sample: list[Found] = []
            while ring and len(sample) < _SAMPLES:
                entry = ring.popleft()
                if entry.expires == _REMOVED:
                    continue
                if now >= self.deadline(entry):
                    self._remove(entry)
                    self.expirations += 1
                    break
                sample.append(entry)
            else:
                if sample:
                    victim = min(sample, key=_stamp)
                    sample.remove(victim)
                    self._remove(victim)
                    self.evictions += 1
            ring.extend(sample)


def _stamp(entry: Found) -> float:
    return entry.stamp
