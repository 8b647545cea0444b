from tests.helpers.app import ACME_ID


def test_header_slug(client, loader):
    r = client.get("/whoami", headers={"X-Tenant-ID": "ACME"})
    assert r.status_code == 200, r.data
    assert r.json == {"slug": "acme", "id": str(ACME_ID), "name": "Acme Corp", "version": "v2"}
    r = client.get("/whoami", headers={"X-Tenant-ID": "acme"})
    assert r.status_code == 200
    assert len(loader.calls) == 1
    assert client.get("/whoami", headers={"Host": "acme.example.com:8080"}).json["slug"] == "acme"
    assert client.get("/whoami", headers={"Host": "acme.test"}).json["slug"] == "acme"
    assert client.get("/whoami", headers={"X-Tenant-ID": "nope"}).status_code == 404
    assert client.get("/whoami", headers={"X-Tenant-ID": "a b"}).status_code == 400
    assert client.get("/whoami").status_code == 400
    assert client.get("/health").json == {"ok": True, "tenant": None}
