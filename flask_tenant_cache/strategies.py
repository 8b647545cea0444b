"""Where a request names its tenant: the ordered chain of strategies and who may use the header."""

from __future__ import annotations

import functools
import ipaddress
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from .config import Network, Settings
from .errors import UntrustedTenantHeader
from .identifiers import InvalidIdentifier, TenantIdentifier, TenantIdentifierValidator
from .path_prefix import PATH_SEGMENT_KEY

__all__ = [
    "Identification",
    "IdentificationStats",
    "IdentifierStrategy",
    "Identify",
    "build_chain",
]

logger = logging.getLogger("flask_tenant_cache")

WSGIEnviron = dict[str, Any]

#: A custom strategy: given the request, a raw identifier (a UUID, slug or host, read as the
#: header is), a :class:`~.identifiers.TenantIdentifier`, or None when it names no tenant.
IdentifierStrategy = Callable[[Any], "str | uuid.UUID | TenantIdentifier | None"]


class Identification(NamedTuple):
    """Which strategy named the current request's tenant, and by which alias."""

    #: The strategy's name: ``"header"``, ``"host"``, ``"path"`` or a registered one.
    strategy: str
    #: The validated identifier it read (the alias the tenant was resolved by).
    identifier: TenantIdentifier
    #: The later strategies that named the same tenant (``TENANT_CACHE_ON_CONFLICT="error"``).
    confirmed_by: tuple[Identification, ...] = ()


#: Reads the request's identification: the first strategy's, with the others that named a
#: tenant in ``confirmed_by`` (not yet checked against it); None if no strategy named one.
Identify = Callable[[WSGIEnviron, Any], Identification | None]

_MEMO = 4096


class IdentificationStats:
    """Counters of the identification step; only its rare paths touch them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts = dict.fromkeys(
            ("conflicts", "untrusted_refused", "untrusted_ignored", "second_lookups"), 0
        )

    def add(self, name: str) -> None:
        with self._lock:
            self.counts[name] += 1

    def as_dict(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)


def parse_path_segment(validator: TenantIdentifierValidator, value: str) -> TenantIdentifier:
    """Parse a path segment as a UUID or a slug (a host in a path names nothing, so it is refused).

    :raises InvalidIdentifier: if the segment is malformed.
    """
    if "." in value:
        raise InvalidIdentifier("the path segment is not a UUID or a slug")
    return validator.parse_header(value)


def network_trust(networks: tuple[Network, ...]) -> Callable[[WSGIEnviron, Any], bool]:
    """Trust a request whose ``REMOTE_ADDR`` (after ProxyFix) is in one of ``networks``."""

    @functools.lru_cache(maxsize=_MEMO)
    def trusted_address(addr: str | None) -> bool:
        try:
            ip = ipaddress.ip_address(addr)  # type: ignore[arg-type]
        except ValueError:
            return False  # no address (a Unix socket) or garbage: nobody to trust
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
        return any(ip in net for net in networks)

    def trusted(environ: WSGIEnviron, req: Any) -> bool:
        return trusted_address(environ.get("REMOTE_ADDR"))

    return trusted


def callable_trust(func: Callable[[Any], bool]) -> Callable[[WSGIEnviron, Any], bool]:
    """Trust a request ``func(request)`` says is trusted; a failing ``func`` trusts nobody."""

    def trusted(environ: WSGIEnviron, req: Any) -> bool:
        try:
            return bool(func(req))
        except Exception:
            logger.exception("TENANT_CACHE_HEADER_TRUSTED failed: the tenant header is untrusted")
            return False

    return trusted


#: Where a strategy reads its raw value: an environ key, or a function of the environ and the
#: request (a custom strategy, or the header when only some clients may send it).
_Source = str | Callable[[WSGIEnviron, Any], Any]
_Parse = Callable[[Any], TenantIdentifier | None]


def _header_source(settings: Settings, stats: IdentificationStats) -> _Source:
    key = settings.header_environ_key
    trust = settings.header_trusted
    if trust is None:
        return key
    trusted = callable_trust(trust) if callable(trust) else network_trust(trust)
    refuse = settings.untrusted_header == "refuse"
    message = f"the {settings.header} header is not accepted from this client"

    def trusted_header(environ: WSGIEnviron, req: Any) -> str | None:
        raw: str | None = environ.get(key)
        if raw is None or trusted(environ, req):
            return raw
        stats.add("untrusted_refused" if refuse else "untrusted_ignored")
        if refuse:
            raise UntrustedTenantHeader(message)
        return None

    return trusted_header


def _custom_parse(name: str, validator: TenantIdentifierValidator) -> _Parse:
    def parse(raw: Any) -> TenantIdentifier:
        if isinstance(raw, str):
            return validator.parse_header(raw)
        if isinstance(raw, TenantIdentifier):
            return raw
        if isinstance(raw, uuid.UUID):
            return TenantIdentifier.uuid(raw)
        raise TypeError(
            f"the identifier strategy {name!r} returned {type(raw).__name__}, not a str, "
            "UUID, TenantIdentifier or None"
        )

    return parse


def _strategy(
    name: str,
    settings: Settings,
    validator: TenantIdentifierValidator,
    custom: Mapping[str, IdentifierStrategy],
    stats: IdentificationStats,
) -> tuple[_Source, _Parse]:
    if name == "header":
        return _header_source(settings, stats), validator.parse_header
    if name == "host":
        parse_host = validator.parse_host
        return "HTTP_HOST", lambda raw: parse_host(raw) if raw else None
    if name == "path":
        return PATH_SEGMENT_KEY, functools.partial(parse_path_segment, validator)
    func = custom[name]
    return (lambda environ, req: func(req)), _custom_parse(name, validator)


def build_chain(
    settings: Settings,
    validator: TenantIdentifierValidator,
    custom: Mapping[str, IdentifierStrategy],
    stats: IdentificationStats,
) -> Identify:
    """The identification function of ``TENANT_CACHE_STRATEGIES``, built once at ``init_app``.

    With ``TENANT_CACHE_ON_CONFLICT = "first"`` the first strategy that names a tenant decides
    and the later ones are not run. With ``"error"`` every strategy runs, so a malformed value
    from any of them is a 400, and the others that named a tenant come back in
    ``confirmed_by`` for the hook to check against the resolved tenant.

    Parsing is memoised on the raw values (bounded; rejected input raises and is never
    memoised), so a request like an earlier one gets the same :class:`Identification` back
    without allocating.
    """
    names = settings.strategies
    pairs = [_strategy(n, settings, validator, custom, stats) for n in names]
    sources = tuple(source for source, _ in pairs)
    parsers = tuple(zip(names, (parse for _, parse in pairs), strict=True))

    if settings.on_conflict == "first":
        memos = tuple(_memo(name, parse) for name, parse in parsers)
        chain = tuple(zip(sources, memos, strict=True))

        def first_wins(environ: WSGIEnviron, req: Any) -> Identification | None:
            for source, memo in chain:
                raw = environ.get(source) if isinstance(source, str) else source(environ, req)
                if raw is not None:
                    found = memo(raw)
                    if found is not None:
                        return found
            return None

        return first_wins

    @functools.lru_cache(maxsize=_MEMO)
    def combine(*raws: Any) -> Identification | None:
        named = [
            Identification(name, ident)
            for (name, parse), raw in zip(parsers, raws, strict=True)
            if raw is not None and (ident := parse(raw)) is not None
        ]
        if len(named) < 2:
            return named[0] if named else None
        first = named[0]
        return Identification(first.strategy, first.identifier, tuple(named[1:]))

    return _reader(sources, combine)


def _reader(
    sources: tuple[_Source, ...], combine: Callable[..., Identification | None]
) -> Identify:
    """Read every source and ``combine`` the raw values; unrolled for the usual plain keys."""
    keys = [s for s in sources if isinstance(s, str)]
    if len(keys) == len(sources) <= 2:
        if len(keys) == 1:
            (key,) = keys

            def one(environ: WSGIEnviron, req: Any) -> Identification | None:
                return combine(environ.get(key))

            return one
        first, second = keys

        def two(environ: WSGIEnviron, req: Any) -> Identification | None:
            return combine(environ.get(first), environ.get(second))

        return two

    def any_sources(environ: WSGIEnviron, req: Any) -> Identification | None:
        return combine(
            *[environ.get(s) if isinstance(s, str) else s(environ, req) for s in sources]
        )

    return any_sources


def _memo(name: str, parse: _Parse) -> Callable[[Any], Identification | None]:
    """``parse`` answering an :class:`Identification`, memoised per raw value."""

    def identification(raw: Any) -> Identification | None:
        ident = parse(raw)
        return None if ident is None else Identification(name, ident)

    return functools.lru_cache(maxsize=_MEMO)(identification)
