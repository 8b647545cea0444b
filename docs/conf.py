"""Sphinx configuration for the flask-tenant-cache docs (the Pallets "flask" theme)."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

from pallets_sphinx_themes import ProjectLink

from flask_tenant_cache import __version__

# Project --------------------------------------------------------------

project = "flask-tenant-cache"
author = "flask-tenant-cache contributors"
copyright = "2026 flask-tenant-cache contributors"
release = __version__
version = ".".join(__version__.split(".")[:2])

HOME = "https://github.com/flask-tenant-cache/flask-tenant-cache"

# General --------------------------------------------------------------

root_doc = "index"
exclude_patterns = ["_build", "_inventories"]
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.viewcode",
    "pallets_sphinx_themes",
]
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autoclass_content = "class"
# The sidebar lists sections only: names like TENANT_CACHE_NEGATIVE_MAX_ENTRIES do not fit its
# width whole, and every key and object is a linked target in its page anyway.
toc_object_entries = False

# The docs build offline: each inventory is committed in _inventories/, built from that
# project's own documentation source by _inventories/build.py (see its docstring), and the
# links point at the published docs of the same version.
INVENTORIES = os.path.join(os.path.dirname(__file__), "_inventories")
intersphinx_mapping = {
    name: (url, os.path.join(INVENTORIES, f"{name}.inv"))
    for name, url in {
        "flask": "https://flask.palletsprojects.com/en/stable/",
        "werkzeug": "https://werkzeug.palletsprojects.com/en/stable/",
        "flask_sqlalchemy": "https://flask-sqlalchemy.readthedocs.io/en/stable/",
        "sqlalchemy": "https://docs.sqlalchemy.org/en/21/",
        "redis": "https://redis.readthedocs.io/en/stable/",
    }.items()
}

# HTML -----------------------------------------------------------------

html_theme = "flask"
html_theme_options = {"index_sidebar_logo": False}
html_context = {
    "project_links": [
        ProjectLink("PyPI Releases", "https://pypi.org/project/flask-tenant-cache/"),
        ProjectLink("Source Code", HOME),
        ProjectLink("Issue Tracker", f"{HOME}/issues/"),
        ProjectLink("Changes", "changes.html"),
    ]
}
html_sidebars = {
    "index": ["project.html", "localtoc.html", "searchbox.html"],
    "**": ["localtoc.html", "relations.html", "searchbox.html"],
}
singlehtml_sidebars = {"index": ["project.html", "localtoc.html"]}
html_static_path = ["_static"]
html_css_files = ["tenant-cache.css"]
html_title = f"flask-tenant-cache Documentation ({version})"
html_show_sourcelink = False
