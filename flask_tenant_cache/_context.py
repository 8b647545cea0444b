"""The current app context and request context, read from Flask's context variables.

``flask.g`` and ``flask.request`` are ``werkzeug.local.LocalProxy`` objects over two context
variables of Flask's. Resolving a proxy runs a Python closure and an ``attrgetter``: about
1,100 instructions, where reading the variable costs about 250 (callgrind, CPython 3.11).
The hook reads both on every request, so it reads the variables. The ``current_*`` helpers
keep ``g``'s proxy: outside an app context they must raise Flask's error, and the call that
would turn a LookupError into it costs what the variable saves (measured). The variables'
names are Flask's own and private (``flask.globals``, since Flask 2.2); on a Flask without
them, :class:`ProxiedContext` gives the same ``get()`` over the public proxies, at the
proxies' cost.
"""

from __future__ import annotations

from typing import Any, Protocol

import flask.globals

__all__ = [
    "ContextGetter",
    "ProxiedContext",
    "app_context",
    "context_getter",
    "request_context",
]


class ContextGetter(Protocol):
    """What the package reads a context with: ``ContextVar.get``'s contract, no default."""

    def get(self) -> Any:
        """The current context; raises LookupError if there is none."""


class ProxiedContext:
    """``get()`` over one of Flask's public context proxies (``app_ctx``, ``request_ctx``)."""

    __slots__ = ("_get",)

    def __init__(self, proxy: Any) -> None:
        self._get = proxy._get_current_object

    def get(self) -> Any:
        """The current context; raises LookupError if there is none, as a ContextVar does."""
        try:
            return self._get()
        except RuntimeError:
            raise LookupError("no Flask context is pushed") from None


def context_getter(variable: str, proxy: str) -> ContextGetter:
    """Flask's context variable ``variable`` if this Flask has it, else its public ``proxy``."""
    found: ContextGetter | None = getattr(flask.globals, variable, None)
    return found if found is not None else ProxiedContext(getattr(flask.globals, proxy))


#: ``get()`` is the current ``AppContext`` (its ``g``); LookupError without one.
app_context = context_getter("_cv_app", "app_ctx")
#: ``get()`` is the current ``RequestContext`` (its ``request``); LookupError without one.
request_context = context_getter("_cv_request", "request_ctx")
