"""Whole requests through ``app.wsgi_app``: bare Flask, an empty tenant hook, the extension."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from flask import Flask, g, request
from werkzeug.test import EnvironBuilder

from flask_tenant_cache import TenantCache, current_resolver_version

from ._fixtures import MemoryLoader, make_tenants
from ._harness import Case, GroupResult, Settings, run_group

__all__ = ["BARE", "REQUEST_OVERHEAD_GOAL", "bench_requests", "request_goals"]

#: The issue's goal: a request with the extension at most this much slower than bare Flask.
REQUEST_OVERHEAD_GOAL = 0.10
BARE, HOOK = "bare Flask", "empty hook"
V2_HEADER, V2_HOST, V1_HEADER = "v2 header", "v2 host", "v1 header"

BODY = b"ok"
WSGIEnviron = dict[str, Any]


def _bare_app() -> Flask:
    app = Flask("bench_bare")

    @app.get("/")
    def index() -> str:
        return "ok"

    return app


def _hook_app() -> Flask:
    app = _bare_app()

    @app.before_request
    def read_tenant() -> None:
        g.tenant = request.headers.get("X-Tenant-ID")

    return app


def _extension_app(loader: MemoryLoader, use_v2: bool = True) -> Flask:
    app = _bare_app()
    app.config["TENANT_CACHE_BASE_DOMAINS"] = ["example.com"]
    app.config["TENANT_CACHE_USE_V2"] = use_v2
    TenantCache(app, loader=loader)
    return app


def _environ(headers: Iterable[tuple[str, str]] = (), host: str = "localhost") -> WSGIEnviron:
    builder = EnvironBuilder(path="/", base_url=f"http://{host}/", headers=headers)
    try:
        environ: WSGIEnviron = builder.get_environ()
    finally:
        builder.close()
    return environ


def _write(data: bytes) -> None:
    return None


def _start_response(
    status: str, headers: list[tuple[str, str]], exc_info: Any = None
) -> Callable[[bytes], object]:
    return _write


def _caller(app: Flask, environ: WSGIEnviron) -> Callable[[], Iterable[bytes]]:
    """One request per call: a fresh copy of ``environ``, the body read, the iterable closed."""
    wsgi_app = app.wsgi_app
    start_response = _start_response

    def call() -> Iterable[bytes]:
        body = wsgi_app(environ.copy(), start_response)
        try:
            for _ in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        return body

    return call


def _check(app: Flask, environ: WSGIEnviron, version: str | None = None) -> None:
    """Fail unless the request answers 200 "ok" (a benchmark of a 404 measures nothing)."""
    seen: list[str] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], object]:
        seen.append(status)
        return _write

    body = b"".join(app.wsgi_app(environ.copy(), start_response))
    if seen != ["200 OK"] or body != BODY:
        raise RuntimeError(f"{app.name}: expected 200 {BODY!r}, got {seen} {body!r}")
    if version is not None:
        with app.request_context(environ.copy()):
            app.preprocess_request()
            if current_resolver_version() != version:
                raise RuntimeError(f"{app.name}: the request was not served by {version}")


def bench_requests(settings: Settings) -> tuple[GroupResult, dict[str, Any]]:
    """Per-request time of the five cases; returns the group and the loader call count."""
    loader = MemoryLoader(make_tenants(1000))
    bare, hook = _bare_app(), _hook_app()
    ext, ext_v1 = _extension_app(loader), _extension_app(loader, use_v2=False)
    by_header = _environ([("X-Tenant-ID", "acme")])
    by_host = _environ(host="acme.example.com")
    for app in (bare, hook):
        _check(app, by_header)
    _check(ext, by_header, "v2")
    _check(ext, by_host, "v2")
    _check(ext_v1, by_header, "v1")
    warm_calls = loader.calls  # the first request of each alias loads it, then all hits
    ns: dict[str, Any] = {
        "bare": _caller(bare, by_header),
        "hook": _caller(hook, by_header),
        "v2_header": _caller(ext, by_header),
        "v2_host": _caller(ext, by_host),
        "v1_header": _caller(ext_v1, by_header),
    }
    cases = [
        Case(BARE, "bare()", ns, description="one view returning 'ok', no hook"),
        Case(
            HOOK,
            "hook()",
            ns,
            description="a before_request hook setting g.tenant from the X-Tenant-ID header",
        ),
        Case(
            V1_HEADER,
            "v1_header()",
            ns,
            description="the extension on v1 (TENANT_CACHE_USE_V2=False), warm, X-Tenant-ID",
        ),
        Case(
            V2_HEADER,
            "v2_header()",
            ns,
            description="the extension on v2 (the default), warm cache, X-Tenant-ID: acme",
        ),
        Case(
            V2_HOST,
            "v2_host()",
            ns,
            description="the extension on v2, warm cache, Host: acme.example.com",
        ),
    ]
    result = run_group(
        "requests",
        "Whole request through app.wsgi_app (µs per request)",
        cases,
        settings,
        references=[BARE, HOOK],
        unit="us",
    )
    extra = {"loader_calls_while_timed": loader.calls - warm_calls}
    if extra["loader_calls_while_timed"]:
        raise RuntimeError("the extension missed its cache while timed: figures are void")
    return result, extra


def request_goals(group: GroupResult) -> list[dict[str, Any]]:
    """The extension (v2, then v1) at most :data:`REQUEST_OVERHEAD_GOAL` over bare Flask."""
    hook = group.case(HOOK).ratios[BARE] - 1
    goals = []
    for name in (V2_HEADER, V1_HEADER):
        case = group.case(name)
        # Same-round ratios: the machine's load changes between rounds, not within one.
        over = case.ratios[BARE] - 1
        extra_ns = case.best_ns - group.case(BARE).best_ns
        goals.append(
            {
                "goal": f"request with the extension ({name.split()[0]}) at most "
                f"{REQUEST_OVERHEAD_GOAL:.0%} over bare Flask",
                "measured": f"{over:+.1%} ({extra_ns / 1e3:+.1f} µs of bests; empty hook "
                f"{hook:+.1%})",
                "met": over <= REQUEST_OVERHEAD_GOAL,
            }
        )
    return goals
