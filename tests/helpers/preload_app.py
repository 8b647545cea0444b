"""A WSGI app for ``gunicorn --preload``: configured from the environment, warmed in the master."""

from __future__ import annotations

from flask import Flask

from benchmarks._cluster_app import create_app


def warmed_app() -> Flask:
    """The cluster benchmark's app, every tenant loaded into L1 before the workers fork."""
    app = create_app()
    with app.app_context():
        app.extensions["bench"]["ext"].warm()
    return app
