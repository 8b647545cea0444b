"""``python -m example_app``: serve the example on 127.0.0.1 and print requests to try."""

from __future__ import annotations

import os

from . import BASE_DOMAIN, create_app
from .models import ACME_ID, INITECH_ID


def curl_lines(base_url: str, token: str) -> list[str]:
    """The requests worth trying against a running example, as curl command lines."""
    return [
        "# by header, UUID",
        f'curl -i {base_url}/ -H "X-Tenant-ID: {ACME_ID}"',
        "# by header, slug (case-insensitive)",
        f'curl -i {base_url}/ -H "X-Tenant-ID: ACME"',
        f"# by subdomain of {BASE_DOMAIN} (in a browser: http://globex.{BASE_DOMAIN}:PORT/)",
        f'curl -i {base_url}/ -H "Host: globex.{BASE_DOMAIN}"',
        "# by custom domain",
        f'curl -i {base_url}/ -H "Host: portal.initech.test"',
        "# unknown tenant -> 404",
        f'curl -i {base_url}/ -H "X-Tenant-ID: nobody"',
        "# invalid identifier -> 400",
        f'curl -i {base_url}/ -H "X-Tenant-ID: ../etc"',
        "# no tenant needed",
        f"curl -i {base_url}/health",
        "# cache stats (admin token)",
        f'curl -i {base_url}/_tenant-cache/stats -H "Authorization: Bearer {token}"',
        "# rename a tenant; the commit invalidates its cache entries (the old slug answers 404)",
        f'curl -i {base_url}/admin/tenants/{INITECH_ID} -H "Authorization: Bearer {token}"'
        " -d name=Initrode -d slug=initrode -d domain=portal.initech.test",
        f'curl -i {base_url}/ -H "X-Tenant-ID: initrode"',
        "# and back",
        f'curl -i {base_url}/admin/tenants/{INITECH_ID} -H "Authorization: Bearer {token}"'
        " -d name=Initech -d slug=initech -d domain=portal.initech.test",
        "# drop a tenant's cache entries by hand",
        f"curl -i -X POST {base_url}/admin/tenants/{ACME_ID}/invalidate"
        f' -H "Authorization: Bearer {token}"',
        "# force every request onto v1 (the kill switch), then lift the override",
        f'curl -i {base_url}/admin/rollout -H "Authorization: Bearer {token}" -d rollout=v1',
        f'curl -i {base_url}/admin/rollout -H "Authorization: Bearer {token}" -d rollout=clear',
        f"# admin page in a browser (sign in with the token): {base_url}/admin/login",
    ]


def main() -> None:
    """Create the app, print what to try, and serve until interrupted."""
    port = int(os.environ.get("PORT", "5000"))
    app = create_app()
    token: str = app.config["EXAMPLE_ADMIN_TOKEN"]
    base_url = f"http://127.0.0.1:{port}"
    if not os.environ.get("EXAMPLE_ADMIN_TOKEN"):
        print(f"Admin token (generated; set EXAMPLE_ADMIN_TOKEN to choose one): {token}")
    print(f"Database: {app.config['SQLALCHEMY_DATABASE_URI']}")
    print("Try:")
    for line in curl_lines(base_url, token):
        print("  " + line)
    print(flush=True)
    app.run(host="127.0.0.1", port=port)


if __name__ == "__main__":
    main()
