"""Where the extension's instructions over bare Flask go: each piece of a v2 request counted
apart under callgrind.

``python -m benchmarks.callgrind_pieces [--quick] [--json PATH]`` (``--quick`` changes
nothing), and part of ``callgrind`` in the full run. Each piece is one statement, run in a
request context of the v2 app (string view) pushed and preprocessed once, the statements one
after another in one process under callgrind, over the memory layouts of
:mod:`benchmarks.callgrind`. The empty statement's count (the loop's own cost) in the same
process is taken off the others. Beside the extension's own pieces stand what the floor hook
pays and what Flask pays for each hook an app registers (``ensure_sync``, which asks
``inspect`` whether the hook is a coroutine function), so the page can show which part of
the extra instructions the extension can still remove.
"""

from __future__ import annotations

import sys
from typing import Any

from ._report import standalone
from .callgrind import LOOPS, count

__all__ = ["PIECES", "bench_pieces", "print_pieces"]

_CHILD = (
    """
from flask import request
from benchmarks.wsgi import VIEWS, build_app, environ, recorder_alone
from flask_tenant_cache import current_resolver_version, current_tenant
app = build_app("v2", VIEWS[0])
floor_app = build_app("floor", VIEWS[0])
state = app.extensions["tenant_cache"]
ctx = app.request_context(environ())
ctx.push()
app.preprocess_request()
ident = state.validator.parse_header("acme")
names = {
    "app": app,
    "hook": app.before_request_funcs[None][0],
    "recorder": recorder_alone(app),
    "floor_hook": floor_app.before_request_funcs[None][0],
    "decide": state.rollout.decide,
    "ident": ident,
    "req": request._get_current_object(),
    "config": app.config,
    "resolve": state.resolvers["v2"].resolve,
    "current_tenant": current_tenant,
    "current_resolver_version": current_resolver_version,
}
steps = []
for statement in sys.argv[2:]:
    exec("def step(_a, _b):\\n    " + statement, names)
    steps.append(names["step"])
"""
    + LOOPS
)

#: (name, statement, what it is). The first is the loop's own cost.
PIECES: tuple[tuple[str, str, str], ...] = (
    ("empty", "pass", "the counting loop itself (taken off the others)"),
    ("hook", "hook()", "the extension's before_request hook, a v2 hit"),
    ("recorder", "recorder()", "the extension's WSGI recorder (the figures)"),
    ("dispatch", "app.ensure_sync(hook)", "what Flask pays per registered hook, before its call"),
    ("floor hook", "floor_hook()", "the floor's before_request hook, for scale"),
    ("flag decision", "decide(ident, req, config)", "the rollout decision, in the hook"),
    ("resolve", "resolve(ident)", "the v2 cache hit, in the hook"),
    ("current_tenant read", "current_tenant.slug", "one attribute read in a view"),
    ("version read", "current_resolver_version()", "current_resolver_version() in a view"),
)


def bench_pieces() -> dict[str, Any]:
    """Ir of each piece, the loop's own cost taken off."""
    counts, over = count(_CHILD, [stmt for _, stmt, _ in PIECES], len(PIECES), "the pieces")
    return {
        "loop_ir": counts[0],
        "pieces": [
            {"piece": name, "statement": stmt, "what": what, "ir": ir}
            for (name, stmt, what), ir in zip(PIECES[1:], over[1:], strict=True)
        ],
    }


def print_pieces(result: dict[str, Any]) -> None:
    print("\nPieces of a v2 request (callgrind Ir each, the loop's own cost taken off)")
    for piece in result["pieces"]:
        print(f"  {piece['piece']:<20} {piece['ir']:>8,}  {piece['what']}")


def main(argv: list[str] | None = None) -> int:
    return standalone(
        "python -m benchmarks.callgrind_pieces",
        __doc__,
        "no effect: instruction counts take as long either way",
        lambda quick: bench_pieces(),
        print_pieces,
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
