"""``flask tenant-cache ...``: thin commands over the extension's methods, honest about reach.

A command runs in a process of its own, whose caches end with it: what must reach the running
servers goes through Redis, and a command that cannot reach them says so and exits non-zero.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

import click
from flask import current_app
from flask.cli import AppGroup

from .flags import parse_override
from .identifiers import InvalidIdentifier

if TYPE_CHECKING:
    from .redis_layer import RedisLayer
    from .state import AppState

__all__ = ["tenant_cache_cli"]

tenant_cache_cli = AppGroup("tenant-cache", help="Inspect and manage the tenant cache.")


def _state() -> AppState:
    state: AppState = current_app.extensions["tenant_cache"]
    return state


def _redis(what: str) -> RedisLayer:
    """The Redis layer, or a clear failure: without it no command reaches the servers."""
    state = _state()
    if state.redis is None:
        prefix = state.settings.url_prefix
        raise click.ClickException(
            f"{what} cannot reach the running servers: TENANT_CACHE_REDIS_URL is not set, and "
            f"this command runs in a process of its own. Use {prefix}/... on each server "
            "(see docs/admin.rst)."
        )
    return state.redis


def _delivered(redis: RedisLayer, what: str) -> None:
    """Fail unless every queued invalidation reached Redis before the command ends."""
    if redis.pending:
        _state().close()  # one more attempt: the queue dies with this process
    if redis.pending:
        raise click.ClickException(
            f"Redis is unreachable: {what} did not reach the running servers"
        )


@tenant_cache_cli.command("stats")
@click.option(
    "--server",
    metavar="URL",
    help="A running server's base URL: its counters are fetched over HTTP with "
    "TENANT_CACHE_ADMIN_TOKEN.",
)
def stats_command(server: str | None) -> None:
    """Print counters as JSON: a server's with --server, else this command's own process's."""
    state = _state()
    if server is None:
        click.echo(
            "these are the counters of this command's own process, which served no request; "
            "use --server URL for a running server's",
            err=True,
        )
        click.echo(json.dumps(state.stats(), indent=2, sort_keys=True))
        return
    token = state.settings.admin_token
    if token is None:
        raise click.ClickException("--server needs TENANT_CACHE_ADMIN_TOKEN in the config")
    url = server.rstrip("/") + state.settings.url_prefix + "/stats"
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter("an http:// or https:// URL", param_hint="--server")
    fetch = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})  # noqa: S310 - scheme checked
    try:
        with urllib.request.urlopen(fetch, timeout=10) as response:  # noqa: S310 - scheme checked
            data: Any = json.load(response)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise click.ClickException(f"could not read {url}: {exc}") from None
    click.echo(json.dumps(data, indent=2, sort_keys=True))


@tenant_cache_cli.command("invalidate")
@click.argument("identifier", required=False)
@click.option("--all", "everything", is_flag=True, help="Drop every entry.")
def invalidate_command(identifier: str | None, everything: bool) -> None:
    """Drop every cached alias of the tenant IDENTIFIER names (a UUID, slug or host), in
    Redis and on every process."""
    if everything == (identifier is not None):
        raise click.UsageError("give an IDENTIFIER or --all")
    ext = _state().ext
    if identifier is not None:
        try:
            ident = ext.parse_identifier(identifier)
        except InvalidIdentifier as exc:
            raise click.BadParameter(str(exc), param_hint="IDENTIFIER") from None
    redis = _redis("invalidate")
    if identifier is None:
        ext.invalidate_all()
        what = "the invalidation of every tenant"
    else:
        ext.invalidate(ident)
        what = f"the invalidation of {ident.cache_key}"
    _delivered(redis, what)
    click.echo(f"{what}: deleted from Redis and announced to every process")


@tenant_cache_cli.command("rollout")
@click.argument("value", required=False)
def rollout_command(value: str | None) -> None:
    """Show the rollout override stored in Redis, or set it on every process: VALUE is v1,
    v2, a percentage on v2, or clear."""
    state = _state()
    if value is not None:
        try:
            parse_override(None if value == "clear" else value)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="VALUE") from None
    redis = _redis("rollout")
    if value is None:
        from .redis_layer.client import ERRORS

        try:
            redis.rollout.read()
        except ERRORS as exc:
            raise click.ClickException(f"Redis is unreachable: {exc}") from None
        shown = dict(state.ext.rollout_status())
        shown.pop("served", None)  # this process's requests: none
        click.echo(json.dumps(shown, indent=2, sort_keys=True))
        return
    result = state.ext.set_rollout(None if value == "clear" else value)
    if result["scope"] != "cluster":
        raise click.ClickException(
            "Redis is unreachable: the override did not reach the running servers"
        )
    override = "lifted" if result["override"] is None else f"set to {result['override']}"
    click.echo(f"rollout override {override} (cluster): every process follows it")


@tenant_cache_cli.command("warm")
def warm_command() -> None:
    """Store every tenant in Redis, where every process reads it on its next miss."""
    try:
        report = _state().ext.warm()
    except TypeError as exc:
        raise click.ClickException(str(exc)) from None
    rejected = f" ({report.rejected} rows refused: see the warnings)" if report.rejected else ""
    click.echo(f"read {report.read} tenants from the loader{rejected}")
    resident = ", ".join(
        f"{v}: {report.resident[v]} of {report.read} tenants" for v in sorted(report.resident)
    )
    click.echo(f"this process's caches keep {resident}; they end with this command")
    if report.shared is None:
        raise click.ClickException(f"nothing reached the running servers: {report.shared_error}")
    click.echo(f"stored {report.shared} tenants in Redis: every process reads them on a miss")
    if report.overtaken:
        click.echo(f"{report.overtaken} tenants left out: invalidated while the warm ran")
