"""The resolvers: v1 (dual cache) and v2 (unified cache)."""

from __future__ import annotations

from ._store import CachedTenant, Found, NotFound
from .base import Resolver
from .v1 import DualCacheResolver
from .v2 import UnifiedCacheResolver

__all__ = [
    "CachedTenant",
    "DualCacheResolver",
    "Found",
    "NotFound",
    "Resolver",
    "UnifiedCacheResolver",
]
