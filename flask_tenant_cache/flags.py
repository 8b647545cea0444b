"""Flag providers: which resolver, ``"v1"`` or ``"v2"``, serves a request."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple, cast

from .identifiers import TenantIdentifier

__all__ = ["FlagContext", "FlagProvider", "Version", "choose_version", "config_toggle"]

logger = logging.getLogger("flask_tenant_cache")

#: The version a request gets when its flag provider fails or answers something else.
FALLBACK_VERSION: Version = "v2"

Version = Literal["v1", "v2"]


class FlagContext(NamedTuple):
    """What a flag provider is told about a request."""

    #: The request's validated tenant identifier.
    identifier: TenantIdentifier
    #: The request (a ``flask.Request``).
    request: Any
    #: The app's config, read live.
    config: Mapping[str, Any]


#: A callable that picks the resolver version for one request.
FlagProvider = Callable[[FlagContext], str]


def config_toggle(context: FlagContext) -> Version:
    """``TENANT_CACHE_USE_V2``, read live: changing ``app.config`` acts on the next request."""
    return "v2" if context.config["TENANT_CACHE_USE_V2"] else "v1"


def choose_version(provider: FlagProvider, context: FlagContext) -> Version:
    """Ask ``provider``; a failure or an unknown answer falls back to :data:`FALLBACK_VERSION`."""
    try:
        version = provider(context)
    except Exception:
        logger.exception("the tenant cache flag provider failed; using %s", FALLBACK_VERSION)
        return FALLBACK_VERSION
    if version in ("v1", "v2"):
        return cast(Version, version)
    logger.error("the flag provider answered %r, not 'v1' or 'v2'", version)
    return FALLBACK_VERSION
