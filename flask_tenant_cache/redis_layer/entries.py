"""The format of an L2 entry: written as JSON with a version, read back strictly."""

from __future__ import annotations

import json
from typing import Any

from flask_tenant_cache.identifiers import TenantIdentifier
from flask_tenant_cache.tenant import Tenant

__all__ = ["ENTRY_VERSION", "decode", "encode", "tenant_id"]

#: The format of an L2 entry; a reader skips entries of any other version.
ENTRY_VERSION = 1


def encode(tenant: Tenant) -> str:
    """The entry of ``tenant``, with the cache keys of all its names."""
    aliases = sorted(tenant.alias_keys)
    return json.dumps({"v": ENTRY_VERSION, "tenant": tenant.to_dict(), "aliases": aliases})


def decode(raw: bytes) -> Tenant | None:
    """The tenant of an entry; None for an entry of another version (a rolling deploy).

    :raises Exception: whatever reading an unreadable entry raises (not JSON, too deep, of
        the wrong shape or types): the caller treats every one as a miss.
    """
    data = json.loads(raw)
    if isinstance(data, dict) and data.get("v") != ENTRY_VERSION:
        return None
    tenant = data["tenant"]
    if not all(isinstance(tenant.get(f, ""), str) for f in ("id", "slug", "name")):
        raise TypeError("a text field is not text")
    domains, extra = tenant.get("domains", []), tenant.get("extra", {})
    if not isinstance(domains, list) or not all(isinstance(d, str) for d in domains):
        raise TypeError("domains")
    if not isinstance(tenant.get("is_active", True), bool) or not isinstance(extra, dict):
        raise TypeError("is_active or extra")
    return Tenant.from_dict(tenant)


def tenant_id(raw: Any) -> str | None:
    """A tenant id read from Redis (an id pointer), or None if it is none.

    Any primary key a tenant may have (a UUID, an integer, a string), checked.
    """
    try:
        return TenantIdentifier.id(raw.decode()).value if raw else None
    except (ValueError, UnicodeDecodeError, AttributeError):
        return None
