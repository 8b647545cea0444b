"""``flask tenant-cache ...``: thin commands over the extension's methods, honest about reach.

A command runs in a process of its own, whose caches end with it: what must reach the running
servers goes through Redis, and a command that cannot reach them says so and exits non-zero.
"""

from __future__ import annotations

import datetime
import json
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from .flags import parse_override
from .identifiers import InvalidIdentifier
from .plan import StoreUnavailable, steps_text

if TYPE_CHECKING:
    from .redis_layer import RedisLayer
    from .state import AppState

__all__ = ["tenant_cache_cli"]

tenant_cache_cli = AppGroup("tenant-cache", help="Inspect and manage the tenant cache.")


def _state() -> AppState:
    state: AppState = current_app.extensions["tenant_cache"]
    return state


def _ext() -> Any:
    return _state().ext


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
    ext = _ext()
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


class _RolloutGroup(AppGroup):
    """``rollout VALUE`` overrides; ``rollout plan``, ``status``... are its subcommands."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in self.commands:
            return "set", self.commands["set"], args
        return super().resolve_command(ctx, args)


@tenant_cache_cli.group("rollout", cls=_RolloutGroup, invoke_without_command=True)
@click.pass_context
@with_appcontext
def rollout_group(ctx: click.Context) -> None:
    """Show the rollout override stored in Redis; ``rollout VALUE`` sets it on every process
    (v1, v2, a percentage, or clear).

    With TENANT_CACHE_ROLLOUT_PLAN: plan, status, pause, resume, restart and mismatches.
    """
    if ctx.invoked_subcommand is not None:
        return
    redis = _redis("rollout")
    from .redis_layer.client import ERRORS

    try:
        redis.rollout.read()
    except ERRORS as exc:
        raise click.ClickException(f"Redis is unreachable: {exc}") from None
    shown = dict(_ext().rollout_status())
    shown.pop("served", None)  # this process's requests: none
    click.echo(json.dumps(shown, indent=2, sort_keys=True))


@rollout_group.command("set", hidden=True)
@click.argument("value")
def rollout_command(value: str) -> None:
    """Override the rollout on every process: VALUE is v1, v2, a percentage on v2, or clear."""
    try:
        parse_override(None if value == "clear" else value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="VALUE") from None
    _redis("rollout")
    result = _ext().set_rollout(None if value == "clear" else value)
    if result["scope"] != "cluster":
        # This process ends with the command: an override that reached no other is lost.
        raise click.ClickException(
            "Redis is unreachable: the override did not reach the running servers"
        )
    override = "lifted" if result["override"] is None else f"set to {result['override']}"
    click.echo(f"rollout override {override} (cluster): every process follows it")


def _shared_or_fail() -> None:
    if not current_app.config["TENANT_CACHE_REDIS_URL"]:
        # Without Redis the state lives in each serving process, not in this command's.
        raise click.ClickException(
            "without Redis the plan runs per process: use POST {prefix}/rollout/... on each"
        )


def _steer(action: str) -> None:
    _shared_or_fail()
    try:
        state = getattr(_ext(), f"rollout_{action}")()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    except StoreUnavailable as exc:
        raise click.ClickException(f"Redis did not answer, nothing changed: {exc}") from None
    step = state["step"] + 1 if state["steps"] else None
    click.echo(f"rollout plan {action}d" + (f" at step {step}" if step else ""))


@rollout_group.command("plan")
def rollout_plan_command() -> None:
    """Print the plan's steps, where it stands and what the next step waits for."""
    control = _ext().rollout_control()
    plan = control["plan"]
    if plan is None:
        raise click.ClickException("no rollout plan is configured (TENANT_CACHE_ROLLOUT_PLAN)")
    from .plan import Step

    steps = [Step(**s) for s in plan["steps"]]
    click.echo(f"plan ({control['scope']}): {steps_text(steps)}")
    state = "tripped" if plan["tripped"] else "paused" if plan["paused"] else "running"
    click.echo(f"step {plan['step'] + 1} of {len(steps)}: {plan['percent']:g}% on v2, {state}")
    click.echo(f"since: {_when(plan['started_at'])}")
    click.echo(f"waiting for: {plan['waiting_for']}")


@rollout_group.command("status")
def rollout_status_command() -> None:
    """Print the plan, the guard (its trip) and the rollout as JSON."""
    data = {"rollout": _ext().rollout_status(), **_ext().rollout_control()}
    click.echo(json.dumps(data, indent=2, sort_keys=True))


@rollout_group.command("pause")
def rollout_pause_command() -> None:
    """Stop the plan at its step, on every process."""
    _steer("pause")


@rollout_group.command("resume")
def rollout_resume_command() -> None:
    """Clear a pause or the guard's trip (and its override): the step bakes again."""
    _steer("resume")


@rollout_group.command("restart")
def rollout_restart_command() -> None:
    """Replace the stored plan with the configured one, from its first step."""
    _steer("restart")


@rollout_group.command("mismatches")
def rollout_mismatches_command() -> None:
    """Print the last shadow mismatches as JSON, newest first."""
    click.echo(json.dumps(_ext().rollout_mismatches(), indent=2, sort_keys=True))


def _when(at: float) -> str:
    return datetime.datetime.fromtimestamp(at, datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC"
    )


@tenant_cache_cli.command("warm")
def warm_command() -> None:
    """Store every tenant in Redis, where every process reads it on its next miss."""
    try:
        report = _ext().warm()
    except TypeError as exc:
        raise click.ClickException(str(exc)) from None
    rejected = f" ({report.rejected} rows refused: see the warnings)" if report.rejected else ""
    click.echo(f"read {report.read} tenants from the loader{rejected}")
    resident = ", ".join(
        f"{v}: {report.resident[v]} of {report.read} tenants" for v in sorted(report.resident)
    )
    click.echo(f"this process keeps {resident}")  # until the command ends
    if report.shared is None:
        raise click.ClickException(f"nothing reached the running servers: {report.shared_error}")
    click.echo(f"stored {report.shared} tenants in Redis: every process reads them on a miss")
    if report.overtaken:
        click.echo(f"{report.overtaken} tenants left out: invalidated while the warm ran")
