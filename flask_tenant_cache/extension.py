"""The ``TenantCache`` extension object: set-up, user hooks, operations and admin policy."""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any, TypeVar, overload

from flask import Blueprint, Flask, current_app, request
from werkzeug.local import LocalProxy

from ._context import app_context
from .config import BUILTIN_STRATEGIES, load_settings
from .errors import AdminAuthRequired, AdminForbidden, MissingTenantIdentifier
from .figures import RequestRecorder
from .flags import Decision, FlagProvider, Rollout
from .hook import (
    TENANT_KEY,
    current_decision,
    current_identification,
    current_tenant_or_none,
    make_hook,
)
from .identifiers import InvalidIdentifier, TenantIdentifier, TenantIdentifierValidator
from .loaders import TenantLoader, WarmableTenantLoader
from .metrics import WarmReport
from .mismatches import IgnoreRule
from .resolvers.base import Resolver
from .state import AppState
from .strategies import IdentifierStrategy
from .tenant import Tenant

__all__ = [
    "TenantCache",
    "current_identification",
    "current_resolver_version",
    "current_rollout_decision",
    "current_tenant",
    "require_tenant",
]

logger = logging.getLogger("flask_tenant_cache")

EXTENSION_KEY = "tenant_cache"
BLUEPRINT_NAME = "tenant_cache"
_EXEMPT_ATTR = "_tenant_cache_exempt"

V = TypeVar("V")
S = TypeVar("S", bound=IdentifierStrategy)
AdminAuthorizer = Callable[[], bool]


class _TenantProxy(LocalProxy):  # type: ignore[type-arg]
    """A ``LocalProxy`` whose public attribute reads go straight to the tenant.

    ``LocalProxy`` reads an attribute only once its own lookup failed (raising an
    ``AttributeError`` each time), through a descriptor that binds a new callable: six times
    the cost of a cache hit, for each ``current_tenant.slug`` in a view. A name that starts
    with ``_`` and everything else but ``bool`` (``==``, ``repr``, setting an attribute) stay
    ``LocalProxy``'s.
    """

    __slots__ = ()

    def __getattribute__(self, name: str) -> Any:
        if name[0] == "_":
            return object.__getattribute__(self, name)
        # current_tenant_or_none() written out, without its two calls: this runs for every
        # attribute a view reads (see ._context).
        try:
            tenant = app_context.get().g.__dict__.get(TENANT_KEY)
        except LookupError:
            tenant = current_tenant_or_none()  # no app context: raises Flask's own error
        return getattr(tenant, name)

    def __bool__(self) -> bool:  # ``if current_tenant:``, as the docs say to test it
        return current_tenant_or_none() is not None


#: The tenant of the current request, or None (an exempt view, or no tenant named while
#: ``TENANT_CACHE_REQUIRED`` is false). Test it with ``if current_tenant:``, never with
#: ``is None`` (a proxy is never None), or call :func:`require_tenant`.
current_tenant: Tenant | None = _TenantProxy(current_tenant_or_none)  # type: ignore[assignment]


def require_tenant() -> Tenant:
    """The current request's tenant, resolving it now in an exempt view.

    :raises InvalidTenantIdentifier: (400) if the identifier is malformed.
    :raises MissingTenantIdentifier: (400) if the request names no tenant.
    :raises TenantNotFound: (404) if no active tenant answers to it.
    :raises TenantLookupError: (503) if the loader failed.
    """
    tenant = current_tenant_or_none()
    if tenant is not None:
        return tenant
    state = _state()
    state.hook(exempt_too=True)
    tenant = current_tenant_or_none()
    if tenant is None:
        raise MissingTenantIdentifier(state.missing_message)
    return tenant


def current_resolver_version() -> str | None:
    """``"v1"`` or ``"v2"``: the resolver that served the current request (None if none did)."""
    decision = current_decision()
    return None if decision is None else decision.version


def current_rollout_decision() -> Decision | None:
    """Which version served the current request and why (None if none did)."""
    return current_decision()


class TenantCache:
    """Resolves the tenant of every request, from a cache that invalidation keeps right.

    :param app: the app, or None to call :meth:`init_app` later (app factories).
    :param loader: reads a tenant on a cache miss, e.g. :class:`~.SQLAlchemyTenantLoader`.
    :param flag_provider: picks ``"v1"`` or ``"v2"`` per request; by default
        ``TENANT_CACHE_USE_V2``, read live.
    :param redis: the Redis of the second layer and the bus: a redis-py client
        (``redis.Redis``, ``redis.cluster.RedisCluster``, ``Sentinel(...).master_for(name)``)
        or a zero-argument callable that returns one, called in each process (again after a
        fork). Instead of ``TENANT_CACHE_REDIS_URL``.
    :param timer: the monotonic clock of the caches (TTL, idle timeout) and the figures; tests
        pass a :class:`~flask_tenant_cache.testing.FakeClock` to move time by hand.
    :param clock: the wall clock of the rollout plan, shared by processes (tests move it).
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        loader: TenantLoader | None = None,
        flag_provider: FlagProvider | None = None,
        redis: Any = None,
        timer: Callable[[], float] = time.perf_counter,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.loader = loader
        self.flag_provider = flag_provider
        self.redis = redis
        self.timer = timer
        self.clock = clock
        self._exempt_blueprints: list[Blueprint] = []
        self._admin_authorizer: AdminAuthorizer | None = None
        self._strategies: dict[str, IdentifierStrategy] = {}
        self._ignore_rules: list[IgnoreRule] = []
        if app is not None:
            self.init_app(app)

    def init_app(
        self,
        app: Flask,
        *,
        loader: TenantLoader | None = None,
        flag_provider: FlagProvider | None = None,
        timer: Callable[[], float] | None = None,
        redis: Any = None,
    ) -> None:
        """Validate the config, build the resolvers and register the hook, blueprint and CLI.

        ``loader``, ``flag_provider``, ``timer`` and ``redis`` override, for this app, what
        the constructor was given.

        :raises RuntimeError: if ``app`` already has this extension.
        :raises ValueError: naming the first invalid ``TENANT_CACHE_*`` key, or a Redis
            deployment the extension cannot work with (a plain client on a cluster, a
            replica, an ACL user without a command, the keys or the channel), if it answers.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError("TenantCache is already registered on this app")
        loader = loader or self.loader
        if loader is None or not isinstance(loader, TenantLoader):
            raise TypeError("TenantCache needs a loader: an object with load(identifier)")
        settings = load_settings(app.config, self._strategies)
        for name in self._strategies.keys() - set(settings.strategies):
            logger.warning(
                "identifier strategy %r is registered but not in TENANT_CACHE_STRATEGIES: unused",
                name,
            )
        state = AppState(
            ext=self,
            app=app,
            settings=settings,
            validator=TenantIdentifierValidator(settings.base_domains),
            loader=loader,
            # Read on each decision: a handler registered after init_app still counts.
            rollout=Rollout(flag_provider, source=self),
            redis_source=redis if redis is not None else self.redis,
            timer=timer or self.timer,
            clock=self.clock,
        )
        if state.shadow is not None:
            state.shadow.ignore_rules = self._ignore_rules  # the same list: later rules apply
        app.extensions[EXTENSION_KEY] = state
        state.hook = make_hook(state)
        app.before_request(state.hook)
        app.context_processor(_template_context)
        if "path" in settings.strategies:
            from .path_prefix import install

            install(app, settings.path_prefix)  # first: it goes inside a ProxyFix
        # Its bound method, not the object: Flask calls ``app.wsgi_app`` on every request, and
        # calling an object looks its ``__call__`` up each time (about 700 instructions).
        app.wsgi_app = RequestRecorder(app.wsgi_app, state).__call__  # type: ignore[method-assign]

        from .cli import tenant_cache_cli
        from .views import blueprint

        app.register_blueprint(blueprint, url_prefix=settings.url_prefix)
        app.cli.add_command(tenant_cache_cli)

    # -- user hooks ---------------------------------------------------------------------------

    def exempt(self, view: V) -> V:
        """Mark a view function, or a whole blueprint, as needing no tenant.

        A blueprint is exempt wherever it is registered, with the blueprints nested in it;
        another blueprint with the same name is not.
        """
        if isinstance(view, Blueprint):
            self._exempt_blueprints.append(view)
        else:
            setattr(view, _EXEMPT_ATTR, True)
        return view

    @overload
    def identifier_strategy(self, func: S, *, name: str | None = None) -> S: ...

    @overload
    def identifier_strategy(
        self, func: None = None, *, name: str | None = None
    ) -> Callable[[S], S]: ...

    def identifier_strategy(
        self, func: S | None = None, *, name: str | None = None
    ) -> S | Callable[[S], S]:
        """Register a strategy (a decorator) that ``TENANT_CACHE_STRATEGIES`` may then name.

        Given the request, it returns a raw identifier (a UUID, a slug or a host, read as the
        header is), a :class:`~.TenantIdentifier`, or None when it names no tenant; it raises
        :exc:`~.InvalidIdentifier` for a malformed value (a 400). Register it before
        ``init_app``.

        :param name: the name in ``TENANT_CACHE_STRATEGIES``; by default the function's.
        :raises ValueError: if the name is a built-in one or already registered.
        """

        def register(strategy: S) -> S:
            key = name or getattr(strategy, "__name__", "")
            if not key or key in BUILTIN_STRATEGIES or key in self._strategies:
                raise ValueError(f"an identifier strategy needs a name of its own, not {key!r}")
            self._strategies[key] = strategy
            return strategy

        return register if func is None else register(func)

    def flag_provider_handler(self, func: FlagProvider) -> FlagProvider:
        """Register the flag provider (a decorator): given a :class:`~.flags.FlagContext`, it
        answers ``"v1"`` or ``"v2"`` for the request. It is read on each decision, so it may
        be registered before or after ``init_app``; a ``flag_provider`` given to ``init_app``
        takes precedence over it.
        """
        self.flag_provider = func
        return func

    def shadow_ignore(self, rule: IgnoreRule) -> IgnoreRule:
        """Register an ignore rule (a decorator), like Scientist's ``ignore``.

        ``rule(identifier, v1, v2)`` gets both versions' outcomes of a shadow comparison that
        differed (a :class:`~.Tenant`, None for not found, or a lookup error's class name) and
        returns true for a known, accepted difference: it is counted as ``ignored``, not as a
        mismatch, and neither recorded nor seen by the guard.
        """
        self._ignore_rules.append(rule)
        return rule

    def admin_authorizer(self, func: AdminAuthorizer) -> AdminAuthorizer:
        """Register a callback that says whether the current request may use the admin routes."""
        self._admin_authorizer = func
        return func

    # -- operations (the admin routes and the CLI call these) ---------------------------------

    def invalidate(self, identifier: str | uuid.UUID | int | TenantIdentifier) -> int:
        """Drop every cached alias of the tenant ``identifier`` names, in every resolver.

        :param identifier: a UUID or an integer id, or a string read as the header is (a UUID,
            a slug or a host); a string primary key goes in ``TenantIdentifier.id(key)``.
        :returns: how many cache entries were dropped.
        :raises InvalidIdentifier: if ``identifier`` is malformed.
        """
        state = _state()
        ident = self.parse_identifier(identifier)
        return state.invalidate(ident)

    def invalidate_all(self) -> int:
        """Drop every entry of every resolver; return how many there were."""
        return _state().invalidate(None)

    def warm(self) -> WarmReport:
        """Load every tenant into every resolver of this process and, with Redis, into the L2
        that every process reads on a miss.

        A Redis failure does not fail the warm: the report says so (``shared_error``).

        :raises TypeError: if the loader cannot list tenants (no ``iter_tenants``).
        """
        state = _state()
        loader = state.loader
        if not isinstance(loader, WarmableTenantLoader):
            raise TypeError("this loader cannot list tenants (it has no iter_tenants())")
        l2, epoch, error = state.redis.l2 if state.redis else None, None, None
        errors: tuple[type[Exception], ...] = ()
        if l2 is None:
            error = "TENANT_CACHE_REDIS_URL is not set"
        else:
            from .redis_layer.client import ERRORS as errors

            try:
                # Read before the tenants: a tenant invalidated meanwhile is not stored.
                epoch = l2.epoch()
            except errors as exc:
                error = f"Redis is unreachable: {exc}"
        rejected = getattr(loader, "rejected_rows", 0)
        tenants = list(loader.iter_tenants())
        rejected = getattr(loader, "rejected_rows", 0) - rejected
        stored = {v: r.warm(tenants) for v, r in state.resolvers.items()}
        shared = overtaken = 0
        if l2 is not None and epoch is not None:
            try:
                for tenant in tenants:
                    if l2.store(tenant, epoch):
                        shared += 1
                    else:
                        overtaken += 1
            except errors as exc:
                error = f"Redis failed after {shared} tenants: {exc}"
        stats = state.stats()
        return WarmReport(
            read=len(tenants),
            rejected=rejected,
            stored=stored,
            resident={v: _found_entries(stats[v]) for v in state.resolvers},
            shared=shared if error is None else None,
            overtaken=overtaken,
            shared_error=error,
        )

    def stats(self) -> dict[str, Any]:
        """Each resolver's counters under its version, and the Redis layer's under ``"redis"``."""
        return _state().stats()

    def histograms(self) -> dict[str, Any]:
        """Since-start resolution and request time histograms per version (for Prometheus)."""
        return _state().figures.histograms()

    def parse_identifier(
        self, identifier: str | uuid.UUID | int | TenantIdentifier
    ) -> TenantIdentifier:
        """Validate and normalise an identifier as the current app's config reads it.

        A UUID or an int is a tenant id; a string is read as the header reads it.
        """
        if isinstance(identifier, TenantIdentifier):
            return identifier
        if isinstance(identifier, uuid.UUID | int) and not isinstance(identifier, bool):
            return TenantIdentifier.id(identifier)
        if not isinstance(identifier, str):
            raise InvalidIdentifier(f"not a tenant identifier: {identifier!r}")
        return _state().validator.parse(identifier)

    def set_rollout(self, value: str | float | None) -> dict[str, Any]:
        """Override the rollout on every process (with Redis) or this one: the kill switch.

        :param value: ``"v1"``, ``"v2"``, a percentage of tenants on v2 (0-100), or None to
            lift the override and go back to the configured rollout.
        :returns: ``{"override": ..., "scope": "cluster" | "process"}``.
        :raises ValueError: for any other value.
        """
        return _state().set_rollout(value)

    def rollout_status(self) -> dict[str, Any]:
        """The effective rollout (``stats()["rollout"]``), with the override read from Redis."""
        state = _state()
        if state.redis is not None:
            state.redis.sync_rollout()
        rollout: dict[str, Any] = state.stats()["rollout"]
        return rollout

    def rollout_control(self) -> dict[str, Any]:
        """The plan, the guard and this process's window, read now from where they are kept.

        :returns: ``stats()["control"]``: ``scope`` (``"cluster"`` with Redis, else
            ``"process"``), ``plan`` (None without one), ``guard`` (None when off), counters.
        """
        return _state().control.status()

    def rollout_pause(self) -> dict[str, Any]:
        """Stop the rollout plan at its step, on every process (this one without Redis).

        :returns: the plan's state, with ``scope``.

        :raises ValueError: if no plan is configured.
        :raises StoreUnavailable: if Redis did not answer (nothing changed).
        """
        return _state().control.steer("pause")

    def rollout_resume(self) -> dict[str, Any]:
        """Clear a pause or the guard's trip (lifting its override): the step bakes again.

        :raises ValueError: if neither a plan nor the guard is configured.
        :raises StoreUnavailable: if Redis did not answer (nothing changed).
        """
        return _state().control.steer("resume")

    def rollout_restart(self) -> dict[str, Any]:
        """Start the configured plan again from its first step, replacing the stored one.

        :raises ValueError: if no plan is configured.
        :raises StoreUnavailable: if Redis did not answer (nothing changed).
        """
        return _state().control.steer("restart")

    def rollout_mismatches(self) -> dict[str, Any]:
        """The last shadow mismatches, newest first, and where they were kept.

        :returns: ``{"scope": "cluster" | "process", "mismatches": [...]}``; each record has
            ``key``, ``at``, ``primary`` (the version that served) and ``fields`` (each
            differing field's value per version; a name and ``extra`` as ``"(hidden)"``).
        """
        shadow = _state().shadow
        assert shadow is not None
        return {"scope": shadow.records.scope, "mismatches": shadow.records.recent()}

    def prometheus_collector(self) -> Any:
        """A prometheus_client collector of the current app's counters, read at scrape time.

        Register it with ``prometheus_client.REGISTRY.register(...)``; or scrape
        ``GET {TENANT_CACHE_URL_PREFIX}/metrics`` (admin auth). Needs the ``prometheus`` extra.
        """
        from .prometheus import TenantCacheCollector

        state = _state()
        return TenantCacheCollector(state.stats, state.figures.histograms)

    def close(self) -> None:
        """Stop the current app's Redis subscriber thread and close its connections."""
        _state().close()

    def resolver(self, version: str) -> Resolver:
        """The current app's resolver for ``version`` (``"v1"`` or ``"v2"``)."""
        return _state().resolvers[version]

    def authorize_admin(self) -> None:
        """Let the current request use the admin routes, or raise 401/403.

        A bearer token (``TENANT_CACHE_ADMIN_TOKEN``, compared in constant time) or the
        :meth:`admin_authorizer` callback grants access; with neither configured the routes
        stay closed.
        """
        token = _state().settings.admin_token
        if token is not None:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(
                given.strip().encode(), token.encode()
            ):
                return
        if self._admin_authorizer is not None:
            if self._admin_authorizer():
                return
            raise AdminForbidden("not allowed to use the tenant cache admin routes")
        if token is None:
            raise AdminForbidden(
                "the admin routes are closed: set TENANT_CACHE_ADMIN_TOKEN or an admin_authorizer"
            )
        raise AdminAuthRequired("send 'Authorization: Bearer <TENANT_CACHE_ADMIN_TOKEN>'")

    def _is_exempt(self, state: AppState, endpoint: str) -> bool:
        """Whether ``endpoint`` needs no tenant: a static file (the app's or a blueprint's),
        the admin blueprint, or an exempt view or blueprint (matched by object, through its
        full dotted name, so a namesake elsewhere is not exempt).
        """
        from .views import blueprint as admin_blueprint

        app = state.app
        view = app.view_functions.get(endpoint)
        if endpoint == "static" or _is_blueprint_static(view):
            return True
        exempt = [admin_blueprint, *self._exempt_blueprints]
        name = ""
        for part in endpoint.split(".")[:-1]:
            name = f"{name}.{part}" if name else part
            registered = app.blueprints.get(name)
            if any(registered is bp for bp in exempt):
                return True
        return bool(getattr(view, _EXEMPT_ATTR, False))


def _is_blueprint_static(view: Any) -> bool:
    # A blueprint's static route is its bound send_static_file, whatever the endpoint's name.
    owner = getattr(view, "__self__", None)
    return isinstance(owner, Blueprint) and getattr(view, "__name__", "") == "send_static_file"


def _found_entries(stats: dict[str, Any]) -> int:
    """The found tenants a resolver's stats count (v1 and v2 name them apart)."""
    if "positive_entries" in stats:
        return int(stats["positive_entries"])
    return int(stats["entry_count"] - stats["negative_entries"])


def _template_context() -> dict[str, Any]:
    return {"current_tenant": current_tenant}


def _state() -> AppState:
    try:
        state: AppState = current_app.extensions[EXTENSION_KEY]
    except KeyError:
        raise RuntimeError("TenantCache is not registered on the current app") from None
    return state
