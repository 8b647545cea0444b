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
_Step = Callable[[WSGIEnviron, Any], Identification | None]

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


def _memo(
    name: str, parse: Callable[[str], TenantIdentifier | None]
) -> Callable[[str], Identification | None]:
    """``parse`` wrapped to answer an :class:`Identification`, memoised per raw value.

    A hit allocates nothing; rejected input raises and is never memoised.
    """

    def identification(raw: str) -> Identification | None:
        ident = parse(raw)
        return None if ident is None else Identification(name, ident)

    return functools.lru_cache(maxsize=_MEMO)(identification)


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


def _header_step(
    settings: Settings, validator: TenantIdentifierValidator, stats: IdentificationStats
) -> _Step:
    key = settings.header_environ_key
    parse = _memo("header", validator.parse_header)
    trust = settings.header_trusted
    if trust is None:

        def header(environ: WSGIEnviron, req: Any) -> Identification | None:
            raw = environ.get(key)
            return None if raw is None else parse(raw)

        return header

    trusted = callable_trust(trust) if callable(trust) else network_trust(trust)
    refuse = settings.untrusted_header == "refuse"
    message = f"the {settings.header} header is not accepted from this client"

    def trusted_header(environ: WSGIEnviron, req: Any) -> Identification | None:
        raw = environ.get(key)
        if raw is None:
            return None
        if not trusted(environ, req):
            stats.add("untrusted_refused" if refuse else "untrusted_ignored")
            if refuse:
                raise UntrustedTenantHeader(message)
            return None
        return parse(raw)

    return trusted_header


def _host_step(validator: TenantIdentifierValidator) -> _Step:
    parse = _memo("host", validator.parse_host)

    def host(environ: WSGIEnviron, req: Any) -> Identification | None:
        raw = environ.get("HTTP_HOST")
        return parse(raw) if raw else None

    return host


def _path_step(validator: TenantIdentifierValidator) -> _Step:
    parse = _memo("path", functools.partial(parse_path_segment, validator))

    def path(environ: WSGIEnviron, req: Any) -> Identification | None:
        raw = environ.get(PATH_SEGMENT_KEY)
        return None if raw is None else parse(raw)

    return path


def _custom_step(
    name: str, func: IdentifierStrategy, validator: TenantIdentifierValidator
) -> _Step:
    parse = _memo(name, validator.parse_header)

    def custom(environ: WSGIEnviron, req: Any) -> Identification | None:
        raw = func(req)
        if raw is None:
            return None
        if isinstance(raw, str):
            return parse(raw)
        if isinstance(raw, TenantIdentifier):
            return Identification(name, raw)
        if isinstance(raw, uuid.UUID):
            return Identification(name, TenantIdentifier.uuid(raw))
        raise TypeError(
            f"the identifier strategy {name!r} returned {type(raw).__name__}, not a str, "
            "UUID, TenantIdentifier or None"
        )

    return custom


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
    """
    steps: list[_Step] = []
    for name in settings.strategies:
        if name == "header":
            steps.append(_header_step(settings, validator, stats))
        elif name == "host":
            steps.append(_host_step(validator))
        elif name == "path":
            steps.append(_path_step(validator))
        else:
            steps.append(_custom_step(name, custom[name], validator))
    chain = tuple(steps)

    if settings.on_conflict == "first":

        def first_wins(environ: WSGIEnviron, req: Any) -> Identification | None:
            for step in chain:
                found = step(environ, req)
                if found is not None:
                    return found
            return None

        return first_wins

    def all_agree(environ: WSGIEnviron, req: Any) -> Identification | None:
        first = None
        others: list[Identification] | None = None
        for step in chain:
            found = step(environ, req)
            if found is None:
                continue
            if first is None:
                first = found
            elif others is None:
                others = [found]
            else:
                others.append(found)
        if others is None:
            return first
        assert first is not None
        return first._replace(confirmed_by=tuple(others))

    return all_agree
