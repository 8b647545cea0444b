"""Parsing, validation and normalisation of tenant identifiers (no Flask import)."""

from __future__ import annotations

import functools
import ipaddress
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import idna

__all__ = [
    "MAX_HOST_LENGTH",
    "MAX_SLUG_LENGTH",
    "IdentifierKind",
    "InvalidIdentifier",
    "TenantId",
    "TenantIdentifier",
    "TenantIdentifierValidator",
    "fold_ascii",
    "host_to_unicode",
    "normalize_host",
]

IdentifierKind = Literal["uuid", "slug", "host", "id"]

#: The types a tenant's primary key may have.
TenantId = uuid.UUID | int | str

MAX_SLUG_LENGTH = 63
MAX_HOST_LENGTH = 253
#: Raw input longer than this is rejected before any other work (a host with a port).
MAX_RAW_LENGTH = MAX_HOST_LENGTH + 6

_UUID_RE = re.compile(r"[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: 30 to 40 hex digits and hyphens: meant as a UUID, so "malformed UUID" is the clearer error.
_UUID_LIKE_RE = re.compile(r"[0-9a-f-]{30,40}")
_SLUG_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_LABEL_RE = _SLUG_RE
_FORBIDDEN_RE = re.compile(r"[\x00-\x20\x7f/%\\]")
#: Hosts that are never a tenant's, whatever the base domain.
_NO_TENANT_LABELS = frozenset({"www"})
#: The full stops UTS #46 reads as dots (ideographic, fullwidth, halfwidth ideographic).
_DOTS = str.maketrans(dict.fromkeys("\u3002\uff0e\uff61", "."))
#: Lowercases ASCII letters only: other letters are UTS #46's to map (it maps a capital sigma
#: to the medial sigma everywhere, where ``str.lower()`` makes a final one final: another
#: domain).
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def fold_ascii(text: str) -> str:
    """``text`` with its ASCII letters lowercased and every other character kept, as SQL's
    ``lower()`` does on every database."""
    return text.translate(_ASCII_LOWER)


class InvalidIdentifier(ValueError):
    """Raised for an identifier that is malformed; the message says why."""


@dataclass(frozen=True, slots=True)
class TenantIdentifier:
    """A validated, normalised tenant identifier.

    :param kind: ``"uuid"``, ``"slug"``, ``"host"`` (a custom domain), or ``"id"``: a
        primary key that is not a UUID (an integer or a string), which no header or Host
        names (see :meth:`id`).
    :param value: the canonical spelling: a hyphenated lowercase UUID, a lowercase slug, a
        lowercase ASCII (punycode) host without port or trailing dot, or ``str(id)``.
    """

    kind: IdentifierKind
    value: str
    cache_key: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cache_key", f"{self.kind}:{self.value}")

    @classmethod
    def uuid(cls, value: uuid.UUID | str) -> TenantIdentifier:
        """The identifier of a tenant's id."""
        return cls("uuid", str(value if isinstance(value, uuid.UUID) else uuid.UUID(value)))

    @classmethod
    def id(cls, value: TenantId) -> TenantIdentifier:
        """The identifier of a tenant's primary key, whatever its type.

        A UUID gives a ``"uuid"`` identifier (the header's); an integer or a string gives an
        ``"id"`` identifier, which only code reaches (``invalidate(row.id)``): a header value
        is never read as one, so ``X-Tenant-ID: 42`` is the slug ``42``, not the row 42.

        :raises InvalidIdentifier: for an empty or overlong string, or one with whitespace or
            control characters.
        """
        if isinstance(value, uuid.UUID):
            return cls("uuid", str(value))
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise InvalidIdentifier(f"a tenant id is a UUID, an int or a str, not {value!r}")
        text = str(value)
        _check_raw(text, "the tenant id")
        if isinstance(value, str) and _UUID_RE.fullmatch(text.lower()):
            # A string key that spells a UUID is one the header names.
            return cls("uuid", str(uuid.UUID(text)))
        return cls("id", text)

    @classmethod
    def slug(cls, value: str) -> TenantIdentifier:
        """The identifier of a tenant's slug (validated)."""
        return cls("slug", _validate_slug(value))

    @classmethod
    def host(cls, value: str) -> TenantIdentifier:
        """The identifier of a tenant's custom domain (validated and normalised)."""
        return cls("host", normalize_host(value))

    @classmethod
    def from_cache_key(cls, key: str) -> TenantIdentifier:
        """Read back a :attr:`cache_key` (from another process), validating it again.

        :raises InvalidIdentifier: if ``key`` is not a cache key.
        """
        kind, _, value = key.partition(":")
        if kind == "uuid":
            try:
                return cls.uuid(value)
            except ValueError:
                raise InvalidIdentifier("malformed UUID") from None
        if kind == "slug":
            return cls.slug(value)
        if kind == "host":
            return cls.host(value)
        if kind == "id":
            return cls.id(value)
        raise InvalidIdentifier(f"not a tenant cache key: {key[:80]!r}")


def _check_raw(value: str, what: str) -> None:
    if not value:
        raise InvalidIdentifier(f"{what} is empty")
    if len(value) > MAX_RAW_LENGTH:
        raise InvalidIdentifier(f"{what} is longer than {MAX_HOST_LENGTH} characters")
    bad = _FORBIDDEN_RE.search(value)
    if bad is not None:
        char = bad.group()
        kind = "whitespace" if char.isspace() else "a control character"
        if char in "/%\\":
            kind = repr(char)
        raise InvalidIdentifier(f"{what} contains {kind}")
    if ".." in value:
        raise InvalidIdentifier(f"{what} contains '..'")


def _validate_slug(value: str) -> str:
    slug = value.lower()
    if not slug.isascii():
        raise InvalidIdentifier("a slug must be ASCII")
    if len(slug) > MAX_SLUG_LENGTH:
        raise InvalidIdentifier(f"a slug is at most {MAX_SLUG_LENGTH} characters")
    if _UUID_LIKE_RE.fullmatch(slug) is not None:
        # A header reads such a value as a UUID: a slug like it would name two things.
        raise InvalidIdentifier(
            "a slug must not look like a UUID (30 to 40 hex digits and hyphens)"
        )
    if _SLUG_RE.fullmatch(slug) is None:
        raise InvalidIdentifier(
            "a slug holds letters, digits and inner hyphens only, 1 to 63 characters"
        )
    return slug


@functools.lru_cache(maxsize=4096)
def normalize_host(value: str) -> str:
    """Return the canonical form of a host name: lowercase ASCII (punycode), no port, no
    trailing dot.

    Internationalised names are mapped and checked as browsers do (UTS #46 non-transitional
    mapping, then IDNA 2008, with the ``idna`` package): ``straße.de`` and
    ``xn--strae-oqa.de`` are one host, ``strasse.de`` another. The ideographic full stops
    (U+3002, U+FF0E, U+FF61) are dots.

    :raises InvalidIdentifier: for anything that is not an RFC 1123 host name after mapping.
    """
    _check_raw(value, "the host")
    host = fold_ascii(value.translate(_DOTS))
    if ".." in host:
        raise InvalidIdentifier("the host contains '..'")
    if host.startswith("["):
        raise InvalidIdentifier("an IP address names no tenant")
    name, sep, port = host.rpartition(":")
    if sep:
        if not _is_port(port) or not name:
            raise InvalidIdentifier("the host has a malformed port")
        host = name
    if host.endswith("."):
        host = host[:-1]
    # A punycode label is decoded and checked too: "xn--a" is no domain in any spelling.
    if not host.isascii() or "xn--" in host:
        try:
            host = idna.encode(host, uts46=True, std3_rules=True).decode("ascii")
        except UnicodeError:  # idna.IDNAError is one
            raise InvalidIdentifier(
                "the host is not a valid internationalised domain name (IDNA 2008, UTS #46)"
            ) from None
    if not host or len(host) > MAX_HOST_LENGTH:
        raise InvalidIdentifier(f"a host is 1 to {MAX_HOST_LENGTH} characters")
    for label in host.split("."):
        if _LABEL_RE.fullmatch(label) is None:
            raise InvalidIdentifier(
                "each label of a host holds letters, digits and inner hyphens, 1 to 63 characters"
            )
    return host


def host_to_unicode(host: str) -> str:
    """The Unicode spelling of a canonical host (``xn--strae-oqa.de`` -> ``straße.de``)."""
    return idna.decode(host) if "xn--" in host else host


def _is_port(port: str) -> bool:
    # str.isdigit() alone accepts non-ASCII digits such as "²", which int() then rejects.
    return port.isascii() and port.isdigit() and int(port) <= 65535


def _bracketed_ip(value: str) -> bool:
    """Whether ``value`` is an IPv6 literal in brackets, with an optional port.

    :raises InvalidIdentifier: if it starts with ``[`` but is not one.
    """
    if not value.startswith("["):
        return False
    _check_raw(value, "the host")
    address, sep, rest = value[1:].partition("]")
    try:
        ipaddress.IPv6Address(address if sep else "")
    except ValueError:
        raise InvalidIdentifier("the host is a malformed IPv6 address") from None
    if rest and not (rest.startswith(":") and _is_port(rest[1:])):
        raise InvalidIdentifier("the host has a malformed port")
    return True


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host.rsplit(".", 1)[-1].isdigit()
    return True


class TenantIdentifierValidator:
    """Turns raw header values and Host headers into :class:`TenantIdentifier` objects.

    Parsing is memoised per raw value (bounded), so the hot path of a cached tenant does not
    re-run the regular expressions; rejected input is never memoised.

    :param base_domains: domains whose direct subdomains name tenants by slug
        (``acme.example.com`` is the tenant whose slug is ``acme``); when several match a
        host, the longest wins, whatever their order.
    """

    def __init__(self, base_domains: Iterable[str] = ()) -> None:
        self.base_domains: tuple[str, ...] = tuple(normalize_host(d) for d in base_domains)
        # Longest first: with example.com and eu.example.com, acme.eu.example.com is "acme".
        self._suffixes = tuple(sorted(("." + d for d in self.base_domains), key=len, reverse=True))
        self.parse_header = functools.lru_cache(maxsize=4096)(self._parse_header)
        self.parse_host = functools.lru_cache(maxsize=4096)(self._parse_host)

    def parse(self, value: str) -> TenantIdentifier:
        """Parse an identifier as the header carries it: a UUID, a slug, or a host (with a dot).

        :raises InvalidIdentifier: if the value is malformed or names no tenant.
        """
        return self.parse_header(value)

    def _parse_header(self, value: str) -> TenantIdentifier:
        _check_raw(value, "the tenant identifier")
        if "." in value.translate(_DOTS):
            ident = self._parse_host(value)
            if ident is None:
                raise InvalidIdentifier("this host names no tenant")
            return ident
        lowered = value.lower()
        if _UUID_RE.fullmatch(lowered):
            return TenantIdentifier("uuid", str(uuid.UUID(lowered)))
        if _UUID_LIKE_RE.fullmatch(lowered):
            raise InvalidIdentifier("malformed UUID")
        return TenantIdentifier("slug", _validate_slug(value))

    def _parse_host(self, value: str) -> TenantIdentifier | None:
        """Return the identifier a Host header names, or None if it names no tenant.

        No tenant: an IP address, a single-label host (``localhost``), a base domain itself, or
        ``www`` under a base domain.
        """
        if _bracketed_ip(value):
            return None
        host = normalize_host(value)
        if "." not in host or _is_ip(host) or host in self.base_domains:
            return None
        for suffix in self._suffixes:
            if host.endswith(suffix):
                label = host[: -len(suffix)]
                if "." in label:
                    break  # deeper than one label: a custom domain
                if label in _NO_TENANT_LABELS:
                    return None
                return TenantIdentifier("slug", _validate_slug(label))
        return TenantIdentifier("host", host)
