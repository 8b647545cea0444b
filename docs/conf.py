"""Sphinx configuration for the flask-tenant-cache docs."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

from flask_tenant_cache import __version__

project = "flask-tenant-cache"
author = "the flask-tenant-cache developers"
copyright = "2026, the flask-tenant-cache developers"
release = __version__
version = ".".join(__version__.split(".")[:2])

# No intersphinx: the docs build offline.
extensions = ["sphinx.ext.autodoc", "sphinx.ext.viewcode"]

exclude_patterns = ["_build"]
root_doc = "index"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autoclass_content = "class"

html_theme = "alabaster"
html_theme_options = {
    "description": "Cached tenant resolution for Flask.",
    "fixed_sidebar": True,
}
html_static_path: list[str] = []
