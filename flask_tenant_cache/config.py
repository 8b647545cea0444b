"""Every ``TENANT_CACHE_*`` key, its default, and its validation at ``init_app``."""

from __future__ import annotations

import ipaddress
import logging
import math
import re
from collections.abc import Callable, Collection, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

from .guard import GuardLimits
from .identifiers import InvalidIdentifier, normalize_host
from .plan import Step, parse_plan

__all__ = [
    "BUILTIN_STRATEGIES",
    "DEFAULTS",
    "HeaderTrust",
    "Settings",
    "live_flag",
    "live_percent",
    "load_settings",
]

logger = logging.getLogger("flask_tenant_cache")

#: Every key with its default, in the order the docs list them.
DEFAULTS: dict[str, Any] = {
    "TENANT_CACHE_HEADER": "X-Tenant-ID",
    "TENANT_CACHE_BASE_DOMAINS": [],
    "TENANT_CACHE_REQUIRED": True,
    "TENANT_CACHE_EXEMPT_PREFLIGHT": True,
    "TENANT_CACHE_STRATEGIES": ["header", "host"],
    "TENANT_CACHE_ON_CONFLICT": "error",
    "TENANT_CACHE_HEADER_TRUSTED": None,
    "TENANT_CACHE_UNTRUSTED_HEADER": "refuse",
    "TENANT_CACHE_PATH_PREFIX": "/t",
    "TENANT_CACHE_USE_V2": True,
    "TENANT_CACHE_TTL": 300,
    "TENANT_CACHE_NEGATIVE_TTL": 30,
    "TENANT_CACHE_IDLE_TIMEOUT": 60,
    "TENANT_CACHE_MAX_ENTRIES": 10_000,
    "TENANT_CACHE_LOAD_TIMEOUT": 5,
    "TENANT_CACHE_URL_PREFIX": "/_tenant-cache",
    "TENANT_CACHE_ADMIN_TOKEN": None,
    "TENANT_CACHE_V1_MAX_ENTRIES": 1000,
    "TENANT_CACHE_REDIS_URL": None,
    "TENANT_CACHE_REDIS_PREFIX": "tenant-cache",
    "TENANT_CACHE_REDIS_TTL": None,
    "TENANT_CACHE_INVALIDATION_CHANNEL": None,
    "TENANT_CACHE_REDIS_SOCKET_TIMEOUT": 0.25,
    "TENANT_CACHE_V2_PERCENT": None,
    "TENANT_CACHE_SHADOW_PERCENT": 0,
    "TENANT_CACHE_SHADOW_TIMEOUT": 2,
    "TENANT_CACHE_AUTO_INVALIDATE": False,
    "TENANT_CACHE_STALE_IF_ERROR": 0,
    "TENANT_CACHE_NEGATIVE_MAX_ENTRIES": None,
    "TENANT_CACHE_ROLLOUT_PLAN": None,
    "TENANT_CACHE_GUARD": None,
    "TENANT_CACHE_GUARD_MAX_MISMATCH_RATIO": 0.01,
    "TENANT_CACHE_GUARD_MAX_ERROR_RATIO": 0.01,
    "TENANT_CACHE_GUARD_MAX_P99_RATIO": 2.0,
    "TENANT_CACHE_GUARD_P99_FLOOR": 0.005,
    "TENANT_CACHE_GUARD_MIN_SAMPLES": 100,
    "TENANT_CACHE_CONTROL_INTERVAL": 1.0,
    "TENANT_CACHE_MISMATCH_RECORDS": 50,
}

_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")

_HEADER_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")

#: The strategies the extension brings; an app registers more by name.
BUILTIN_STRATEGIES = ("header", "host", "path")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
#: Who may send the tenant header: None (anyone), networks, or a callable given the request.
HeaderTrust = tuple[Network, ...] | Callable[[Any], bool] | None


@dataclass(frozen=True, slots=True)
class Settings:
    """The validated configuration of one app."""

    header: str
    header_environ_key: str
    base_domains: tuple[str, ...]
    required: bool
    exempt_preflight: bool
    strategies: tuple[str, ...]
    on_conflict: str
    header_trusted: HeaderTrust
    untrusted_header: str
    path_prefix: str
    ttl: float
    negative_ttl: float
    idle_timeout: float | None
    max_entries: int
    load_timeout: float | None
    url_prefix: str
    admin_token: str | None
    v1_max_entries: int
    redis_url: str | None
    redis_prefix: str
    redis_ttl: float
    invalidation_channel: str | None
    redis_socket_timeout: float
    shadow_timeout: float
    auto_invalidate: bool
    stale_if_error: float
    negative_max_entries: int | None
    rollout_plan: tuple[Step, ...] | None
    guard: GuardLimits | None
    control_interval: float
    mismatch_records: int


def _fail(key: str, expected: str, value: Any) -> ValueError:
    return ValueError(f"{key} must be {expected}, not {value!r}")


def _number(config: Mapping[str, Any], key: str, *, positive: bool = False) -> float:
    value = config[key]
    # NaN and infinity pass "< 0" but break the resolver later (a wait() on inf overflows).
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise _fail(key, "a finite number of seconds >= 0", value)
    if positive and value == 0:
        raise _fail(key, "a number of seconds > 0", value)
    return float(value)


def _optional_seconds(config: Mapping[str, Any], key: str) -> float | None:
    if config[key] is None:
        return None
    return _number(config, key, positive=True)


def _flag(config: Mapping[str, Any], key: str) -> bool:
    value = config[key]
    if not isinstance(value, bool):
        raise _fail(key, "True or False", value)
    return value


def _header(config: Mapping[str, Any]) -> str:
    value = config["TENANT_CACHE_HEADER"]
    if not isinstance(value, str) or not _HEADER_RE.fullmatch(value):
        raise _fail("TENANT_CACHE_HEADER", "an HTTP header name such as 'X-Tenant-ID'", value)
    return value


def _base_domains(config: Mapping[str, Any]) -> tuple[str, ...]:
    key = "TENANT_CACHE_BASE_DOMAINS"
    value = config[key]
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise _fail(key, "a list of domain names", value)
    try:
        return tuple(dict.fromkeys(normalize_host(v) for v in value))
    except InvalidIdentifier as exc:
        raise ValueError(f"{key} holds an invalid domain: {exc}") from None


def _string_list(config: Mapping[str, Any], key: str, expected: str) -> list[str]:
    """A non-empty list (or tuple) of strings, or one comma-separated string of them."""
    value = config[key]
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if (
        not isinstance(value, list | tuple)
        or not value
        or not all(isinstance(v, str) for v in value)
    ):
        raise _fail(key, expected, config[key])
    return list(value)


def _strategies(config: Mapping[str, Any], custom: Collection[str]) -> tuple[str, ...]:
    key = "TENANT_CACHE_STRATEGIES"
    value = _string_list(config, key, "a non-empty list of strategy names")
    if len(set(value)) != len(value):
        raise _fail(key, "a list without repeated names", value)
    known = (*BUILTIN_STRATEGIES, *custom)
    unknown = [v for v in value if v not in known]
    if unknown:
        raise ValueError(
            f"{key} names an unknown strategy {unknown[0]!r}: choose from {', '.join(known)},"
            " or register one with @tenant_cache.identifier_strategy before init_app"
        )
    return tuple(value)


def _choice(config: Mapping[str, Any], key: str, choices: tuple[str, ...]) -> str:
    value = config[key]
    if value not in choices:
        raise _fail(key, " or ".join(repr(c) for c in choices), value)
    return str(value)


def _header_trusted(config: Mapping[str, Any]) -> HeaderTrust:
    key = "TENANT_CACHE_HEADER_TRUSTED"
    value = config[key]
    if value is None or callable(value):
        return value  # type: ignore[no-any-return]
    value = _string_list(
        config, key, "None, a callable or a non-empty list of networks in CIDR form"
    )
    try:
        # strict: "10.0.0.1/8" is a typo for a network or for a host, refuse to guess which.
        return tuple(ipaddress.ip_network(v) for v in value)
    except ValueError as exc:
        raise ValueError(f"{key} holds an invalid network: {exc}") from None


def _path_prefix(config: Mapping[str, Any]) -> str:
    key = "TENANT_CACHE_PATH_PREFIX"
    value = config[key]
    if (
        not isinstance(value, str)
        or not value.startswith("/")
        or value.endswith("/")
        or any(c.isspace() or c in "%?#" for c in value)
    ):
        raise _fail(key, "a path such as '/t' (a leading '/', none at the end)", value)
    return value


def _max_entries(config: Mapping[str, Any], key: str) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _fail(key, "a whole number >= 1", value)
    return value


def _url_prefix(config: Mapping[str, Any]) -> str:
    value = config["TENANT_CACHE_URL_PREFIX"]
    if not isinstance(value, str) or not value.startswith("/") or value.endswith("/"):
        raise _fail("TENANT_CACHE_URL_PREFIX", "a path such as '/_tenant-cache'", value)
    return value


def _admin_token(config: Mapping[str, Any]) -> str | None:
    value = config["TENANT_CACHE_ADMIN_TOKEN"]
    if value is not None and (not isinstance(value, str) or not value):
        raise _fail("TENANT_CACHE_ADMIN_TOKEN", "None or a non-empty string", value)
    return value


def _redis_url(config: Mapping[str, Any]) -> str | None:
    value = config["TENANT_CACHE_REDIS_URL"]
    if value is not None and (not isinstance(value, str) or not value.startswith(_REDIS_SCHEMES)):
        raise _fail("TENANT_CACHE_REDIS_URL", "None or a redis://, rediss:// or unix:// URL", value)
    return value


def _name(config: Mapping[str, Any], key: str, *, no_braces: bool = False) -> str:
    value = config[key]
    if (
        not isinstance(value, str)
        or not value
        or any(c.isspace() for c in value)
        or (no_braces and ("{" in value or "}" in value))
    ):
        expected = "a non-empty name without spaces" + (" or braces" if no_braces else "")
        raise _fail(key, expected, value)
    return value


def _channel(config: Mapping[str, Any]) -> str | None:
    if config["TENANT_CACHE_INVALIDATION_CHANNEL"] is None:
        return None  # the Redis layer derives it from the prefix
    return _name(config, "TENANT_CACHE_INVALIDATION_CHANNEL")


def _percent(config: Mapping[str, Any], key: str, *, optional: bool) -> float | None:
    value = config[key]
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
        raise _fail(key, "a percentage from 0 to 100" + (" or None" if optional else ""), value)
    return float(value)


def _ratio(config: Mapping[str, Any], key: str, *, above_one: bool = False) -> float:
    value = config[key]
    low = 1.0 if above_one else 0.0
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < low
        or (not above_one and value > 1)
    ):
        raise _fail(key, "a ratio >= 1" if above_one else "a ratio from 0 to 1", value)
    return float(value)


def _rollout_plan(config: Mapping[str, Any]) -> tuple[Step, ...] | None:
    try:
        return parse_plan(config["TENANT_CACHE_ROLLOUT_PLAN"])
    except ValueError as exc:
        raise ValueError(f"TENANT_CACHE_ROLLOUT_PLAN: {exc}") from None


def _guard(config: Mapping[str, Any], plan: tuple[Step, ...] | None) -> GuardLimits | None:
    enabled = config["TENANT_CACHE_GUARD"]
    if enabled is not None and not isinstance(enabled, bool):
        raise _fail("TENANT_CACHE_GUARD", "None (on with a plan), True or False", enabled)
    limits = GuardLimits(
        max_mismatch_ratio=_ratio(config, "TENANT_CACHE_GUARD_MAX_MISMATCH_RATIO"),
        max_error_ratio=_ratio(config, "TENANT_CACHE_GUARD_MAX_ERROR_RATIO"),
        max_p99_ratio=_ratio(config, "TENANT_CACHE_GUARD_MAX_P99_RATIO", above_one=True),
        p99_floor=_number(config, "TENANT_CACHE_GUARD_P99_FLOOR"),
        min_samples=_max_entries(config, "TENANT_CACHE_GUARD_MIN_SAMPLES"),
    )
    return limits if (plan is not None if enabled is None else enabled) else None


_warned: set[tuple[str, str]] = set()


def _bad_live_value(key: str, value: Any, expected: str, meaning: str) -> None:
    if (key, repr(value)) not in _warned:
        _warned.add((key, repr(value)))
        logger.error("%s must be %s, not %r: read as %s", key, expected, value, meaning)


def live_percent(
    config: Mapping[str, Any], key: str, *, invalid: float | None = None
) -> float | None:
    """A percentage key read on each request: None if unset, ``invalid`` if it is not a
    number from 0 to 100 (logged once per value).

    ``init_app`` validated it, but ``app.config`` may be changed afterwards; a bad value must
    fall back to the safe reading, not fail every request.
    """
    value = config.get(key)
    if value is None or (type(value) in (int, float) and 0 <= value <= 100):
        return value
    _bad_live_value(key, value, "a percentage from 0 to 100", repr(invalid))
    return invalid


def live_flag(config: Mapping[str, Any], key: str, *, invalid: bool = False) -> bool:
    """A boolean key read on each request; ``invalid`` if it is not a bool (logged once per
    value): the string ``"false"`` is not true.
    """
    value = config.get(key)
    if type(value) is bool:
        return value
    _bad_live_value(key, value, "True or False", repr(invalid))
    return invalid


def load_settings(
    config: MutableMapping[str, Any], custom_strategies: Collection[str] = ()
) -> Settings:
    """Fill in the defaults of ``config`` (an ``app.config``) and validate every key.

    :param custom_strategies: the names of the strategies the app registered, which
        ``TENANT_CACHE_STRATEGIES`` may name besides the built-in ones.

    :raises ValueError: naming the first key whose value is invalid.
    """
    for key, default in DEFAULTS.items():
        config.setdefault(key, list(default) if isinstance(default, list) else default)
    # Read live on each request; validated here so a typo fails at start-up.
    _flag(config, "TENANT_CACHE_USE_V2")
    _percent(config, "TENANT_CACHE_V2_PERCENT", optional=True)
    _percent(config, "TENANT_CACHE_SHADOW_PERCENT", optional=False)
    header = _header(config)
    plan = _rollout_plan(config)
    # The prefix is the keys' hash tag ("{prefix}:..."): a brace in it would end the tag early.
    prefix = _name(config, "TENANT_CACHE_REDIS_PREFIX", no_braces=True)
    return Settings(
        header=header,
        header_environ_key="HTTP_" + header.upper().replace("-", "_"),
        base_domains=_base_domains(config),
        required=_flag(config, "TENANT_CACHE_REQUIRED"),
        exempt_preflight=_flag(config, "TENANT_CACHE_EXEMPT_PREFLIGHT"),
        strategies=_strategies(config, custom_strategies),
        on_conflict=_choice(config, "TENANT_CACHE_ON_CONFLICT", ("error", "first")),
        header_trusted=_header_trusted(config),
        untrusted_header=_choice(config, "TENANT_CACHE_UNTRUSTED_HEADER", ("refuse", "ignore")),
        path_prefix=_path_prefix(config),
        ttl=_number(config, "TENANT_CACHE_TTL", positive=True),
        negative_ttl=_number(config, "TENANT_CACHE_NEGATIVE_TTL"),
        idle_timeout=_optional_seconds(config, "TENANT_CACHE_IDLE_TIMEOUT"),
        max_entries=_max_entries(config, "TENANT_CACHE_MAX_ENTRIES"),
        load_timeout=_optional_seconds(config, "TENANT_CACHE_LOAD_TIMEOUT"),
        url_prefix=_url_prefix(config),
        admin_token=_admin_token(config),
        v1_max_entries=_max_entries(config, "TENANT_CACHE_V1_MAX_ENTRIES"),
        redis_url=_redis_url(config),
        redis_prefix=prefix,
        redis_ttl=(
            _number(config, "TENANT_CACHE_TTL", positive=True)
            if config["TENANT_CACHE_REDIS_TTL"] is None
            else _number(config, "TENANT_CACHE_REDIS_TTL", positive=True)
        ),
        invalidation_channel=_channel(config),
        redis_socket_timeout=_number(config, "TENANT_CACHE_REDIS_SOCKET_TIMEOUT", positive=True),
        shadow_timeout=_number(config, "TENANT_CACHE_SHADOW_TIMEOUT", positive=True),
        auto_invalidate=_flag(config, "TENANT_CACHE_AUTO_INVALIDATE"),
        stale_if_error=_number(config, "TENANT_CACHE_STALE_IF_ERROR"),
        negative_max_entries=(
            None
            if config["TENANT_CACHE_NEGATIVE_MAX_ENTRIES"] is None
            else _max_entries(config, "TENANT_CACHE_NEGATIVE_MAX_ENTRIES")
        ),
        rollout_plan=plan,
        guard=_guard(config, plan),
        control_interval=_number(config, "TENANT_CACHE_CONTROL_INTERVAL", positive=True),
        mismatch_records=_max_entries(config, "TENANT_CACHE_MISMATCH_RECORDS"),
    )
