"""The before_request hook: identify, decide, resolve, and keep the result on ``g``."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from flask import g, request

from . import signals
from .config import live_percent
from .errors import (
    InvalidTenantIdentifier,
    MissingTenantIdentifier,
    TenantLookupError,
    TenantNotFound,
)
from .flags import Decision
from .identifiers import InvalidIdentifier, TenantIdentifier
from .tenant import Tenant

if TYPE_CHECKING:
    from .state import AppState

__all__ = ["current_decision", "current_tenant_or_none", "make_hook"]


def current_tenant_or_none() -> Tenant | None:
    """The current request's tenant, or None."""
    tenant: Tenant | None = g.get("_tenant_cache_tenant")
    return tenant


def current_decision() -> Decision | None:
    """The current request's rollout decision, or None if no resolver served it."""
    decision: Decision | None = g.get("_tenant_cache_decision")
    return decision


def make_hook(state: AppState) -> Callable[[], None]:
    """The before_request hook for one app, with its state bound (no lookup per request)."""
    settings = state.settings
    header_key = settings.header_environ_key
    parse_header = state.validator.parse_header
    parse_host = state.validator.parse_host
    exempt = state.exempt
    resolvers = state.resolvers
    config = state.app.config
    is_exempt = state.ext._is_exempt
    decide = state.rollout.decide
    shadow = state.shadow
    resolved = signals.tenant_resolved
    bus = state.redis
    timer = state.timer
    control = state.control
    missing = f"no tenant: send the {settings.header} header or use a tenant's host"

    def sampled() -> bool:
        rate = live_percent(config, "TENANT_CACHE_SHADOW_PERCENT")
        return bool(rate) and random.random() * 100 < rate  # type: ignore[operator]  # noqa: S311 - sampling, not secrets

    def resolve_tenant() -> None:
        started = timer()
        # Each proxy resolved once: a proxy lookup costs more than the cache hit itself.
        req = request._get_current_object()  # type: ignore[attr-defined]
        ctx_g = g._get_current_object()
        # Cleared first: an app context pushed by the caller (tests, scripts) outlives requests.
        ctx_g._tenant_cache_tenant = ctx_g._tenant_cache_decision = None
        ctx_g._tenant_cache_timing = None
        endpoint = req.endpoint
        if endpoint is None:
            return  # no route matched: the 404 needs no tenant
        skip = exempt.get(endpoint)
        if skip is None:
            skip = exempt[endpoint] = is_exempt(state, endpoint)
        if skip:
            return
        environ = req.environ
        raw = environ.get(header_key)
        try:
            if raw is not None:
                ident: TenantIdentifier | None = parse_header(raw)
            else:
                host = environ.get("HTTP_HOST")
                ident = parse_host(host) if host else None
        except InvalidIdentifier as exc:
            raise InvalidTenantIdentifier(str(exc)) from None
        if ident is None:
            if settings.required:
                raise MissingTenantIdentifier(missing)
            return
        if bus is not None and not bus.serving:
            bus.start()  # here, not in init_app: the serving process may be a fork
            if control.active:
                control.tick()  # the shared plan decides this first request too
        decision = ctx_g._tenant_cache_decision = decide(ident, req, config)
        version = decision.version
        resolving = timer()
        try:
            tenant = resolvers[version].resolve(ident)
        except TenantLookupError as exc:
            ctx_g._tenant_cache_timing = (version, started, resolving, timer(), True)
            if shadow is not None and sampled():
                shadow.submit(version, ident, type(exc).__name__)
            raise
        ctx_g._tenant_cache_timing = (version, started, resolving, timer(), False)
        if shadow is not None and sampled():
            shadow.submit(version, ident, tenant)
        if tenant is None or not tenant.is_active:
            raise TenantNotFound("no tenant answers to this identifier")
        ctx_g._tenant_cache_tenant = tenant
        if resolved.receivers:
            resolved.send(state.app, tenant=tenant, identifier=ident, version=version)

    return resolve_tenant
