"""flask-tenant-cache: fast, correct multi-tenant resolution for Flask."""

from __future__ import annotations

from .errors import (
    ConflictingTenantIdentifiers,
    InvalidTenantIdentifier,
    LoadTimeout,
    MissingTenantIdentifier,
    TenantLookupError,
    TenantNotFound,
    UntrustedTenantHeader,
)
from .extension import (
    TenantCache,
    current_identification,
    current_resolver_version,
    current_rollout_decision,
    current_tenant,
    require_tenant,
)
from .flags import Decision, FlagContext, OpenFeatureProvider
from .identifiers import InvalidIdentifier, TenantIdentifier, TenantIdentifierValidator
from .loaders import SQLAlchemyTenantLoader, TenantLoader
from .resolvers import DualCacheResolver, UnifiedCacheResolver
from .strategies import Identification
from .tenant import Tenant

__version__ = "0.1.0"

__all__ = [
    "ConflictingTenantIdentifiers",
    "Decision",
    "DualCacheResolver",
    "FlagContext",
    "Identification",
    "InvalidIdentifier",
    "InvalidTenantIdentifier",
    "LoadTimeout",
    "MissingTenantIdentifier",
    "OpenFeatureProvider",
    "SQLAlchemyTenantLoader",
    "Tenant",
    "TenantCache",
    "TenantIdentifier",
    "TenantIdentifierValidator",
    "TenantLoader",
    "TenantLookupError",
    "TenantNotFound",
    "UnifiedCacheResolver",
    "UntrustedTenantHeader",
    "__version__",
    "current_identification",
    "current_resolver_version",
    "current_rollout_decision",
    "current_tenant",
    "require_tenant",
]
