"""The contexts the hook and current_tenant read: Flask's variables, or its public proxies."""

from __future__ import annotations

import pytest
from flask import Flask, g, request
from flask.globals import app_ctx, request_ctx

from flask_tenant_cache._context import (
    ProxiedContext,
    app_context,
    context_getter,
    request_context,
)


def test_the_variables_read_what_flasks_proxies_read() -> None:
    app = Flask(__name__)
    with app.test_request_context("/"):
        assert app_context.get().g is g._get_current_object()  # type: ignore[attr-defined]
        assert request_context.get().request is request._get_current_object()  # type: ignore[attr-defined]
    with pytest.raises(LookupError):
        app_context.get()
    with pytest.raises(LookupError):
        request_context.get()


@pytest.mark.parametrize(
    ("variable", "proxy"), [("_cv_app", "app_ctx"), ("_cv_request", "request_ctx")]
)
def test_a_flask_without_the_variables_gets_the_same_contexts_from_its_proxies(
    variable: str, proxy: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flask.globals

    monkeypatch.delattr(flask.globals, variable)
    getter = context_getter(variable, proxy)
    assert isinstance(getter, ProxiedContext)
    app = Flask(__name__)
    with pytest.raises(LookupError):
        getter.get()
    with app.test_request_context("/"):
        expected = (app_ctx if proxy == "app_ctx" else request_ctx)._get_current_object()  # type: ignore[attr-defined]
        assert getter.get() is expected
