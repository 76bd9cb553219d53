"""The web portal in a real browser: headless Debian Chromium (Playwright) against a real ``hallmark serve``.

One server with access control on; admin pushes two images, a reader may read one repository and a
nobody may read none. Each test gets a fresh browser context (its own cookies).
"""

from __future__ import annotations

import json
import random
import shutil
import string
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.conftest import ROOT, Server
from tests.ocihelp import push_image

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CACHE = ROOT / "tests" / ".cache"
PASSWORD = "correct horse battery"

DPKG_STATUS = b"""Package: libssl1.1
Status: install ok installed
Architecture: amd64
Source: openssl
Version: 1.1.1n-0+deb11u3

Package: zlib1g
Status: install ok installed
Architecture: amd64
Source: zlib
Version: 1:1.2.11.dfsg-2+deb11u2
"""
FILES = {
    "etc/os-release": b'ID=debian\nVERSION_ID="11"\nVERSION_CODENAME=bullseye\n',
    "var/lib/dpkg/status": DPKG_STATUS,
}

pytestmark = pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian package chromium not installed")


@dataclass
class Site:
    server: Server
    admin: tuple[str, str]
    digest: str
    leaky: str  # digest of portal/leaky: three critical secrets, no vulnerability

    @property
    def url(self) -> str:
        return self.server.url


def _leaked_secrets() -> bytes:
    """Three credentials the built-in rules rate critical, made at run time (no secret literal committed)."""
    rng = random.Random(20260311)
    alnum = string.ascii_letters + string.digits

    def pick(alphabet: str, n: int) -> str:
        return "".join(rng.choice(alphabet) for _ in range(n))

    return (
        f"DATABASE_URL=postgres://app:{pick(alnum, 20)}@db.internal:5432/app\n"
        f"AWS_SECRET_ACCESS_KEY={pick(alnum + '/+', 40)}\n"
        f"AZURE_STORAGE=DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={pick(alnum + '/+', 86)}==;"
        "EndpointSuffix=core.windows.net\n"
    ).encode()


def _wait_done(c: httpx.Client, repo: str, digest: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        r = c.get(f"/api/v1/repositories/{repo}/images/{digest}")
        if r.status_code == 200:
            last = r.json()
            if last is not None and last["status"] in ("done", "failed"):
                return last
        time.sleep(0.2)
    raise AssertionError(f"image never reached done: {last}")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data = tmp_path_factory.mktemp("portal") / "data"
    data.mkdir()
    srv = Server(data, access=True).start()
    try:
        admin = ("admin", (data / "initial-admin-password").read_text().strip())
        with httpx.Client(base_url=srv.url, auth=admin, timeout=30) as c:
            digest = push_image(c, "portal/app", "v1", files=FILES)
            push_image(c, "tools/builder", "latest")
            leaky = push_image(c, "portal/leaky", "v1", files={"app/.env": _leaked_secrets()})
            for user in ("reader", "nobody"):
                assert c.post("/api/v1/users", json={"name": user, "password": PASSWORD}).status_code == 201
            grant = {"subject": "reader", "scope_kind": "repository", "scope": "portal/app", "role": "read"}
            assert c.post("/api/v1/permissions", json=grant).status_code in (200, 201)
            for repo, d in (("portal/app", digest), ("portal/leaky", leaky)):
                img = _wait_done(c, repo, d)
                assert img["status"] == "done", img
        yield Site(srv, admin, digest, leaky)
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Browser, site: Site) -> Iterator[Page]:
    ctx = browser.new_context(base_url=site.url)
    pg = ctx.new_page()
    pg.set_default_timeout(10_000)
    try:
        yield pg
    finally:
        ctx.close()


def login(page: Page, user: str, password: str) -> None:
    page.goto("/login")
    page.fill("#username", user)
    page.fill("#password", password)
    page.click("#login")


def session_cookie(page: Page) -> str | None:
    for c in page.context.cookies():
        if c["name"] == "hallmark_session":
            return str(c["value"])
    return None


def test_wrong_password_shows_an_error(page: Page, site: Site) -> None:
    resp = page.goto("/")
    assert resp is not None and "/login?next=" in page.url
    page.fill("#username", "admin")
    page.fill("#password", "not-the-password")
    page.click("#login")
    assert "Invalid user name or password" in page.inner_text("#login-error")
    assert session_cookie(page) is None


def test_admin_browses_to_the_image_and_downloads_the_sbom(page: Page, site: Site) -> None:
    login(page, *site.admin)
    page.wait_for_url(site.url + "/")
    assert page.inner_text("#current-user") == "admin"
    cookie = next(c for c in page.context.cookies() if c["name"] == "hallmark_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    listing = page.inner_text("#repositories")
    assert "portal/app" in listing and "tools/builder" in listing

    page.fill("#q", "APP")
    page.click("#search")
    page.wait_for_url("**/?q=APP")
    listing = page.inner_text("#repositories")
    assert "portal/app" in listing and "tools/builder" not in listing

    page.click("text=portal/app")
    page.wait_for_url("**/repositories/portal/app")
    images = page.inner_text("#images")
    assert "done" in images and "debian 11" in images and "v1" in page.inner_text("#tags")
    CACHE.mkdir(exist_ok=True)
    page.screenshot(path=str(CACHE / "portal-repository.png"), full_page=True)

    page.click(f"#images a[href$='{site.digest}']")
    page.wait_for_url(f"**/images/{site.digest}")
    assert page.inner_text("#image-status") == "done"
    assert page.inner_text("#package-count") == "2"
    assert page.inner_text("#catalog-stage").startswith("staging")
    assert "bullseye" in page.inner_text("#distro")
    assert "root-user" in page.inner_text("#content-findings")
    assert "sbom-cyclonedx" in page.inner_text("#referrers")
    page.screenshot(path=str(CACHE / "portal-image.png"), full_page=True)

    # The download links are the JSON API itself, authorized by the session cookie on GET.
    href = page.get_attribute("text=SBOM CycloneDX", "href")
    assert href == f"/api/v1/repositories/portal/app/images/{site.digest}/reports/sbom-cyclonedx"
    sbom = page.request.get(href)
    assert sbom.status == 200
    doc = json.loads(sbom.body())
    assert doc["bomFormat"] == "CycloneDX"
    assert {"libssl1.1", "zlib1g"} <= {c["name"] for c in doc["components"]}
    sarif_href = page.get_attribute("text=SARIF", "href")
    assert sarif_href is not None and sarif_href.endswith("?format=sarif")
    sarif = page.request.get(sarif_href)
    assert sarif.status == 200 and json.loads(sarif.body())["version"] == "2.1.0"


def test_leaked_secrets_count_as_findings_in_every_list(page: Page, site: Site) -> None:
    login(page, *site.admin)
    page.wait_for_url(site.url + "/")
    row = page.locator("#repositories tbody tr", has_text="portal/leaky")
    assert row.locator(".findings .sev-critical").inner_text() == "3"
    page.click("text=portal/leaky")
    page.wait_for_url("**/repositories/portal/leaky")
    assert page.locator("#images tbody tr .findings .sev-critical").inner_text() == "3"
    page.click(f"#images a[href$='{site.leaky}']")
    page.wait_for_url(f"**/images/{site.leaky}")
    counts = page.locator("#finding-counts")
    assert counts.locator(".sev-critical").inner_text() == "3"
    assert "exposed secrets 3" in counts.inner_text()


def test_security_headers_and_escaping(page: Page, site: Site) -> None:
    login(page, *site.admin)
    resp = page.goto("/?q=%3Cscript%3Ealert(1)%3C/script%3E")
    assert resp is not None
    headers = resp.headers
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
    assert "<script>alert(1)</script>" in page.inner_text("#no-repositories")
    assert page.locator("script").count() == 0


def test_permissions_decide_what_a_user_sees(page: Page, site: Site) -> None:
    login(page, "reader", PASSWORD)
    page.wait_for_url(site.url + "/")
    listing = page.inner_text("#repositories")
    assert "portal/app" in listing and "tools/builder" not in listing
    resp = page.goto("/repositories/tools/builder")
    assert resp is not None and resp.status == 404

    page.click("#logout")
    page.wait_for_url("**/login")
    login(page, "nobody", PASSWORD)
    page.wait_for_url(site.url + "/")
    assert page.inner_text("#no-repositories") == "No repository you can read yet."
    resp = page.goto("/repositories/portal/app")
    assert resp is not None and resp.status == 404
    resp = page.goto(f"/repositories/portal/app/images/{site.digest}")
    assert resp is not None and resp.status == 404
    api = page.request.get(f"/api/v1/repositories/portal/app/images/{site.digest}/reports/sbom-cyclonedx")
    assert api.status == 403


def test_logout_revokes_the_session(page: Page, site: Site) -> None:
    login(page, *site.admin)
    page.wait_for_url(site.url + "/")
    token = session_cookie(page)
    assert token is not None
    assert httpx.get(site.url + "/api/v1/me", cookies={"hallmark_session": token}).json()["name"] == "admin"
    page.click("#logout")
    page.wait_for_url("**/login")
    assert session_cookie(page) is None
    page.goto("/events")
    assert "/login?next=%2Fevents" in page.url
    # The token behind the cookie is revoked, not only forgotten by the browser.
    assert httpx.get(site.url + "/api/v1/me", cookies={"hallmark_session": token}).status_code == 401


def test_posts_need_the_csrf_token_and_the_cookie_never_authorizes_writes(page: Page, site: Site) -> None:
    login(page, *site.admin)
    page.wait_for_url(site.url + "/")
    req = page.request
    assert req.post("/logout", form={}).status == 403
    assert req.post("/logout", form={"csrf": "x" * 43}).status == 403
    assert req.post("/login", form={"username": "admin", "password": site.admin[1]}).status == 403
    # Still signed in: the rejected logout did nothing.
    resp = page.goto("/events")
    assert resp is not None and resp.status == 200 and page.url.endswith("/events")
    assert "Events" in page.inner_text("h1")
    # The session cookie is for reads: an API change with it alone is anonymous.
    rescan = req.post(f"/api/v1/repositories/portal/app/images/{site.digest}/rescan")
    assert rescan.status == 401
    assert req.post("/api/v1/tokens", data="{}", headers={"Content-Type": "application/json"}).status == 401


def test_events_and_advisory_pages(page: Page, site: Site) -> None:
    login(page, *site.admin)
    page.goto("/events")
    assert "image.indexed" in page.inner_text("#events")
    page.goto("/advisories")
    assert "hallmark db update" in page.inner_text("main")


def test_a_token_is_not_a_portal_password(site: Site) -> None:
    """A scoped token used as the password must not become an unscoped portal session."""
    with httpx.Client(base_url=site.url, auth=site.admin, timeout=30) as c:
        r = c.post("/api/v1/tokens", json={"name": "ci", "scopes": ["repository:portal/app:pull"]})
        assert r.status_code == 201, r.text
        token = r.json()["token"]
    with httpx.Client(base_url=site.url, timeout=30) as c:
        c.get("/login")
        csrf = c.cookies["hallmark_csrf"]
        r = c.post("/login", data={"csrf": csrf, "username": "admin", "password": token})
        assert r.status_code == 401 and "hallmark_session" not in c.cookies


def test_without_access_control_everything_is_visible(browser: Browser, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    srv = Server(data, access=False).start()
    try:
        with httpx.Client(base_url=srv.url, timeout=30) as c:
            push_image(c, "open/app", "v1")
        ctx = browser.new_context(base_url=srv.url)
        try:
            pg = ctx.new_page()
            resp = pg.goto("/")
            assert resp is not None and resp.status == 200 and pg.url == srv.url + "/"
            assert "open/app" in pg.inner_text("#repositories")
            assert "access control off" in pg.inner_text("header")
            pg.goto("/login")
            assert pg.url == srv.url + "/"
        finally:
            ctx.close()
    finally:
        srv.stop()


def test_image_page_shows_grade_lifecycle_and_restores_a_tag(page: Page, site: Site) -> None:
    """Grade badge, end-of-life section, tag history; a pusher restores a tag through the form."""
    with httpx.Client(base_url=site.url, auth=site.admin, timeout=30) as c:
        first = push_image(c, "portal/moving", "v1", files={"a.txt": b"first"})
        second = push_image(c, "portal/moving", "v1", files={"a.txt": b"second"})
        _wait_done(c, "portal/moving", second)
    login(page, *site.admin)
    page.goto(f"/repositories/portal/moving/images/{second}")
    assert page.locator("#health .grade").inner_text() in {"A", "B", "C", "D", "E", "F", "unknown"}
    history = page.locator("#tag-history-v1")
    assert "push" in history.inner_text() and "move" in history.inner_text()
    with page.expect_navigation():
        page.click(f"text=Restore v1 to {first[:19]}")
    assert page.url.endswith(f"/repositories/portal/moving/images/{second}"), page.content()[:2000]
    with httpx.Client(base_url=site.url, auth=site.admin, timeout=30) as c:
        r = c.get("/v2/portal/moving/manifests/v1", headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        assert r.headers["Docker-Content-Digest"] == first
        hist = c.get("/api/v1/repositories/portal/moving/tags/v1/history").json()
        assert hist["entries"][0]["action"] == "restore" and hist["entries"][0]["actor"] == "admin"
    # A reader sees the history but no restore button.
    page.context.clear_cookies()
    login(page, "reader", PASSWORD)
    page.goto(f"/repositories/portal/app/images/{site.digest}")
    assert page.locator("#tag-history-v1").count() == 1
    assert page.locator("ul.restore").count() == 0


def test_image_page_shows_provenance_workloads_layers_and_history(page: Page, site: Site) -> None:
    """Labels become ranked provenance with a commit link; a reported Pod and its admission decision
    show under Runs in; layers carry their sizes and Dockerfile commands; the chart has a point."""
    from tests.admission.reviews import pod
    from tests.inventory.helpers import as_list, bare_pod

    labels = {
        "org.opencontainers.image.source": "https://git.example/shop/web.git",
        "org.opencontainers.image.revision": "0123456789abcdef0123456789abcdef01234567",
    }
    history = [
        {"created_by": "/bin/sh -c #(nop) ENV A=1", "empty_layer": True},
        {"created_by": "COPY app/ /srv/app # buildkit"},
    ]
    extra = {"config": {"Labels": labels}, "history": history}
    with httpx.Client(base_url=site.url, auth=site.admin, timeout=30) as c:
        digest = push_image(c, "portal/built", "v1", files=FILES, config_extra=extra)
        _wait_done(c, "portal/built", digest)
        ref = f"{site.server.host}/portal/built:v1"
        inv = as_list(bare_pod("web-1", ref, image_id=f"{site.server.host}/portal/built@{digest}", ns="shop"))
        r = c.post("/api/v1/clusters/prod/inventory", json=inv)
        assert r.status_code == 200, r.text
    decision = httpx.post(site.url + "/admission/validate", params={"cluster": "prod"}, json=pod("web-1", "shop", ref))
    assert decision.status_code == 200 and decision.json()["response"]["allowed"] is False

    login(page, *site.admin)
    page.goto(f"/repositories/portal/built/images/{digest}")
    prov = page.locator("#provenance tbody tr").first
    assert "image label" in prov.inner_text() and "unsigned" in prov.inner_text()
    commit = prov.locator("a", has_text="0123456789ab")
    assert (
        commit.get_attribute("href")
        == "https://git.example/shop/web/commit/" + labels["org.opencontainers.image.revision"]
    )
    runs = page.locator("#runs-in tbody tr")
    assert runs.count() == 1
    cells = [runs.locator("td").nth(i).inner_text() for i in range(4)]
    assert cells == ["prod", "shop", "Pod", "web-1"]
    assert "denied" in runs.locator("td").nth(6).inner_text()
    layer = page.locator("#layers tbody tr")
    assert layer.count() == 1 and "COPY app/ /srv/app" in layer.inner_text() and " B" in layer.inner_text()
    assert page.locator("#findings-chart polyline").count() == 4
    assert "Findings over time" in (page.locator("#findings-chart title").text_content() or "")
    CACHE.mkdir(exist_ok=True)
    page.screenshot(path=str(CACHE / "portal-image-extras.png"), full_page=True)


def test_catalog_cards_search_and_empty_and_error_states(page: Page, site: Site) -> None:
    login(page, *site.admin)
    page.wait_for_url(site.url + "/")
    page.click("header >> text=Catalog")
    page.wait_for_url("**/catalog")
    card = page.locator("#catalog li.card[data-repository='portal/app']")
    assert card.locator(".stage").inner_text() == "staging"
    assert card.locator(".grade").inner_text() in {"A", "B", "C", "D", "E", "F", "unknown"}
    assert "debian" in card.inner_text().lower() and "last scanned 20" in card.inner_text()
    pull = card.locator("input.pull-command")
    assert pull.input_value() == f"docker pull {site.server.host}/portal/app@{site.digest}"
    assert card.locator("label", has_text="Pull command for portal/app").count() == 1
    CACHE.mkdir(exist_ok=True)
    page.screenshot(path=str(CACHE / "portal-catalog.png"), full_page=True)

    page.fill("#catalog-q", "leaky")
    page.click("#catalog-search")
    page.wait_for_url("**/catalog?q=leaky*")
    names = page.locator("#catalog li.card").evaluate_all("els => els.map(e => e.dataset.repository)")
    assert names == ["portal/leaky"]

    page.select_option("#catalog-stage", "approved")
    page.click("#catalog-search")
    assert "No image matches these filters" in page.inner_text("#no-images")

    resp = page.goto("/catalog?grade=Z")
    assert resp is not None and resp.status == 400
    assert "clear the filters" in page.inner_text("#catalog-error")

    page.context.clear_cookies()
    login(page, "nobody", PASSWORD)
    page.wait_for_url(site.url + "/")
    page.goto("/catalog")
    assert "No image you can read yet" in page.inner_text("#no-images")


def _audit(site: Site, action: str) -> list[dict[str, Any]]:
    with httpx.Client(base_url=site.url, auth=site.admin, timeout=30) as c:
        r = c.get("/api/v1/audit", params={"action": action})
        assert r.status_code == 200, r.text
        return list(r.json()["entries"])


def test_promote_through_the_form_is_gated_audited_and_shows_in_the_catalog(page: Page, site: Site) -> None:
    with httpx.Client(base_url=site.url, auth=site.admin, timeout=30) as c:
        digest = push_image(c, "portal/promo", "v1", files=FILES)
        _wait_done(c, "portal/promo", digest)
    login(page, *site.admin)
    page.goto(f"/repositories/portal/promo/images/{digest}")
    page.select_option("#promote-to", "approved")
    page.fill("#promote-reason", "reviewed for the first hour")
    with page.expect_navigation():
        page.click("#promote-submit")
    assert "complete_scan" in page.inner_text("main")  # no advisory data: refused without force
    page.go_back()
    page.select_option("#promote-to", "approved")
    page.fill("#promote-reason", "no advisory data for this test release; accepted")
    page.check("#promote-force")
    with page.expect_navigation():
        page.click("#promote-submit")
    assert page.inner_text("#catalog-stage").startswith("approved")
    page.goto("/catalog?stage=approved")
    assert page.locator("#catalog li.card[data-repository='portal/promo'] .stage").inner_text() == "approved"
    outcomes = [(e["actor"], e["result"]) for e in _audit(site, "promote") if e["repository"] == "portal/promo"]
    assert ("admin", "denied") in outcomes and ("admin", "allowed") in outcomes

    # A reader is offered no form, and a forged post with a valid CSRF token is refused before the handler.
    page.context.clear_cookies()
    login(page, "reader", PASSWORD)
    page.wait_for_url(site.url + "/")
    page.goto(f"/repositories/portal/app/images/{site.digest}")
    assert page.locator("#promote-form").count() == 0
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "hallmark_csrf")
    form: dict[str, str | float | bool] = {"csrf": csrf, "to": "approved", "reason": "x", "force": "on"}
    r = page.request.post(f"/repositories/portal/app/images/{site.digest}/promote", form=form)
    assert r.status == 404
    with httpx.Client(base_url=site.url, auth=site.admin, timeout=30) as c:
        assert c.get(f"/api/v1/repositories/portal/app/images/{site.digest}/catalog").json()["stage"] == "staging"


def test_vex_triage_form_stores_openvex_and_audits(page: Page, site: Site) -> None:
    login(page, *site.admin)
    page.wait_for_url(site.url + "/")
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "hallmark_csrf")
    url = f"/repositories/portal/app/images/{site.digest}/vex"
    bad: dict[str, str | float | bool] = {"csrf": csrf, "advisory": "CVE-2024-0001", "status": "not_affected"}
    r = page.request.post(url, form=bad, max_redirects=0)
    assert r.status == 400 and "justification" in r.text()  # not_affected needs a reason
    form = {**bad, "justification": "vulnerable_code_not_present", "expires": "2099-01-31"}
    r = page.request.post(url, form=form, max_redirects=0)
    assert r.status == 303 and "triaged=" in r.headers["location"]
    with httpx.Client(base_url=site.url, auth=site.admin, timeout=30) as c:
        docs = c.get("/api/v1/vex", params={"repository": "portal/app"}).json()["documents"]
        assert len(docs) == 1 and docs[0]["digest"] == site.digest
    entry = next(e for e in _audit(site, "vex.upload") if e["repository"] == "portal/app")
    assert entry["actor"] == "admin" and entry["detail"]["advisory"] == "CVE-2024-0001"


def test_robot_token_is_shown_once_and_revoked_from_the_portal(page: Page, site: Site) -> None:
    login(page, *site.admin)
    page.wait_for_url(site.url + "/")
    page.click("header >> text=Robots")
    page.fill("#robot-name", "ci-portal")
    page.fill("#robot-scopes", "repository:portal/app:pull")
    page.click("#robot-create")
    token = page.input_value("#robot-token")
    assert token.startswith("hmk_")
    bearer = {"Authorization": f"Bearer {token}"}
    assert httpx.get(site.url + "/api/v1/me", headers=bearer).json()["name"] == "ci-portal"
    page.goto("/admin/robots")
    assert page.locator("#robot-token").count() == 0 and "ci-portal" in page.inner_text("#robots")
    with page.expect_navigation():
        page.click("button[aria-label='Revoke robot ci-portal']")
    assert "revoked" in page.locator("#robots tr", has_text="ci-portal").inner_text()
    assert httpx.get(site.url + "/api/v1/me", headers=bearer).status_code == 401
    actions = {e["action"] for e in _audit(site, "robot.create") + _audit(site, "robot.revoke")}
    assert actions == {"robot.create", "robot.revoke"}
    # Not for non-administrators.
    page.context.clear_cookies()
    login(page, "reader", PASSWORD)
    page.wait_for_url(site.url + "/")
    assert page.locator("header >> text=Robots").count() == 0
    resp = page.goto("/admin/robots")
    assert resp is not None and resp.status == 404


def test_audit_log_page_filters_and_verifies_the_chain(page: Page, site: Site) -> None:
    login(page, *site.admin)
    page.wait_for_url(site.url + "/")
    page.click("header >> text=Audit")
    page.fill("#audit-action", "user.create")
    page.check("#audit-verify")
    page.click("#audit-search")
    page.wait_for_url("**/admin/audit?*action=user.create*")
    assert "Hash chain intact" in page.inner_text("#audit-chain")
    actions = page.locator("#audit tbody tr td:nth-child(4)").all_inner_texts()
    assert actions and set(actions) == {"user.create"}
    assert "nobody" in page.inner_text("#audit") and "reader" in page.inner_text("#audit")
    page.goto("/admin/audit?since=yesterday")
    assert "Since must be a date" in page.inner_text("main")
    # Readers are not auditors: no link, and the page is refused like a missing one.
    page.context.clear_cookies()
    login(page, "reader", PASSWORD)
    page.wait_for_url(site.url + "/")
    assert page.locator("header >> text=Audit").count() == 0
    resp = page.goto("/admin/audit")
    assert resp is not None and resp.status == 404


def test_users_teams_and_permissions_through_the_forms(page: Page, site: Site) -> None:
    """A team gets read on tools/builder and the reader joins it: the reader sees the repository;
    revoking the grant hides it again. Each change is audited like the API's."""

    def reader_sees_builder() -> bool:
        with httpx.Client(base_url=site.url, auth=("reader", PASSWORD), timeout=30) as c:
            return c.get("/api/v1/repositories/tools/builder").status_code == 200

    login(page, *site.admin)
    page.wait_for_url(site.url + "/")
    page.click("header >> text=Users and teams")
    page.fill("#user-name", "newcomer")
    page.fill("#user-password", PASSWORD)
    page.check("#user-role-auditor")
    with page.expect_navigation():
        page.click("#user-create")
    with httpx.Client(base_url=site.url, auth=("newcomer", PASSWORD), timeout=30) as c:
        assert c.get("/api/v1/me").json()["catalog_roles"] == ["auditor"]
    with page.expect_navigation():
        page.click("button[aria-label='Disable newcomer']")
    assert "disabled" in page.locator("#users tr", has_text="newcomer").inner_text()
    assert httpx.get(site.url + "/api/v1/me", auth=("newcomer", PASSWORD)).status_code == 401
    page.fill("#team-name", "builders")
    with page.expect_navigation():
        page.click("#team-create")
    row = page.locator("#teams tr", has_text="builders")
    row.locator("input[name=member]").fill("reader")
    with page.expect_navigation():
        row.locator("button", has_text="Add").click()
    assert "reader" in page.locator("#teams tr", has_text="builders").inner_text()
    page.fill("#grant-subject", "builders")
    page.select_option("#grant-subject-kind", "team")
    page.select_option("#grant-scope-kind", "repository")
    page.fill("#grant-scope", "tools/builder")
    page.select_option("#grant-role", "read")
    with page.expect_navigation():
        page.click("#grant-submit")
    assert reader_sees_builder()
    with page.expect_navigation():
        page.click("button[aria-label='Revoke read on tools/builder from builders']")
    assert not reader_sees_builder()
    with page.expect_navigation():
        page.click("button[aria-label='Remove reader from builders']")
    assert "no member" in page.locator("#teams tr", has_text="builders").inner_text()
    page.fill("#grant-subject", "nobody-here")
    page.fill("#grant-scope", "tools/builder")
    page.select_option("#grant-scope-kind", "repository")
    with page.expect_navigation():
        page.click("#grant-submit")
    assert "not found" in page.inner_text("main")
    wanted = ("user.create", "user.disable", "team.create", "team.add_member", "permission.grant")
    assert {e["action"] for a in wanted for e in _audit(site, a)} == set(wanted)


# An OSV record made here (no shared data needed): jinja2 before 2.10.1, known as a CVE too.
JINJA_OSV = {
    "id": "PYSEC-2019-217",
    "aliases": ["CVE-2019-10906"],
    "modified": "2024-01-01T00:00:00Z",
    "published": "2019-04-07T00:00:00Z",
    "details": "In Pallets Jinja before 2.10.1, str.format_map allows a sandbox escape.",
    "affected": [
        {
            "package": {"name": "jinja2", "ecosystem": "PyPI", "purl": "pkg:pypi/jinja2"},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.10.1"}]}],
        }
    ],
    "database_specific": {"severity": "HIGH"},
}


def test_advisory_page_finds_affected_images_and_triage_suppresses_the_finding(
    page: Page, site: Site, tmp_path: Path
) -> None:
    """Last in this module (it loads advisory data into the shared server): the CVE's page lists the
    image and its workload; the VEX form on the image page then suppresses the finding."""
    import zipfile

    from tests.inventory.helpers import as_list, bare_pod
    from tests.pipeline.test_pipeline import hallmark_cli, image_files

    cve = "CVE-2019-10906"
    mirror = tmp_path / "mirror" / "osv" / "PyPI"
    mirror.mkdir(parents=True)
    with zipfile.ZipFile(mirror / "all.zip", "w") as zf:
        zf.writestr("PYSEC-2019-217.json", json.dumps(JINJA_OSV))
    r = hallmark_cli(site.server, "db", "update", "--mirror", str(tmp_path / "mirror"))
    assert r.returncode == 0, r.stderr
    with httpx.Client(base_url=site.url, auth=site.admin, timeout=30) as c:
        digest = push_image(c, "portal/jinja", "v1", files=image_files("11", "bullseye"))
        assert _wait_done(c, "portal/jinja", digest)["summary"]["total"] >= 1
        ref = f"{site.server.host}/portal/jinja:v1"
        inv = as_list(bare_pod("render", ref, image_id=f"{site.server.host}/portal/jinja@{digest}", ns="docs"))
        assert c.post("/api/v1/clusters/staging/inventory", json=inv).status_code == 200

    login(page, *site.admin)
    page.wait_for_url(site.url + "/")
    # Found by a package it contains, with the version range of the advisory.
    page.goto("/catalog")
    page.fill("#catalog-package", "jinja2")
    page.fill("#catalog-version", "<2.10.1")
    page.click("#catalog-search")
    page.wait_for_url("**/catalog?*package=jinja2*")
    assert page.locator("#catalog li.card").evaluate_all("els => els.map(e => e.dataset.repository)") == [
        "portal/jinja"
    ]
    assert "jinja2 2.10" in page.inner_text("#catalog li.card .matched")
    page.screenshot(path=str(CACHE / "portal-catalog-search.png"), full_page=True)
    page.fill("#catalog-version", ">=2.10.1")
    page.click("#catalog-search")
    assert "No image matches these filters" in page.inner_text("#no-images")
    page.click("header >> text=Advisories")
    page.fill("#advisory-q", cve)
    page.click("#advisory-search")
    page.wait_for_url(f"**/advisories/{cve}")
    assert "PYSEC-2019-217" in page.inner_text("#advisory-aliases")
    row = page.locator("#affected-images tbody tr", has_text="portal/jinja")
    assert "jinja2 2.10" in row.inner_text() and "staging/docs Pod render" in row.inner_text()
    assert page.locator("#affected-images tbody tr").count() == 1
    page.screenshot(path=str(CACHE / "portal-advisory.png"), full_page=True)

    row.locator("a").click()
    page.wait_for_url(f"**/images/{digest}")
    assert "PYSEC-2019-217" in page.inner_text("#findings")
    page.select_option("#vex-advisory", "PYSEC-2019-217")
    page.select_option("#vex-status", "not_affected")
    page.select_option("#vex-justification", "vulnerable_code_not_in_execute_path")
    page.fill("#vex-statement", "templates are never rendered in a sandbox here")
    with page.expect_navigation():
        page.click("#vex-submit")
    assert "Triage recorded" in page.inner_text("#triage-done")
    with httpx.Client(base_url=site.url, auth=site.admin, timeout=30) as c:
        deadline = time.monotonic() + 30
        while c.get(f"/api/v1/repositories/portal/jinja/images/{digest}").json()["summary"].get("suppressed") != 1:
            assert time.monotonic() < deadline, "the VEX statement never applied"
            time.sleep(0.2)
    page.reload()
    assert page.locator("#findings tr.suppressed", has_text="PYSEC-2019-217").count() == 1


def test_image_page_names_its_base_and_advises_an_approved_upgrade(page: Page, site: Site) -> None:
    """After the advisory test (jinja2 2.10 has a fixable finding): an image built on a base with
    that finding shows the base, why to move, and the approved fixed base as the replacement."""
    from tests.ocihelp import image, push_blob, push_manifest, sha256, tar_layer
    from tests.pipeline.test_pipeline import image_files

    vulnerable = {**image_files("11", "bullseye"), "etc/py-base": b"1"}  # its own layer, no other image's
    fixed = dict(vulnerable)
    fixed["usr/lib/python3/dist-packages/Jinja2-2.10.1.dist-info/METADATA"] = (
        b"Metadata-Version: 2.1\nName: Jinja2\nVersion: 2.10.1\n"
    )
    del fixed["usr/lib/python3/dist-packages/Jinja2-2.10.dist-info/METADATA"]
    with httpx.Client(base_url=site.url, auth=site.admin, timeout=30) as c:
        old = push_image(c, "portal/py-base", "v1", files=vulnerable)
        new = push_image(c, "portal/py-base", "v2", files=fixed)
        for d in (old, new):
            _wait_done(c, "portal/py-base", d)
        r = c.post(
            f"/api/v1/repositories/portal/py-base/images/{new}/catalog/promote",
            json={"to": "approved", "reason": "fixed jinja2", "force": True},
        )
        assert r.status_code == 200, r.text
        base_layer = tar_layer(vulnerable)
        app_layer = tar_layer({"srv/app.py": b"print('hi')"})
        config, manifest = image([base_layer, app_layer])
        for blob in (base_layer, app_layer, config):
            push_blob(c, "portal/py-app", blob)
        assert push_manifest(c, "portal/py-app", "v1", manifest).status_code == 201
        app = sha256(manifest)
        _wait_done(c, "portal/py-app", app)
    login(page, *site.admin)
    page.goto(f"/repositories/portal/py-app/images/{app}")
    base = page.inner_text("#base-image")
    assert "portal/py-base" in base and old[:19] in base and "layer prefix" in base
    assert "fixable finding" in page.inner_text("#advice")
    option = page.locator("#advice-options tbody tr")
    assert option.count() == 1 and new[:19] in option.inner_text()
    page.screenshot(path=str(CACHE / "portal-image-full.png"), full_page=True)


def _skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", "--insecure-policy", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo not installed (make test installs it)")
def test_done_when_push_find_triage_promote_and_find_approved(page: Page, site: Site, tmp_path: Path) -> None:
    """Issue 17's flow, after the advisory test loaded PYSEC-2019-217 (jinja2 < 2.10.1): skopeo pushes
    an image holding jinja2 2.10 and a package no other image has; the portal finds it by that
    package, shows its findings and grade, records a VEX triage and a promotion through the forms,
    and the catalog then lists it as approved."""
    from tests.ocihelp import tar_layer, write_oci_layout
    from tests.pipeline.test_pipeline import image_files

    files = {
        **image_files("11", "bullseye"),
        "usr/lib/python3/dist-packages/donewhen_widget-1.4.dist-info/METADATA": (
            b"Metadata-Version: 2.1\nName: donewhen-widget\nVersion: 1.4\n"
        ),
    }
    digest = write_oci_layout(tmp_path / "layout", "v1", [tar_layer(files)])
    user, password = site.admin
    pushed = _skopeo(
        "copy",
        "--dest-tls-verify=false",
        f"--dest-creds={user}:{password}",
        f"oci:{tmp_path / 'layout'}:v1",
        f"docker://{site.server.host}/done/widget:v1",
    )
    assert pushed.returncode == 0, pushed.stderr
    with httpx.Client(base_url=site.url, auth=site.admin, timeout=30) as c:
        assert _wait_done(c, "done/widget", digest)["summary"]["total"] >= 1

    login(page, *site.admin)
    page.wait_for_url(site.url + "/")
    page.click("header >> text=Catalog")
    page.fill("#catalog-package", "donewhen-widget")
    page.click("#catalog-search")
    page.wait_for_url("**/catalog?*package=donewhen-widget*")
    cards = page.locator("#catalog li.card")
    assert cards.evaluate_all("els => els.map(e => e.dataset.repository)") == ["done/widget"]
    assert "donewhen-widget 1.4" in cards.locator(".matched").inner_text()
    cards.locator("h2 a").click()
    page.wait_for_url(f"**/repositories/done/widget/images/{digest}")
    assert "PYSEC-2019-217" in page.locator("#findings tr", has_text="jinja2").inner_text()
    grade = page.locator("#health .grade").inner_text()
    assert grade in {"A", "B", "C", "D", "E", "F", "unknown"}  # unknown here: no Debian data loaded
    assert len(page.inner_text("#health")) > len(grade) + 5  # with its reason
    assert page.inner_text("#catalog-stage").startswith("staging")

    page.select_option("#vex-advisory", "PYSEC-2019-217")
    page.select_option("#vex-status", "not_affected")
    page.select_option("#vex-justification", "vulnerable_code_not_in_execute_path")
    page.fill("#vex-statement", "the widget never renders untrusted templates")
    with page.expect_navigation():
        page.click("#vex-submit")
    assert "Triage recorded" in page.inner_text("#triage-done")

    page.select_option("#promote-to", "approved")
    page.fill("#promote-reason", "jinja2 finding triaged; Debian data not mirrored in this test")
    page.check("#promote-force")
    with page.expect_navigation():
        page.click("#promote-submit")
    assert page.inner_text("#catalog-stage").startswith("approved")

    page.click("header >> text=Catalog")
    page.fill("#catalog-package", "donewhen-widget")
    page.select_option("#catalog-stage", "approved")
    page.click("#catalog-search")
    page.wait_for_url("**/catalog?*stage=approved*")
    card = page.locator("#catalog li.card[data-repository='done/widget']")
    assert card.locator(".stage").inner_text() == "approved"
    assert card.locator("input.pull-command").input_value().endswith(f"/done/widget@{digest}")


def test_advisory_page_lists_every_affected_image(page: Page, site: Site) -> None:
    """From the CVE's page, every image the advisory (an alias of PYSEC-2019-217) affects: the same set
    as the API's answer, several repositories, each linking to its image page; the fixed image not."""
    cve = "CVE-2019-10906"
    with httpx.Client(base_url=site.url, auth=site.admin, timeout=30) as c:
        r = c.get(f"/api/v1/advisories/{cve}")
        assert r.status_code == 200, r.text
        expected = {(i["repository"], i["digest"]) for i in r.json()["images"]}
        fixed = c.head("/v2/portal/py-base/manifests/v2").headers["Docker-Content-Digest"]
    assert {"portal/jinja", "portal/py-base", "portal/py-app"} <= {repo for repo, _ in expected}
    login(page, *site.admin)
    page.wait_for_url(site.url + "/")
    page.click("header >> text=Advisories")
    page.fill("#advisory-q", cve)
    page.click("#advisory-search")
    page.wait_for_url(f"**/advisories/{cve}")
    links = page.locator("#affected-images tbody tr td:first-child a").evaluate_all(
        "els => els.map(e => e.getAttribute('href'))"
    )
    shown = {(h.split("/repositories/")[1].split("/images/")[0], h.rsplit("/", 1)[1]) for h in links}
    assert shown == expected
    assert page.inner_text("#affected-count").startswith(str(len(expected)))
    assert fixed not in {d for _, d in shown}
    page.locator("#affected-images tbody tr", has_text="portal/py-app").locator("a").click()
    page.wait_for_url("**/repositories/portal/py-app/images/*")
    assert "PYSEC-2019-217" in page.inner_text("#findings")


def test_mirror_pages_list_runs_and_run_now(page: Page, site: Site, tmp_path: Path) -> None:
    """A mirror from a second Hallmark (anonymous pulls): the list shows it never ran; "Run now" (CSRF
    form) queues a run that a worker copies; the mirror page shows the run and its per-tag result.
    Only administrators of the destination see it."""
    (tmp_path / "upstream").mkdir()
    upstream = Server(tmp_path / "upstream").start()
    try:
        with httpx.Client(base_url=upstream.url, timeout=30) as c:
            digest = push_image(c, "team/app", "v1", files=FILES)
            push_image(c, "team/app", "skip-me")
        _check_mirror_pages(page, site, upstream, digest)
    finally:
        upstream.stop()


def _check_mirror_pages(page: Page, site: Site, upstream: Server, digest: str) -> None:
    body = {
        "name": "upstream-app",
        "source": f"http://{upstream.host}/team/app",
        "destination": "mirrored/app",
        "tags": {"include": ["v1"]},
        "schedule": {"cron": "0 3 * * *"},
        "copy_referrers": False,
    }
    with httpx.Client(base_url=site.url, auth=site.admin, timeout=30) as c:
        r = c.post("/api/v1/mirrors", json=body)
        assert r.status_code == 201, r.text
        mirror_id = r.json()["id"]
    login(page, *site.admin)
    page.wait_for_url(site.url + "/")
    page.click("header >> text=Mirrors")
    row = page.locator("#mirrors tr[data-mirror='upstream-app']")
    assert "never run" in row.inner_text() and "cron 0 3 * * *" in row.inner_text()
    assert f"{upstream.host}/team/app" in row.inner_text() and "mirrored/app" in row.inner_text()
    row.locator("a", has_text="upstream-app").click()
    page.wait_for_url(f"**/admin/mirrors/{mirror_id}")
    assert "anonymous" in page.inner_text("#mirror-definition")
    with page.expect_navigation():
        page.click("#run-now")
    assert "Run queued" in page.inner_text("#run-queued")
    with httpx.Client(base_url=site.url, auth=site.admin, timeout=30) as c:
        deadline = time.monotonic() + 60
        while True:
            runs = c.get(f"/api/v1/mirrors/{mirror_id}/runs").json()["runs"]
            if runs and runs[0]["state"] not in ("queued", "running"):
                break
            assert time.monotonic() < deadline, runs
            time.sleep(0.3)
    page.reload()
    run = page.locator("#runs tbody tr").first
    assert runs[0]["state"] in run.inner_text() and "manual" in run.inner_text()
    tag = page.locator("#run-tags tbody tr", has_text="v1")
    assert runs[0]["copied"] == 1, runs[0]
    assert "copied" in tag.inner_text()
    assert tag.locator(f"a[href='/repositories/mirrored/app/images/{digest}']").count() == 1
    assert page.locator("#run-tags tbody tr", has_text="skip-me").count() == 0  # filtered out
    CACHE.mkdir(exist_ok=True)
    page.screenshot(path=str(CACHE / "portal-mirror.png"), full_page=True)
    page.goto("/admin/mirrors")
    cells = page.locator("#mirrors tr[data-mirror='upstream-app'] td").all_inner_texts()
    assert cells[4].startswith(runs[0]["state"]) and cells[5:8] == ["1", "0", "0"]
    assert [e["detail"]["mirror"] for e in _audit(site, "mirror.run")] == ["upstream-app"]

    page.context.clear_cookies()
    login(page, "reader", PASSWORD)
    page.wait_for_url(site.url + "/")
    page.goto("/admin/mirrors")
    assert "No mirror you administer" in page.inner_text("#no-mirrors")
    resp = page.goto(f"/admin/mirrors/{mirror_id}")
    assert resp is not None and resp.status == 404


def _axe_script() -> Path:
    """axe-core from npm (``make test`` installs the pinned version under .venv/npm; no CDN)."""
    path = ROOT / ".venv" / "npm" / "node_modules" / "axe-core" / "axe.min.js"
    assert path.is_file(), "make .venv/npm/.axe-core-<version> (npm axe-core, see Makefile)"
    return path


def test_every_page_has_no_serious_accessibility_violation(browser: Browser, site: Site) -> None:
    """axe-core on each page, as an administrator (every action form shown); CSP is bypassed only
    so the test can inject axe itself. Last in the module, so every page has its data."""
    script = _axe_script()
    ctx = browser.new_context(base_url=site.url, bypass_csp=True)
    try:
        page = ctx.new_page()
        page.set_default_timeout(20_000)
        pages = [
            "/login",
            "/",
            "/catalog",
            "/catalog?grade=Z",
            "/events",
            "/advisories",
            "/repositories/portal/app",
            "/advisories/CVE-2019-10906",
            "/admin/robots",
            "/admin/audit?verify=1",
            "/admin/access",
            "/admin/mirrors",
        ]
        with httpx.Client(base_url=site.url, auth=site.admin, timeout=30) as c:
            images = c.get("/api/v1/catalog").json()["images"]
        # One image page of each shape: provenance and workloads, the VEX form (the finding the tests
        # above made), base image advice, leaked secrets; the others share their templates.
        shapes = {"portal/built", "portal/jinja", "portal/py-app", "portal/leaky"}
        pages += sorted(
            {f"/repositories/{i['repository']}/images/{i['digest']}" for i in images if i["repository"] in shapes}
        )
        with httpx.Client(base_url=site.url, auth=site.admin, timeout=30) as c:
            pages += [f"/admin/mirrors/{m['id']}" for m in c.get("/api/v1/mirrors").json()["mirrors"]]
        assert len(pages) == 17, pages
        found: dict[str, list[Any]] = {}
        for i, path in enumerate(pages):
            if i == 1:
                login(page, *site.admin)
                page.wait_for_url(site.url + "/")
            page.goto(path)
            page.add_script_tag(path=str(script))
            violations = page.evaluate(
                """async () => (await axe.run(document, {resultTypes: ["violations"]})).violations
                    .filter(v => v.impact === "serious" || v.impact === "critical")
                    .map(v => ({id: v.id, impact: v.impact,
                                nodes: v.nodes.slice(0, 3).map(n => n.target.join(" "))}))"""
            )
            if violations:
                found[path] = violations
        assert found == {}, json.dumps(found, indent=1)
    finally:
        ctx.close()
