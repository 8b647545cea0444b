"""One app's state: its settings, resolvers and Redis layer, and invalidation across them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import Flask

from .config import Settings
from .flags import FlagProvider
from .identifiers import InvalidIdentifier, TenantIdentifier, TenantIdentifierValidator
from .loaders import TenantLoader
from .resolvers.base import Resolver
from .resolvers.v1 import DualCacheResolver
from .resolvers.v2 import UnifiedCacheResolver

if TYPE_CHECKING:
    from .extension import TenantCache
    from .redis_layer import RedisLayer

__all__ = ["AppState"]

logger = logging.getLogger("flask_tenant_cache")


@dataclass(slots=True)
class AppState:
    """What one app's ``init_app`` set up; kept in ``app.extensions["tenant_cache"]``."""

    ext: TenantCache
    app: Flask
    settings: Settings
    validator: TenantIdentifierValidator
    loader: TenantLoader
    flag_provider: FlagProvider
    resolvers: dict[str, Resolver] = field(default_factory=dict)
    redis: RedisLayer | None = None
    #: Per endpoint, whether it is exempt (filled on first use).
    exempt: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        s = self.settings
        common: dict[str, Any] = {
            "ttl": s.ttl,
            "negative_ttl": s.negative_ttl,
            "load_timeout": s.load_timeout,
        }
        if s.redis_url is not None:
            from .redis_layer import RedisLayer

            self.redis = RedisLayer(
                s.redis_url,
                prefix=s.redis_prefix,
                ttl=s.redis_ttl,
                channel=s.invalidation_channel,
                socket_timeout=s.redis_socket_timeout,
                on_invalidate=self.invalidate_local,
                on_resubscribe=self.flush_local,
            )
        v1 = DualCacheResolver(
            self.loader,
            max_entries=s.v1_max_entries,
            bus_stats=self.redis.stats if self.redis is not None else None,
            **common,
        )
        v2 = UnifiedCacheResolver(
            self.loader, idle_timeout=s.idle_timeout, max_entries=s.max_entries, **common
        )
        for resolver in (v1, v2):
            resolver.l2 = self.redis
        self.resolvers = {"v1": v1, "v2": v2}

    def invalidate(self, ident: TenantIdentifier | None) -> int:
        """Invalidate ``ident`` (None: everything) in Redis, here, and on every other process.

        Redis goes first: a request here that misses right after must not reload the stale
        entry from L2.
        """
        ids = self.redis.invalidate(ident) if self.redis is not None else []
        return self.invalidate_local(None if ident is None else ident.cache_key, ids)

    def invalidate_local(self, key: str | None, ids: list[str]) -> int:
        """Drop a key (None: everything) and the tenants with ``ids`` from this process."""
        if key is None:
            return self.flush_local()
        try:
            idents = [TenantIdentifier.from_cache_key(key)]
            idents += [TenantIdentifier.uuid(i) for i in ids]
        except (InvalidIdentifier, ValueError):
            logger.warning("tenant cache: invalidation of a malformed key ignored: %r", key[:80])
            return 0
        return sum(r.invalidate(i) for r in self.resolvers.values() for i in idents)

    def flush_local(self) -> int:
        """Drop every entry of this process's resolvers."""
        return sum(r.invalidate_all() for r in self.resolvers.values())

    def stats(self) -> dict[str, Any]:
        """Each resolver's counters under its version, and the Redis layer's under "redis"."""
        data: dict[str, Any] = {v: r.stats().as_dict() for v, r in self.resolvers.items()}
        if self.redis is not None:
            data["redis"] = self.redis.stats()
        return data

    def close(self) -> None:
        """Stop the subscriber thread and close the Redis connections."""
        if self.redis is not None:
            self.redis.stop()
