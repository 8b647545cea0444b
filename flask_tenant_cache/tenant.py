"""The immutable tenant snapshot that caches hold and requests read."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .identifiers import TenantId, TenantIdentifier, normalize_host

__all__ = ["Tenant"]


@dataclass(frozen=True, slots=True)
class Tenant:
    """A frozen, picklable, JSON-able snapshot of one tenant, never an ORM row.

    :param id: the tenant's primary key: a UUID, an int or a str, kept as given (a str that
        spells a UUID stays a str).
    :param slug: the tenant's lowercase slug.
    :param name: the display name.
    :param domains: custom domains, normalised as :func:`~.identifiers.normalize_host` does.
    :param is_active: an inactive tenant is answered 404, like an unknown one.
    :param extra: further read-only attributes (plan, region...), JSON-able values only.
    """

    id: TenantId
    slug: str
    name: str = ""
    domains: tuple[str, ...] = ()
    is_active: bool = True
    # Left out of the hash: a mappingproxy is unhashable, and equal tenants still hash equal.
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        TenantIdentifier.id(self.id)  # validates it
        object.__setattr__(self, "slug", TenantIdentifier.slug(self.slug).value)
        object.__setattr__(self, "domains", tuple(normalize_host(d) for d in self.domains))
        object.__setattr__(self, "extra", MappingProxyType(dict(self.extra)))

    @property
    def aliases(self) -> tuple[TenantIdentifier, ...]:
        """Every identifier that names this tenant: its id, its slug and each domain."""
        return (
            TenantIdentifier.id(self.id),
            TenantIdentifier("slug", self.slug),
            *(TenantIdentifier("host", d) for d in self.domains),
        )

    @property
    def alias_keys(self) -> frozenset[str]:
        """The cache keys of :attr:`aliases`."""
        return frozenset(a.cache_key for a in self.aliases)

    def answers_to(self, ident: TenantIdentifier) -> bool:
        """Whether ``ident`` is one of :attr:`aliases`, without building them."""
        kind, value = ident.kind, ident.value
        if kind == "slug":
            return value == self.slug
        if kind == "host":
            return value in self.domains
        return value == str(self.id)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict; :meth:`from_dict` reads it back."""
        return {
            "id": str(self.id),
            "id_type": _id_type(self.id),
            "slug": self.slug,
            "name": self.name,
            "domains": list(self.domains),
            "is_active": self.is_active,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tenant:
        """Build a tenant from :meth:`to_dict`'s output."""
        id_type = data.get("id_type", "uuid")
        if id_type not in _ID_PARSERS:
            raise ValueError(f"unknown tenant id type {id_type!r}")
        return cls(
            id=_ID_PARSERS[id_type](data["id"]),
            slug=data["slug"],
            name=data.get("name", ""),
            domains=tuple(data.get("domains", ())),
            is_active=bool(data.get("is_active", True)),
            extra=data.get("extra", {}),
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # MappingProxyType does not pickle: rebuild from plain values.
        return (_rebuild, (self.to_dict(),))


def _id_type(value: TenantId) -> str:
    if isinstance(value, uuid.UUID):
        return "uuid"
    return "int" if isinstance(value, int) else "str"


_ID_PARSERS: dict[str, Any] = {"uuid": uuid.UUID, "int": int, "str": str}


def _rebuild(data: Mapping[str, Any]) -> Tenant:
    return Tenant.from_dict(data)
