"""The ``path`` strategy's middleware: ``/t/<tenant>/...`` is mounted as the app's root."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.utils import redirect

__all__ = ["PATH_SEGMENT_KEY", "TenantPathPrefix", "install"]

#: Where the middleware leaves the raw tenant segment for the ``path`` strategy; WSGI keys
#: with a dot cannot come from a client (headers become ``HTTP_*`` keys).
PATH_SEGMENT_KEY = "flask_tenant_cache.path_segment"

WSGIApp = Any


class TenantPathPrefix:
    """Moves ``{prefix}/<segment>`` from ``PATH_INFO`` to ``SCRIPT_NAME`` before routing.

    The app then routes ``/t/acme/orders`` as ``/orders``, and ``url_for`` in that request
    builds ``/t/acme/...`` URLs: the tenant segment is a mount point, as WSGI defines one.
    ``{prefix}/<segment>`` without a trailing slash is redirected (308) to the form with one,
    as Flask redirects a branch URL, so relative links resolve under the tenant.

    :param app: the WSGI app to call.
    :param prefix: the path under which the first segment names the tenant, e.g. ``"/t"``.
    """

    def __init__(self, app: WSGIApp, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path: str = environ.get("PATH_INFO", "")
        prefix = self.prefix
        if path.startswith(prefix) and path[len(prefix) : len(prefix) + 1] == "/":
            segment, slash, rest = path[len(prefix) + 1 :].partition("/")
            if segment or slash:
                mount = environ.get("SCRIPT_NAME", "") + prefix + "/" + segment
                if not slash:
                    query = environ.get("QUERY_STRING")
                    location = mount + "/" + ("?" + query if query else "")
                    response = redirect(location, 308)
                    return response(environ, start_response)
                # Validated by the strategy in the hook, which answers a bad one with a 400.
                environ[PATH_SEGMENT_KEY] = segment
                environ["SCRIPT_NAME"] = mount
                environ["PATH_INFO"] = "/" + rest
        result: Iterable[bytes] = self.app(environ, start_response)
        return result


def install(app: Flask, prefix: str) -> None:
    """Wrap ``app.wsgi_app`` in :class:`TenantPathPrefix`, inside any ProxyFix around it.

    ProxyFix replaces ``SCRIPT_NAME`` with ``X-Forwarded-Prefix``: run after it, whether it
    was applied before ``init_app`` or after, the tenant segment is appended to that prefix.
    """
    holder: Any = app
    attr = "wsgi_app"
    while isinstance(getattr(holder, attr), ProxyFix):
        holder, attr = getattr(holder, attr), "app"
    setattr(holder, attr, TenantPathPrefix(getattr(holder, attr), prefix))
