"""Whole requests through ``app.wsgi_app``: bare Flask, the floor hook, and the extension.

Two views, each timed in its own interleaved group: one that returns a string, and one that
reads ``current_tenant`` three times and ``current_resolver_version()``, as real views do.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from contextvars import ContextVar
from typing import Any

from flask import Flask, abort, request
from werkzeug.test import EnvironBuilder

from flask_tenant_cache import (
    Tenant,
    TenantCache,
    TenantIdentifierValidator,
    current_resolver_version,
    current_tenant,
)
from flask_tenant_cache.figures import TIMING_KEY, RequestRecorder

from ._fixtures import ACME, MemoryLoader, make_tenants
from ._harness import Case, GroupResult, Settings, held, run_group

__all__ = [
    "APPS",
    "VIEWS",
    "View",
    "bench_requests",
    "build_app",
    "environ",
    "make_caller",
    "recorder_alone",
    "request_goals",
    "without_recorder",
]

BARE, FLOOR = "bare", "floor"
APPS = (BARE, FLOOR, "v1", "v2")
WSGIEnviron = dict[str, Any]
#: The same proxy object, typed for the views that only run with a tenant resolved.
_tenant: Tenant = current_tenant  # type: ignore[assignment]
#: The floor hook's tenant, in a context variable rather than behind the ``g`` proxy.
_floor_tenant: ContextVar[Tenant | None] = ContextVar("bench_floor_tenant", default=None)


class View:
    """One view as each app writes it, with its body and the issue's goal against bare."""

    def __init__(self, name: str, title: str, body: bytes, goal_x: float) -> None:
        self.name = name
        self.title = title
        self.body = body
        self.goal_x = goal_x

    def register(self, app: Flask, kind: str) -> None:
        if self.name == "string":
            app.add_url_rule("/", "index", lambda: "ok")
            return
        read: Callable[[], Any]
        if kind == BARE:

            def read() -> Any:  # the same reads, from a tenant the app already holds
                return ACME.id, ACME.slug, ACME.name, "bare"
        elif kind == FLOOR:

            def read() -> Any:
                tenant = _floor_tenant.get()
                if tenant is None:
                    abort(404)
                return tenant.id, tenant.slug, tenant.name, "floor"
        else:

            def read() -> Any:
                return (_tenant.id, _tenant.slug, _tenant.name, current_resolver_version())

        def index() -> str:
            return str(read()[1])

        app.add_url_rule("/", "index", index)


VIEWS = (
    View("string", "string view", b"ok", 1.06),
    View("tenant", "view reading current_tenant x3 + current_resolver_version()", b"acme", 1.10),
)


def _install_floor(app: Flask, tenants: list[Tenant], ttl: float = 300.0) -> None:
    """The cheapest correct tenant hook: what is left to gain below the extension.

    The header parse is memoised; the lookup is a lock-free dict read with a deadline check;
    the tenant goes to a context variable, set on every request (None when there is none) so
    that a thread never serves the previous request's tenant.
    """
    clock = time.monotonic
    deadline = clock() + ttl
    store = {a.cache_key: (t, deadline) for t in tenants for a in t.aliases}
    parse = functools.lru_cache(maxsize=4096)(TenantIdentifierValidator().parse_header)
    environ_key = "HTTP_X_TENANT_ID"
    set_tenant = _floor_tenant.set

    @app.before_request
    def floor() -> None:
        raw = request.environ.get(environ_key)
        if raw is None:
            set_tenant(None)
            return
        entry = store.get(parse(raw).cache_key)
        if entry is None or entry[1] < clock():
            set_tenant(None)
            abort(404)  # a real hook would load here; the benchmark only ever hits
        set_tenant(entry[0])


def build_app(kind: str, view: View, loader: MemoryLoader | None = None) -> Flask:
    """The app ``kind`` of :data:`APPS` serving ``view`` at ``/``."""
    app = Flask(f"bench_{kind}_{view.name}")
    view.register(app, kind)
    loader = loader or MemoryLoader(make_tenants(1000))
    if kind == FLOOR:
        _install_floor(app, loader.tenants)
    elif kind in ("v1", "v2"):
        app.config["TENANT_CACHE_BASE_DOMAINS"] = ["example.com"]
        app.config["TENANT_CACHE_USE_V2"] = kind == "v2"
        TenantCache(app, loader=loader)
    return app


def environ(
    headers: Iterable[tuple[str, str]] = (("X-Tenant-ID", "acme"),), host: str = "localhost"
) -> WSGIEnviron:
    """A WSGI environ for ``GET /`` on ``host`` with ``headers``, built once and copied per
    request."""
    builder = EnvironBuilder(path="/", base_url=f"http://{host}/", headers=headers)
    try:
        built: WSGIEnviron = builder.get_environ()
    finally:
        builder.close()
    return built


def _write(data: bytes) -> None:
    return None


def _start_response(
    status: str, headers: list[tuple[str, str]], exc_info: Any = None
) -> Callable[[bytes], object]:
    return _write


def make_caller(app: Flask, env: WSGIEnviron) -> Callable[[], Iterable[bytes]]:
    """One request per call: a fresh copy of ``env``, the body read, the iterable closed."""
    wsgi_app = app.wsgi_app
    start_response = _start_response

    def call() -> Iterable[bytes]:
        body = wsgi_app(env.copy(), start_response)
        try:
            for _ in body:
                pass
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        return body

    return call


def _answer(environ: WSGIEnviron, start_response: Callable[..., object]) -> list[bytes]:
    start_response("200 OK", [])
    return []


def recorder_alone(app: Flask) -> Callable[[], Iterable[bytes]]:
    """The extension's figures recorder of ``app`` alone: around a WSGI app that only
    answers, for a request the hook resolved (what the figures cost a request)."""
    state = app.extensions["tenant_cache"]
    resolved = {TIMING_KEY: ("v2", 0.0, 2e-6, False)}
    return functools.partial(RequestRecorder(_answer, state).__call__, resolved, _start_response)


def without_recorder(app: Flask) -> Flask:
    """``app`` with the extension's figures recorder taken off its WSGI stack."""
    recorder = getattr(app.wsgi_app, "__self__", None)  # init_app installs its __call__
    if not isinstance(recorder, RequestRecorder):
        raise RuntimeError(f"{app.name}: the recorder is not the outer WSGI app")
    app.wsgi_app = recorder.app  # type: ignore[method-assign]
    return app


def check(app: Flask, env: WSGIEnviron, body: bytes, version: str | None) -> None:
    """Fail unless the request answers 200 ``body`` from ``version`` (a 404 measures nothing)."""
    seen: list[str] = []

    def start_response(
        status: str, headers: list[tuple[str, str]], exc_info: Any = None
    ) -> Callable[[bytes], object]:
        seen.append(status)
        return _write

    got = b"".join(app.wsgi_app(env.copy(), start_response))
    if seen != ["200 OK"] or got != body:
        raise RuntimeError(f"{app.name}: expected 200 {body!r}, got {seen} {got!r}")
    if version is not None:
        with app.request_context(env.copy()):
            app.preprocess_request()
            if current_resolver_version() != version:
                raise RuntimeError(f"{app.name}: the request was not served by {version}")


def bench_view(view: View, settings: Settings, loader: MemoryLoader) -> GroupResult:
    """Every app of :data:`APPS` serving ``view``, timed in interleaved rounds."""
    env = environ()
    ns: dict[str, Any] = {}
    cases = []
    for kind in APPS:
        app = build_app(kind, view, loader)
        check(app, env, view.body, kind if kind in ("v1", "v2") else None)
        ns[kind] = make_caller(app, env)
        cases.append(Case(f"{kind} {view.name}", f"{kind}()", ns, description=view.title))
    warm_calls = loader.calls  # each extension app loaded acme once, when checked
    group = run_group(
        f"requests-{view.name}",
        f"Whole request, {view.title} (µs per request)",
        cases,
        settings,
        references=[f"{BARE} {view.name}", f"{FLOOR} {view.name}"],
        unit="us",
    )
    if loader.calls != warm_calls:
        raise RuntimeError("the extension missed its cache while timed: figures are void")
    return group


def bench_requests(settings: Settings) -> dict[str, GroupResult]:
    """Both views of :data:`VIEWS`, each its own interleaved group."""
    loader = MemoryLoader(make_tenants(1000))
    return {view.name: bench_view(view, settings, loader) for view in VIEWS}


def request_goals(groups: dict[str, GroupResult]) -> list[dict[str, Any]]:
    """v1 and v2 each within each view's goal over bare Flask (same-round ratios)."""
    goals = []
    for view in VIEWS:
        group = groups[view.name]
        bare = group.case(f"{BARE} {view.name}")
        floor = group.case(f"{FLOOR} {view.name}")
        for version in ("v1", "v2"):
            case = group.case(f"{version} {view.name}")
            ratio = case.ratios[bare.name]
            extra_us = (case.best_ns - bare.best_ns) / 1e3
            goals.append(
                {
                    "goal": f"{version}, {view.title}: at most x{view.goal_x:.2f} bare",
                    "measured": f"x{ratio:.3f} same-round median, "
                    f"x{case.best_ratios[bare.name]:.3f} of bests ({extra_us:+.1f} µs; the "
                    f"floor hook x{floor.ratios[bare.name]:.3f})",
                    "met": held(case, bare.name, view.goal_x),
                }
            )
    return goals
