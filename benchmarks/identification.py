"""Identification cost: the default strategy chain with its conflict check against the old hook."""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable
from typing import Any

from flask import Flask, g, request

from flask_tenant_cache import TenantCache, signals
from flask_tenant_cache.config import live_percent
from flask_tenant_cache.errors import (
    InvalidTenantIdentifier,
    MissingTenantIdentifier,
    TenantLookupError,
    TenantNotFound,
)
from flask_tenant_cache.identifiers import InvalidIdentifier, TenantIdentifier
from flask_tenant_cache.state import AppState

from ._fixtures import MemoryLoader, make_tenants
from ._harness import Case, GroupResult, Settings, run_group
from .wsgi import BARE, _bare_app, _caller, _check, _environ

__all__ = ["GOAL", "bench_identification", "identification_goals", "run"]

#: The issue's goal: the default chain costs at most this share of a bare request more than
#: the hook it replaced.
GOAL = 0.02

OLD, NEW = "old hook", "chain"
REQUESTS = {
    "header": ([("X-Tenant-ID", "acme")], "localhost"),
    "host": ([], "acme.example.com"),
    "header+host": ([("X-Tenant-ID", "acme")], "acme.test"),
}


def _old_hook(state: AppState) -> Callable[[], None]:
    """The before-request hook as it was before strategies (header, else Host), kept verbatim
    in its identification step as the baseline: the package no longer holds it."""
    settings = state.settings
    header_key = settings.header_environ_key
    parse_header = state.validator.parse_header
    parse_host = state.validator.parse_host
    exempt, resolvers, config = state.exempt, state.resolvers, state.app.config
    is_exempt, decide, shadow = state.ext._is_exempt, state.rollout.decide, state.shadow
    resolved = signals.tenant_resolved
    bus = state.redis

    def sampled() -> bool:
        rate = live_percent(config, "TENANT_CACHE_SHADOW_PERCENT")
        return bool(rate) and random.random() * 100 < rate  # type: ignore[operator]

    def resolve_tenant() -> None:
        req = request._get_current_object()  # type: ignore[attr-defined]
        ctx_g = g._get_current_object()
        ctx_g._tenant_cache_tenant = ctx_g._tenant_cache_decision = None
        endpoint = req.endpoint
        if endpoint is None:
            return
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
                raise MissingTenantIdentifier("no tenant")
            return
        if bus is not None and not bus.started:
            bus.start()
        decision = ctx_g._tenant_cache_decision = decide(ident, req, config)
        version = decision.version
        try:
            tenant = resolvers[version].resolve(ident)
        except TenantLookupError as exc:
            if shadow is not None and sampled():
                shadow.submit(version, ident, type(exc).__name__)
            raise
        if shadow is not None and sampled():
            shadow.submit(version, ident, tenant)
        if tenant is None or not tenant.is_active:
            raise TenantNotFound("no tenant answers to this identifier")
        ctx_g._tenant_cache_tenant = tenant
        if resolved.receivers:
            resolved.send(state.app, tenant=tenant, identifier=ident, version=version)

    return resolve_tenant


def _app(loader: MemoryLoader, *, old: bool) -> Flask:
    app = _bare_app()
    app.config["TENANT_CACHE_BASE_DOMAINS"] = ["example.com"]
    TenantCache(app, loader=loader)
    if old:
        hooks = app.before_request_funcs[None]
        hooks[:] = [_old_hook(app.extensions["tenant_cache"])]
    return app


def bench_identification(settings: Settings) -> GroupResult:
    """Bare Flask, and the old hook and the default chain for a header, a Host, and both."""
    loader = MemoryLoader(make_tenants(1000))
    bare, old, new = _bare_app(), _app(loader, old=True), _app(loader, old=False)
    ns: dict[str, Any] = {"bare": _caller(bare, _environ())}
    cases = [Case(BARE, "bare()", ns, description="one view returning 'ok', no hook")]
    for name, (headers, host) in REQUESTS.items():
        environ = _environ(headers, host=host)
        for label, app in ((OLD, old), (NEW, new)):
            _check(app, environ, "v2")
            var = f"{label}_{name}".replace(" ", "_").replace("+", "_")
            ns[var] = _caller(app, environ)
            cases.append(
                Case(
                    f"{label}, {name}",
                    f"{var}()",
                    ns,
                    description=f"{label} on v2, warm, {name}: {headers or ''} Host {host}",
                )
            )
    calls = loader.calls
    result = run_group(
        "identification",
        "Old hook and the default strategy chain, whole request (µs per request)",
        cases,
        settings,
        references=[BARE],
        unit="us",
    )
    if loader.calls != calls:
        raise RuntimeError("the extension missed its cache while timed: figures are void")
    return result


def _extra(group: GroupResult, name: str) -> float:
    """Median over the rounds of (chain - old hook) / bare Flask, all timed in that round."""
    bare = group.case(BARE).samples_ns
    old = group.case(f"{OLD}, {name}").samples_ns
    new = group.case(f"{NEW}, {name}").samples_ns
    return statistics.median((n - o) / b for n, o, b in zip(new, old, bare, strict=True))


def identification_goals(group: GroupResult) -> list[dict[str, Any]]:
    """The chain at most :data:`GOAL` of a bare request over the old hook, per request kind."""
    goals = []
    for name in REQUESTS:
        extra = _extra(group, name)
        goals.append(
            {
                "goal": f"default chain ({name}) at most {GOAL:.0%} of a bare request over "
                "the old hook",
                "measured": f"{extra:+.2%}",
                "met": extra <= GOAL,
            }
        )
    return goals


def run(quick: bool, out: dict[str, Any]) -> list[dict[str, Any]]:
    """The suite's ``identification`` part."""
    from ._report import print_group

    settings = Settings(repeats=15, target=0.02) if quick else Settings(repeats=101, target=0.02)
    group = bench_identification(settings)
    print_group(group)
    for name in REQUESTS:
        print(f"  {name}: chain {_extra(group, name):+.2%} of a bare request over the old hook")
    out["group"] = group.as_dict()
    return identification_goals(group)
