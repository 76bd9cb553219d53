"""Credentials stay bound to the principal they were issued to: ids are never reused."""

from __future__ import annotations

import httpx

from tests.access.conftest import Site


def test_deleted_users_jwt_does_not_become_the_next_principal(site: Site) -> None:
    admin = site.client("admin", basic=True)
    r = admin.post("/api/v1/users", json={"name": "mallory", "password": "mallory-Secret-1"})
    assert r.status_code == 201, r.text
    # mallory's registry JWT, also valid on the API (hallmark:api scope), lives for minutes.
    r = httpx.get(
        site.server.url + "/auth/token",
        params={"service": "hallmark", "scope": ["hallmark:api:*", "repository:team-a/app:pull"]},
        auth=("mallory", "mallory-Secret-1"),
    )
    assert r.status_code == 200, r.text
    jwt = r.json()["token"]
    as_mallory = httpx.Client(base_url=site.server.url, headers={"Authorization": f"Bearer {jwt}"}, timeout=30)
    assert as_mallory.get("/api/v1/me").json()["name"] == "mallory"

    assert admin.delete("/api/v1/users/mallory").status_code == 204
    r = admin.post(
        "/api/v1/users", json={"name": "alex", "password": "alex-Secret-123", "roles": ["administrator"]}
    )
    assert r.status_code == 201, r.text

    # The old token must not act as alex (nor as anyone): every use is refused.
    evil = {"name": "evil", "password": "evil-Secret-123", "roles": ["administrator"]}
    r = as_mallory.post("/api/v1/users", json=evil)
    assert r.status_code == 401, r.text
    assert as_mallory.get("/api/v1/me").status_code == 401
    assert as_mallory.get("/v2/team-a/app/tags/list").status_code == 401
    assert admin.get("/api/v1/users").json()["users"].count({"name": "evil", "disabled": False}) == 0


def test_principal_ids_are_never_reused(site: Site) -> None:
    from hallmark.access.store import AccessStore
    from hallmark.config import load_config
    from hallmark.metadata.db import make_engine

    env = {"HALLMARK_DATA_DIR": str(site.server.data_dir)}
    if site.server.db_url:
        env["HALLMARK_DATABASE_URL"] = site.server.db_url
    engine = make_engine(load_config(environ=env).database_url, 1)
    store = AccessStore(engine)
    try:
        first = store.create_principal("idtest-one", "user", None)
        assert first is not None
        store.delete_principal("idtest-one")
        second = store.create_principal("idtest-two", "user", None)
        assert second is not None and second > first
        store.delete_principal("idtest-two")
        third = store.create_principal("idtest-one", "user", None)  # the same name again: still a new id
        assert third is not None and third > second
        store.delete_principal("idtest-one")
    finally:
        engine.dispose()
