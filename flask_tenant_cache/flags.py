"""Which resolver, ``"v1"`` or ``"v2"``, serves a request: flag providers and the rollout."""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Literal, NamedTuple, Protocol

from .config import live_flag, live_percent
from .identifiers import TenantIdentifier

__all__ = [
    "Decision",
    "FlagContext",
    "FlagProvider",
    "OpenFeatureProvider",
    "Override",
    "Rollout",
    "Version",
    "parse_override",
    "rollout_bucket",
]

logger = logging.getLogger("flask_tenant_cache")

Version = Literal["v1", "v2"]

#: What an operator can force: a version, or a percentage of tenants on v2.
Override = Version | float

#: The version a request gets when its flag provider fails or answers something else: the
#: older path, so a broken flag service cannot push traffic onto the newer one.
FALLBACK_VERSION: Version = "v1"

#: Prepended to the key before hashing, so these buckets are independent of other rollouts.
ROLLOUT_SALT = b"flask-tenant-cache:v2:"


class FlagContext(NamedTuple):
    """What a flag provider is told about a request."""

    #: The request's validated tenant identifier.
    identifier: TenantIdentifier
    #: The request (a ``flask.Request``, usable after the request too).
    request: Any
    #: The app's config, read live.
    config: Mapping[str, Any]


#: A callable that picks the resolver version for one request.
FlagProvider = Callable[[FlagContext], str]


class Decision(NamedTuple):
    """The version chosen for one request and why (kept on ``g`` for the request)."""

    version: Version
    #: ``"config"``, ``"percentage"``, ``"plan"``, ``"provider"``, ``"provider-error"``,
    #: ``"override"``.
    reason: str
    #: The tenant's rollout bucket in basis points (0-9999), where a percentage decided.
    bucket: int | None = None


_CONFIG_V1 = Decision("v1", "config")
_CONFIG_V2 = Decision("v2", "config")


@functools.lru_cache(maxsize=65536)
def rollout_bucket(key: str) -> int:
    """The rollout bucket of a tenant key, in basis points: 0 to 9999.

    SHA-256 of ``ROLLOUT_SALT + key`` (UTF-8), its first 8 bytes read as a big-endian unsigned
    integer, modulo 10,000. Stable across processes, restarts, machines and languages, unlike
    Python's salted ``hash()``. ``key`` is the identifier's cache key, e.g. ``"slug:acme"``.
    """
    digest = hashlib.sha256(ROLLOUT_SALT + key.encode()).digest()
    return int.from_bytes(digest[:8], "big") % 10_000


def _by_percentage(key: str, percent: float, reason: str) -> Decision:
    # A tenant is on v2 when its bucket is below the threshold: raising the percentage only
    # ever moves tenants from v1 to v2.
    bucket = rollout_bucket(key)
    return Decision("v2" if bucket < percent * 100 else "v1", reason, bucket)


def parse_override(value: Any) -> Override | None:
    """Validate an override: ``"v1"``, ``"v2"``, a percentage 0-100, or None (lift it).

    :raises ValueError: for anything else.
    """
    if value is None or value in ("v1", "v2"):
        return value  # type: ignore[no-any-return]
    if isinstance(value, str):
        try:
            value = float(value.rstrip("%"))
        except ValueError:
            raise ValueError(f"a rollout is 'v1', 'v2' or a percentage, not {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
        raise ValueError(f"a rollout percentage is a number from 0 to 100, not {value!r}")
    return float(value)


class ProviderSource(Protocol):
    """Where a :class:`Rollout` reads its provider on each decision (the extension)."""

    flag_provider: FlagProvider | None


class Rollout:
    """Picks each request's version: the override, else the plan, the provider or the config.

    The override (the kill switch) is set by an operator and kept apart from the settings it
    overrides, so lifting it restores them. Without a provider the config decides:
    ``TENANT_CACHE_V2_PERCENT`` (a sticky percentage) when set, else ``TENANT_CACHE_USE_V2``;
    both are read live.

    :param provider: a callable given a :class:`FlagContext`, answering ``"v1"`` or ``"v2"``.
    :param source: an object whose ``flag_provider`` is read on each decision when
        ``provider`` is None (a decorator may register one on the extension after
        ``init_app``); an attribute, not a call, since it is read on every request.
    """

    def __init__(
        self,
        provider: FlagProvider | None = None,
        *,
        source: ProviderSource | None = None,
    ) -> None:
        self._provider = provider
        self._source = source
        self.override: Override | None = None
        #: The rollout plan's current percentage on v2 (None: no plan), set by its controller.
        self.plan_percent: float | None = None
        self._lock = threading.Lock()
        self.provider_errors = 0

    @property
    def provider(self) -> FlagProvider | None:
        """The flag provider deciding now, or None."""
        if self._provider is not None or self._source is None:
            return self._provider
        return self._source.flag_provider

    @provider.setter
    def provider(self, provider: FlagProvider | None) -> None:
        self._provider = provider

    def decide(self, ident: TenantIdentifier, request: Any, config: Mapping[str, Any]) -> Decision:
        """The decision for one request."""
        override = self.override
        if override is not None:
            if isinstance(override, str):
                return Decision(override, "override")
            return _by_percentage(ident.cache_key, override, "override")
        plan = self.plan_percent
        if plan is not None:
            return _by_percentage(ident.cache_key, plan, "plan")
        provider = self._provider  # not the property: this runs on every request
        if provider is None and self._source is not None:
            provider = self._source.flag_provider
        if provider is not None:
            return self._ask(provider, FlagContext(ident, request, config))
        if config.get("TENANT_CACHE_V2_PERCENT") is not None:
            # A bad live value reads as the older path: no tenant moves to v2 by a typo.
            percent = live_percent(config, "TENANT_CACHE_V2_PERCENT", invalid=0.0)
            return _by_percentage(ident.cache_key, percent, "percentage")  # type: ignore[arg-type]
        use_v2 = config.get("TENANT_CACHE_USE_V2")
        if use_v2 is True:
            return _CONFIG_V2
        if use_v2 is False:
            return _CONFIG_V1
        return _CONFIG_V2 if live_flag(config, "TENANT_CACHE_USE_V2") else _CONFIG_V1

    def _ask(self, provider: FlagProvider, context: FlagContext) -> Decision:
        try:
            version = provider(context)
        except Exception:
            logger.exception("the tenant cache flag provider failed; using %s", FALLBACK_VERSION)
            version = None
        else:
            if version in ("v1", "v2"):
                return Decision(version, "provider")  # type: ignore[arg-type]
            logger.error("the flag provider answered %r, not 'v1' or 'v2'", version)
        with self._lock:
            self.provider_errors += 1
        return Decision(FALLBACK_VERSION, "provider-error")

    def stats(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The effective rollout: its mode, the override and the settings it overrides."""
        provider = self.provider
        if self.override is not None:
            mode = "override"
        elif self.plan_percent is not None:
            mode = "plan"
        elif provider is not None:
            mode = "provider"
        elif config.get("TENANT_CACHE_V2_PERCENT") is not None:
            mode = "percentage"
        else:
            mode = "config"
        return {
            "mode": mode,
            "override": self.override,
            "plan_percent": self.plan_percent,
            "v2_percent": config.get("TENANT_CACHE_V2_PERCENT"),
            "use_v2": config.get("TENANT_CACHE_USE_V2"),
            "provider": getattr(provider, "__name__", type(provider).__name__)
            if provider is not None
            else None,
            "provider_errors": self.provider_errors,
        }


class OpenFeatureProvider:
    """A flag provider backed by the OpenFeature SDK (the ``openfeature`` extra).

    Evaluates the boolean flag ``flag_key`` with the tenant's cache key as targeting key (and
    the identifier's kind and value as attributes): true is v2, false is v1.

    :param client: an ``openfeature.client.OpenFeatureClient``; by default ``api.get_client()``.
    :param flag_key: the flag's name in the flag service.
    :param default: the value when the service cannot answer.
    """

    def __init__(
        self, client: Any = None, *, flag_key: str = "tenant-cache-v2", default: bool = False
    ) -> None:
        try:
            from openfeature import api
            from openfeature.evaluation_context import EvaluationContext
        except ImportError as exc:
            raise ImportError(
                "OpenFeatureProvider needs the SDK: pip install 'flask-tenant-cache[openfeature]'"
            ) from exc
        self._context_type = EvaluationContext
        self.client = client if client is not None else api.get_client()
        self.flag_key = flag_key
        self.default = default
        self.__name__ = f"openfeature:{flag_key}"

    def __call__(self, context: FlagContext) -> Version:
        ident = context.identifier
        evaluation = self._context_type(
            targeting_key=ident.cache_key, attributes={"kind": ident.kind, "value": ident.value}
        )
        on = self.client.get_boolean_value(self.flag_key, self.default, evaluation)
        return "v2" if on else "v1"
