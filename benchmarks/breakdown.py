"""Where a request's time goes: each step of the v2 hook timed apart, against the whole.

``python -m benchmarks.breakdown [--quick] [--json PATH]``. The steps are the calls the
extension's hook makes, timed in a pushed request context of the v2 app, interleaved with the
whole request of bare Flask and of v2, so their sum can be set against the extension's extra
time. A step the code no longer has (the hook is being made faster) is reported as absent
rather than timed from a copy.
"""

from __future__ import annotations

import contextvars
import functools
import sys
from typing import Any

from flask import g, request

from flask_tenant_cache import current_resolver_version, current_tenant
from flask_tenant_cache._context import app_context, request_context

from ._fixtures import MemoryLoader, make_tenants
from ._harness import Case, Settings, run_group
from ._report import standalone
from .wsgi import BARE, VIEWS, build_app, environ, make_caller, recorder_alone

__all__ = ["bench_breakdown", "print_breakdown"]

WHOLE_BARE, WHOLE_V2 = "request: bare", "request: v2"


def _steps(state: Any) -> list[tuple[str, str, str]]:
    """(name, statement, what it is) for each step the current code has."""
    steps = [
        (
            "contexts",
            "request_context.get().request; app_context.get().g.__dict__",
            "reading the request and g from Flask's context variables",
        ),
        (
            "g clear",
            "ctx_vars['_a'] = ctx_vars['_b'] = None; ctx_vars['_c'] = None",
            "clearing the hook's three names on g",
        ),
        ("endpoint", "req.url_rule.endpoint", "reading the matched endpoint"),
        ("header", "req.environ.get(header_key)", "reading the tenant header from the environ"),
    ]
    if hasattr(getattr(state, "validator", None), "parse_header"):
        steps.append(("parse", "parse(raw)", "the memoised header parse"))
    if hasattr(getattr(state, "rollout", None), "decide"):
        steps.append(("decide", "decide(ident, req, config)", "the flag decision"))
    steps += [
        ("resolve", "resolve(ident)", "the v2 cache hit"),
        ("g set", "ctx_vars['_c'] = tenant", "keeping the tenant on g"),
        ("recorder", "record()", "the WSGI recorder counting the figures"),
        ("current_tenant", "current_tenant.slug", "one attribute read through current_tenant"),
        ("version", "current_resolver_version()", "current_resolver_version()"),
    ]
    return steps


def bench_breakdown(quick: bool) -> dict[str, Any]:
    """Each step, and the whole request of bare and v2 (string view), interleaved."""
    settings = Settings(repeats=15, target=0.01) if quick else Settings(repeats=61, target=0.01)
    loader = MemoryLoader(make_tenants(1000))
    view = VIEWS[0]
    env = environ()
    bare, v2 = build_app(BARE, view, loader), build_app("v2", view, loader)
    state = v2.extensions["tenant_cache"]
    # The whole requests run in a context of their own: in the one the steps use, v2's
    # requests would find its app context pushed and reuse it (Flask pushes one only when the
    # current one is not of the same app), and so cost less than they do.
    outside = contextvars.Context().run
    ctx = v2.test_request_context("/", headers={"X-Tenant-ID": "acme"})
    ctx.push()
    try:
        v2.preprocess_request()
        ident = state.validator.parse_header("acme")
        ns: dict[str, Any] = {
            "request_context": request_context,
            "app_context": app_context,
            "req": request._get_current_object(),  # type: ignore[attr-defined]
            "ctx_vars": g._get_current_object().__dict__,
            "header_key": "HTTP_X_TENANT_ID",
            "parse": getattr(state.validator, "parse_header", None),
            "raw": "acme",
            "ident": ident,
            "decide": getattr(getattr(state, "rollout", None), "decide", None),
            "config": v2.config,
            "resolve": state.resolvers["v2"].resolve,
            "tenant": state.resolvers["v2"].resolve(ident),
            "current_tenant": current_tenant,
            "current_resolver_version": current_resolver_version,
            "record": recorder_alone(v2),
            "bare": functools.partial(outside, make_caller(bare, env)),
            "v2": functools.partial(outside, make_caller(v2, env)),
        }
        cases = [
            Case(WHOLE_BARE, "bare()", ns, description="a whole request, bare Flask"),
            Case(WHOLE_V2, "v2()", ns, description="a whole request, the extension on v2"),
        ]
        cases += [Case(n, stmt, ns, description=d) for n, stmt, d in _steps(state)]
        group = run_group(
            "breakdown", "Steps of a v2 request (ns per step)", cases, settings, unit="ns"
        )
    finally:
        ctx.pop()
    extra = group.case(WHOLE_V2).best_ns - group.case(WHOLE_BARE).best_ns
    steps = [c for c in group.cases if c.name not in (WHOLE_BARE, WHOLE_V2)]
    summed = sum(c.best_ns for c in steps if c.name not in ("current_tenant", "version"))
    return {
        "group": group.as_dict(),
        "extra_ns": round(extra, 1),
        "hook_steps_ns": round(summed, 1),
        "unaccounted_ns": round(extra - summed, 1),
    }


def print_breakdown(result: dict[str, Any]) -> None:
    """Each step's best time, its share of the extension's extra time, and the rest."""
    group = result["group"]
    print(f"\n{group['title']}  [{len(group['cases'][0]['samples_ns'])} interleaved rounds]")
    extra = result["extra_ns"]
    for case in group["cases"]:
        share = "" if case["name"].startswith("request") else f"{case['best_ns'] / extra:6.1%}"
        print(f"  {case['name']:<16} {case['best_ns']:>10,.0f} ns  {share}  {case['description']}")
    print(
        f"  v2 over bare: {extra:,.0f} ns (bests); steps above: "
        f"{result['hook_steps_ns']:,.0f} ns; the rest (the hook's own code, Flask's dispatch of "
        "the hook, and what the steps cost more in a whole request than in a loop, their "
        f"objects no longer in the caches): {result['unaccounted_ns']:,.0f} ns. The view's "
        "reads (current_tenant, version) are per read, outside the string view."
    )


def main(argv: list[str] | None = None) -> int:
    return standalone(
        "python -m benchmarks.breakdown",
        __doc__,
        "15 rounds (a few seconds)",
        bench_breakdown,
        print_breakdown,
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
