"""``flask tenant-cache ...``: thin commands over the extension's methods."""

from __future__ import annotations

import datetime
import json
from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup, with_appcontext

from .identifiers import InvalidIdentifier
from .plan import StoreUnavailable, steps_text

__all__ = ["tenant_cache_cli"]

tenant_cache_cli = AppGroup("tenant-cache", help="Inspect and manage the tenant cache.")


def _ext() -> Any:
    return current_app.extensions["tenant_cache"].ext


@tenant_cache_cli.command("stats")
def stats_command() -> None:
    """Print every resolver's counters as JSON."""
    click.echo(json.dumps(_ext().stats(), indent=2, sort_keys=True))


@tenant_cache_cli.command("invalidate")
@click.argument("identifier", required=False)
@click.option("--all", "everything", is_flag=True, help="Drop every entry.")
def invalidate_command(identifier: str | None, everything: bool) -> None:
    """Drop every cached alias of the tenant IDENTIFIER names (a UUID, slug or host)."""
    if everything == (identifier is not None):
        raise click.UsageError("give an IDENTIFIER or --all")
    if identifier is None:
        click.echo(f"invalidated {_ext().invalidate_all()} entries")
        return
    try:
        dropped = _ext().invalidate(identifier)
    except InvalidIdentifier as exc:
        raise click.BadParameter(str(exc), param_hint="IDENTIFIER") from None
    click.echo(f"invalidated {dropped} entries")


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
    """Show the rollout; ``rollout VALUE`` overrides it (v1, v2, a percentage, or clear).

    With TENANT_CACHE_ROLLOUT_PLAN: plan, status, pause, resume, restart and mismatches.
    """
    if ctx.invoked_subcommand is None:
        click.echo(json.dumps(_ext().rollout_status(), indent=2, sort_keys=True))


@rollout_group.command("set", hidden=True)
@click.argument("value")
def rollout_command(value: str) -> None:
    """Override the rollout: VALUE is v1, v2, a percentage on v2, or clear."""
    try:
        result = _ext().set_rollout(None if value == "clear" else value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="VALUE") from None
    if result["scope"] == "process" and current_app.config["TENANT_CACHE_REDIS_URL"]:
        # This process ends with the command: an override that reached no other is lost.
        raise click.ClickException("Redis is unreachable: the override was not applied")
    override = "lifted" if result["override"] is None else f"set to {result['override']}"
    click.echo(f"rollout override {override} ({result['scope']})")


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
    """Load every tenant into the caches."""
    try:
        stored = _ext().warm()
    except TypeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"warmed {stored} entries")
