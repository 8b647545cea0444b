"""``flask tenant-cache ...``: thin commands over the extension's methods."""

from __future__ import annotations

import json
from typing import Any

import click
from flask import current_app
from flask.cli import AppGroup

from .identifiers import InvalidIdentifier

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


@tenant_cache_cli.command("rollout")
@click.argument("value", required=False)
def rollout_command(value: str | None) -> None:
    """Show the rollout, or override it: VALUE is v1, v2, a percentage on v2, or clear."""
    if value is None:
        click.echo(json.dumps(_ext().rollout_status(), indent=2, sort_keys=True))
        return
    try:
        result = _ext().set_rollout(None if value == "clear" else value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="VALUE") from None
    if result["scope"] == "process" and current_app.config["TENANT_CACHE_REDIS_URL"]:
        # This process ends with the command: an override that reached no other is lost.
        raise click.ClickException("Redis is unreachable: the override was not applied")
    override = "lifted" if result["override"] is None else f"set to {result['override']}"
    click.echo(f"rollout override {override} ({result['scope']})")


@tenant_cache_cli.command("warm")
def warm_command() -> None:
    """Load every tenant into the caches."""
    try:
        stored = _ext().warm()
    except TypeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"warmed {stored} entries")
