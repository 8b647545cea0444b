"""One app's state: its settings, resolvers and Redis layer, and invalidation across them."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import Flask

from . import signals
from .config import Settings
from .control import Controller
from .figures import Figures
from .flags import Override, Rollout, parse_override
from .identifiers import InvalidIdentifier, TenantIdentifier, TenantIdentifierValidator
from .loaders import TenantLoader
from .mismatches import MismatchLog, MismatchStore
from .plan import ControlStore, LocalControlStore
from .resolvers.base import Resolver
from .resolvers.v1 import DualCacheResolver
from .resolvers.v2 import UnifiedCacheResolver
from .shadow import ShadowComparer
from .strategies import IdentificationStats, Identify, build_chain

if TYPE_CHECKING:
    from flask_tenant_cache.redis_layer import RedisLayer

    from .extension import TenantCache

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
    rollout: Rollout
    #: The ``redis=`` of ``init_app``: a client or a callable that returns one (or None).
    redis_source: Any = None
    resolvers: dict[str, Resolver] = field(default_factory=dict)
    redis: RedisLayer | None = None
    shadow: ShadowComparer | None = None
    #: The monotonic clock of the caches and the figures, and the wall clock of the plan.
    timer: Callable[[], float] = time.perf_counter
    clock: Callable[[], float] = time.time
    figures: Figures = field(init=False)
    control: Controller = field(init=False)
    #: Per endpoint, whether it is exempt (filled on first use).
    exempt: dict[str, bool] = field(default_factory=dict)
    #: The request's resolution (:func:`~.hook.make_hook`), set by ``init_app``.
    hook: Callable[..., None] = field(default=lambda *a, **k: None)
    #: The 400 message of a request that names no tenant.
    missing_message: str = ""
    identification_stats: IdentificationStats = field(default_factory=IdentificationStats)
    #: ``TENANT_CACHE_STRATEGIES`` as one function (see :func:`.strategies.build_chain`).
    identify: Identify = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.identify = build_chain(
            s, self.validator, self.ext._strategies, self.identification_stats
        )
        common: dict[str, Any] = {
            "ttl": s.ttl,
            "negative_ttl": s.negative_ttl,
            "load_timeout": s.load_timeout,
            "stale_if_error": s.stale_if_error,
            "max_negative_entries": s.negative_max_entries,
            "timer": self.timer,
        }
        if s.rollout_plan is not None and self.rollout.provider is not None:
            raise ValueError(
                "TENANT_CACHE_ROLLOUT_PLAN and a flag provider would both decide: choose one"
            )
        source = self.redis_source
        if isinstance(source, str):
            raise TypeError("redis= takes a client; a URL goes in TENANT_CACHE_REDIS_URL")
        if source is not None and s.redis_url is not None:
            raise ValueError(
                "TENANT_CACHE_REDIS_URL and redis= both name a Redis: give one of them"
            )
        if source is None:
            source = s.redis_url
        if source is not None:
            from flask_tenant_cache.redis_layer import RedisLayer

            self.redis = RedisLayer(
                source,
                prefix=s.redis_prefix,
                ttl=s.redis_ttl,
                channel=s.invalidation_channel,
                socket_timeout=s.redis_socket_timeout,
                load_timeout=s.load_timeout,
                on_invalidate=self.invalidate_local,
                on_resubscribe=self.flush_local,
                on_rollout=self._apply_rollout,
            )
            try:
                self.redis.check()
            except ValueError:
                self.redis.stop()
                raise
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
            resolver.l2 = self.redis.l2 if self.redis is not None else None
        self.resolvers = {"v1": v1, "v2": v2}
        self.figures = Figures(timer=self.timer)
        store: ControlStore = LocalControlStore()
        records: MismatchStore = MismatchLog(s.mismatch_records)
        if self.redis is not None:
            from .redis_layer.plan import RedisControlStore, RedisMismatchLog

            store = RedisControlStore(self.redis.conn, self.redis.keys)
            records = RedisMismatchLog(self.redis.conn, self.redis.keys, s.mismatch_records)
        elif s.rollout_plan is not None or s.guard is not None:
            logger.warning(
                "tenant cache: no TENANT_CACHE_REDIS_URL, so the rollout plan and the guard run"
                " in each process on its own: its own steps, its own trip, lost at a restart"
            )
        self.shadow = ShadowComparer(
            self.app,
            self.resolvers,
            timeout=s.shadow_timeout,
            figures=self.figures,
            records=records,
            clock=self.clock,
        )
        self.control = Controller(
            self.app,
            steps=s.rollout_plan,
            limits=s.guard,
            store=store,
            figures=self.figures,
            apply_percent=self._apply_plan,
            switch=lambda value: str(self.set_rollout(value)["scope"]),
            clock=self.clock,
            interval=s.control_interval,
        )
        if s.auto_invalidate:
            from .auto_invalidate import install
            from .loaders import SQLAlchemyTenantLoader

            if not isinstance(self.loader, SQLAlchemyTenantLoader):
                raise ValueError("TENANT_CACHE_AUTO_INVALIDATE needs a SQLAlchemyTenantLoader")
            install(self.loader)

    def invalidate(self, ident: TenantIdentifier | None) -> int:
        """Invalidate ``ident`` (None: everything) in Redis, here, and on every other process.

        Redis goes first: a request here that misses right after must not reload the stale
        entry from L2.
        """
        ids = self.redis.invalidate(ident) if self.redis is not None else []
        dropped = self.invalidate_local(None if ident is None else ident.cache_key, ids)
        signals.tenant_invalidated.send(self.app, identifier=ident, dropped=dropped)
        return dropped

    def invalidate_local(self, key: str | None, ids: list[str]) -> int:
        """Drop a key (None: everything) and the tenants with ``ids`` from this process."""
        if key is None:
            return self.flush_local()
        try:
            idents = [TenantIdentifier.from_cache_key(key)]
            idents += [TenantIdentifier.id(i) for i in ids]
        except (InvalidIdentifier, ValueError):
            logger.warning("tenant cache: invalidation of a malformed key ignored: %r", key[:80])
            return 0
        return sum(r.invalidate(i) for r in self.resolvers.values() for i in idents)

    def flush_local(self) -> int:
        """Drop every entry of this process's resolvers."""
        return sum(r.invalidate_all() for r in self.resolvers.values())

    def set_rollout(self, value: Any) -> dict[str, Any]:
        """Set the rollout override (None lifts it): on every process if Redis is configured.

        :raises ValueError: if ``value`` is not ``"v1"``, ``"v2"``, a percentage or None.
        :returns: the override and where it applies: ``"cluster"`` or ``"process"`` (Redis
            unreachable or not configured).
        """
        override = parse_override(value)
        self._apply_rollout(override)
        scope = "process"
        if self.redis is not None and self.redis.set_rollout(override):
            scope = "cluster"
        return {"override": override, "scope": scope}

    def _apply_plan(self, percent: float | None) -> None:
        self.rollout.plan_percent = percent

    def _apply_rollout(self, value: Any) -> None:
        try:
            override: Override | None = parse_override(value)
        except ValueError:
            logger.warning("tenant cache: invalid rollout override %r ignored", value)
            return
        self.rollout.override = override

    def stats(self) -> dict[str, Any]:
        """Each resolver's counters under its version; the Redis layer, rollout and shadow."""
        data: dict[str, Any] = {v: r.stats().as_dict() for v, r in self.resolvers.items()}
        rejected = getattr(self.loader, "rejected_rows", None)
        if isinstance(rejected, int):
            data["loader"] = {"rejected_rows": rejected}
        rollout = data["rollout"] = self.rollout.stats(self.app.config)
        shadow: dict[str, Any] = self.shadow.stats() if self.shadow is not None else {}
        shadow_lookups = shadow.get("lookups", {})
        # Counted from the resolvers' own lookups (under their locks), so the hot path takes
        # no lock of its own for it; shadow lookups are not requests served.
        rollout["served"] = {
            v: data[v]["hits"]
            + data[v].get("negative_hits", 0)
            + data[v]["misses"]
            - shadow_lookups.get(v, 0)
            for v in self.resolvers
        }
        data["identification"] = self.identification_stats.as_dict()
        if self.shadow is not None:
            data["shadow"] = shadow
        data["figures"] = self.figures.window()
        if self.control.active:
            data["control"] = self.control.status()
        if self.redis is not None:
            data["redis"] = self.redis.stats()
        return data

    def close(self) -> None:
        """Stop the shadow pool and the subscriber thread; close the Redis connections."""
        if self.shadow is not None:
            self.shadow.close()
        if self.redis is not None:
            self.redis.stop()
