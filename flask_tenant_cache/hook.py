"""The before_request hook: identify, decide, resolve, and keep the result on ``g``."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING

from flask import g

from . import signals
from ._context import app_context, request_context
from .config import live_percent
from .errors import (
    ConflictingTenantIdentifiers,
    InvalidTenantIdentifier,
    MissingTenantIdentifier,
    TenantLookupError,
    TenantNotFound,
)
from .figures import TIMING_KEY
from .flags import Decision
from .identifiers import InvalidIdentifier
from .resolvers.base import Resolver
from .strategies import Identification, IdentificationStats
from .tenant import Tenant

if TYPE_CHECKING:
    from .state import AppState

__all__ = [
    "TENANT_KEY",
    "current_decision",
    "current_identification",
    "current_tenant_or_none",
    "make_hook",
]


#: Where the hook keeps the request's tenant on ``g`` (read by ``current_tenant`` too).
TENANT_KEY = "_tenant_cache_tenant"

#: The ``g`` proxy's own lookup, taken once. Reading ``g.__dict__`` through it costs a tenth
#: of ``g.get``, which resolves the proxy and calls a Python method on every read.
_current_g = g._get_current_object


def current_tenant_or_none() -> Tenant | None:
    """The current request's tenant, or None."""
    tenant: Tenant | None = _current_g().__dict__.get(TENANT_KEY)
    return tenant


def current_decision() -> Decision | None:
    """The current request's rollout decision, or None if no resolver served it."""
    decision: Decision | None = _current_g().__dict__.get("_tenant_cache_decision")
    return decision


def current_identification() -> Identification | None:
    """Which strategy named the current request's tenant and by which alias, or None."""
    found: Identification | None = _current_g().__dict__.get("_tenant_cache_identification")
    return found


_SHADOW_PERCENT = "TENANT_CACHE_SHADOW_PERCENT"


def _confirm(
    found: Identification, tenant: Tenant, resolver: Resolver, stats: IdentificationStats
) -> Identification:
    """``found`` with only the later names that name ``tenant`` too; a 400 if one names another.

    The resolved tenant carries all its aliases, so a second name of it costs no lookup. Only
    a name that is not among them is looked up (in cache first), to tell a name of another
    tenant (a conflict) from one that names none, such as an API host under a base domain.
    """
    confirmed = []
    for other in found.confirmed_by:
        ident = other.identifier
        if not tenant.answers_to(ident):
            stats.add("second_lookups")
            named = resolver.resolve(ident)
            if named is None or not named.is_active:
                continue
            if named.id != tenant.id:
                stats.add("conflicts")
                raise ConflictingTenantIdentifiers(
                    f"the {found.strategy} and the {other.strategy} name different tenants"
                )
        confirmed.append(other)
    if len(confirmed) == len(found.confirmed_by):
        return found
    return found._replace(confirmed_by=tuple(confirmed))


def make_hook(state: AppState) -> Callable[..., None]:
    """The before_request hook for one app, with its state bound (no lookup per request).

    With ``exempt_too=True`` it resolves an exempt request as well, for
    :func:`~.extension.require_tenant`.
    """
    settings = state.settings
    identify = state.identify
    id_stats = state.identification_stats
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
    ways = {
        "header": f"send the {settings.header} header",
        "host": "use a tenant's host",
        "path": f"use a URL under {settings.path_prefix}/<tenant>/",
    }
    missing = state.missing_message = "no tenant: " + " or ".join(
        ways.get(name, f"let the {name} strategy name one") for name in settings.strategies
    )
    preflight_exempt = settings.exempt_preflight

    def sampled() -> bool:
        rate = live_percent(config, _SHADOW_PERCENT)
        return bool(rate) and random.random() * 100 < rate  # type: ignore[operator]  # noqa: S311 - sampling, not secrets

    def resolve_tenant(exempt_too: bool = False) -> None:
        # Read from Flask's context variables, not its proxies (see ._context); g through
        # its dict: g's __setattr__ is Python code, several times the cost.
        req = request_context.get().request
        ctx_vars = app_context.get().g.__dict__
        # Cleared first: an app context pushed by the caller (tests, scripts) outlives requests.
        ctx_vars[TENANT_KEY] = ctx_vars["_tenant_cache_decision"] = None
        ctx_vars["_tenant_cache_identification"] = None
        if not exempt_too:
            rule = req.url_rule  # what ``req.endpoint`` reads, without its property call
            if rule is None:
                return  # no route matched: the 404 needs no tenant
            endpoint = rule.endpoint
            skip = exempt.get(endpoint)
            if skip is None:
                skip = exempt[endpoint] = is_exempt(state, endpoint)
            # A CORS preflight cannot carry the tenant header (the browser sends none of the
            # request's own headers), so it would always fail.
            if skip or (
                preflight_exempt
                and req.method == "OPTIONS"
                and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in req.environ
            ):
                return
        environ = req.environ
        try:
            found = identify(environ, req)
        except InvalidIdentifier as exc:
            raise InvalidTenantIdentifier(str(exc)) from None
        if found is None:
            if settings.required:
                raise MissingTenantIdentifier(missing)
            return
        ident = found.identifier
        if bus is not None and not bus.serving:
            bus.start()  # here, not in init_app: the serving process may be a fork
            if control.active:
                control.tick()  # the shared plan decides this first request too
        decision = ctx_vars["_tenant_cache_decision"] = decide(ident, req, config)
        version = decision.version
        # A rate unset or 0 is off without a call; any other value is checked by sampled().
        shadowing = shadow if config.get(_SHADOW_PERCENT) else None
        resolving = timer()
        try:
            tenant = resolvers[version].resolve(ident)
        except TenantLookupError as exc:
            environ[TIMING_KEY] = (version, resolving, timer(), True)
            if shadowing is not None and sampled():
                shadowing.submit(version, ident, type(exc).__name__)
            raise
        environ[TIMING_KEY] = (version, resolving, timer(), False)
        if shadowing is not None and sampled():
            shadowing.submit(version, ident, tenant)
        if tenant is None or not tenant.is_active:
            # The later names stay unchecked: there is no tenant to check them against.
            ctx_vars["_tenant_cache_identification"] = found._replace(confirmed_by=())
            raise TenantNotFound("no tenant answers to this identifier")
        if found.confirmed_by:
            answers = tenant.answers_to
            for other in found.confirmed_by:
                if not answers(other.identifier):
                    found = _confirm(found, tenant, resolvers[version], id_stats)
                    break
        ctx_vars["_tenant_cache_identification"] = found
        ctx_vars[TENANT_KEY] = tenant
        if resolved.receivers:
            resolved.send(state.app, tenant=tenant, identifier=ident, version=version)

    return resolve_tenant
