"""LDAP bind authentication against a real OpenLDAP ``slapd`` (Debian package), started here.

The fixture writes a slapd.conf (mdb backend, dc=example,dc=com), starts slapd on a free
loopback port, loads two users and two groups with ``ldapadd`` and stops it at the end.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from hallmark.access.ldap import LdapDirectory
from hallmark.access.service import AccessService
from hallmark.config import LdapConfig, load_config
from hallmark.metadata.db import make_engine, migrate
from tests.conftest import Server, free_port

SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
SUFFIX = "dc=example,dc=com"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PW = "root-Secret-ldap-42"
PASSWORDS = {"lena": "lena-Ldap-Pass-7781", "mark": "mark-Ldap-Pass-3390"}
ADMIN_PW = "admin-Local-Pass-5521"

LDIF = f"""dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: ou=people,{SUFFIX}
objectClass: organizationalUnit
ou: people

dn: ou=groups,{SUFFIX}
objectClass: organizationalUnit
ou: groups

dn: uid=lena,ou=people,{SUFFIX}
objectClass: inetOrgPerson
uid: lena
cn: Lena
sn: L
userPassword: {PASSWORDS["lena"]}

dn: uid=mark,ou=people,{SUFFIX}
objectClass: inetOrgPerson
uid: mark
cn: Mark
sn: M
userPassword: {PASSWORDS["mark"]}

dn: cn=developers,ou=groups,{SUFFIX}
objectClass: groupOfNames
cn: developers
member: uid=lena,ou=people,{SUFFIX}

dn: cn=auditors,ou=groups,{SUFFIX}
objectClass: groupOfNames
cn: auditors
member: uid=lena,ou=people,{SUFFIX}
"""


@dataclass
class Slapd:
    url: str
    root: Path

    def ldap(self, tool: str, ldif: str) -> None:
        subprocess.run(
            [tool, "-x", "-H", self.url, "-D", ROOT_DN, "-w", ROOT_PW],
            input=ldif,
            text=True,
            check=True,
            capture_output=True,
            timeout=30,
        )


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"slapd exited: {log.read_text(errors='replace')[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError("slapd did not listen")


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    if not os.path.exists(SLAPD) or shutil.which("ldapadd") is None:
        pytest.skip("slapd or ldap-utils not installed (Debian packages slapd, ldap-utils; `make debs`)")
    root = tmp_path_factory.mktemp("slapd")
    (root / "db").mkdir()
    conf = root / "slapd.conf"
    conf.write_text(
        "\n".join(
            [
                *(f"include /etc/ldap/schema/{s}.schema" for s in ("core", "cosine", "inetorgperson", "nis")),
                "modulepath /usr/lib/ldap",
                "moduleload back_mdb",
                f"pidfile {root}/slapd.pid",
                "database mdb",
                "maxsize 10485760",
                f'suffix "{SUFFIX}"',
                f'rootdn "{ROOT_DN}"',
                f"rootpw {ROOT_PW}",
                f"directory {root}/db",
                "access to attrs=userPassword by self write by anonymous auth by * none",
                "access to * by * read",
                "",
            ]
        )
    )
    port = free_port()
    url = f"ldap://127.0.0.1:{port}"
    log = root / "slapd.log"
    # -d keeps slapd in the foreground, so the fixture owns the process; as root it stays root.
    with open(log, "wb") as out:
        proc = subprocess.Popen([SLAPD, "-h", url + "/", "-f", str(conf), "-d", "256"], stdout=out, stderr=out)
    try:
        _wait_port(port, proc, log)
        srv = Slapd(url, root)
        srv.ldap("ldapadd", LDIF)
        yield srv
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def ldap_env(slapd: Slapd) -> dict[str, str]:
    return {
        "HALLMARK_ACCESS__LDAP__URL": slapd.url,
        "HALLMARK_ACCESS__LDAP__BIND_DN": ROOT_DN,
        "HALLMARK_ACCESS__LDAP__BIND_PASSWORD": ROOT_PW,
        "HALLMARK_ACCESS__LDAP__USER_BASE_DN": f"ou=people,{SUFFIX}",
        "HALLMARK_ACCESS__LDAP__GROUP_BASE_DN": f"ou=groups,{SUFFIX}",
        "HALLMARK_ACCESS__LDAP__GROUP_TEAMS__DEVELOPERS": "devs",
        "HALLMARK_ACCESS__LDAP__GROUP_ROLES__AUDITORS": "auditor",
        "HALLMARK_ACCESS__LDAP__CACHE_SECONDS": "0",
        "HALLMARK_ACCESS__MAX_FAILED_PER_USER": "3",
    }


@pytest.fixture(scope="module")
def server(slapd: Slapd, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data = tmp_path_factory.mktemp("ldap-hm") / "data"
    data.mkdir()
    cfg = load_config(environ={"HALLMARK_DATA_DIR": str(data)})
    engine = make_engine(cfg.database_url, 2)
    migrate(engine)
    svc = AccessService(cfg, engine)
    svc.add_user("test", "admin", ADMIN_PW, ["administrator"])
    svc.create_team("test", "devs")  # the grant an LDAP group inherits through its mapped team
    svc.grant("test", "team", "devs", "namespace", "ldapns", "write")
    svc.audit.flush()
    engine.dispose()
    srv = Server(data, env=ldap_env(slapd), access=True).start()
    try:
        yield srv
    finally:
        srv.stop()


def log_text(server: Server) -> str:
    return (server.data_dir.parent / f"server-{server.port}.log").read_text(errors="replace")


def token_access(server: Server, user: str, password: str, scope: str) -> tuple[int, list[dict[str, object]]]:
    r = httpx.get(
        server.url + "/auth/token", params={"service": "hallmark", "scope": scope}, auth=(user, password), timeout=30
    )
    if r.status_code != 200:
        return r.status_code, []
    payload = r.json()["token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return 200, list(claims["access"])


def me(server: Server, user: str, password: str) -> dict[str, object]:
    r = httpx.get(server.url + "/api/v1/me", auth=(user, password), timeout=30)
    assert r.status_code == 200, r.text
    body: dict[str, object] = r.json()
    return body


def test_ldap_user_gets_mapped_team_permissions(server: Server) -> None:
    status, access = token_access(server, "lena", PASSWORDS["lena"], "repository:ldapns/app:pull,push")
    assert status == 200
    assert access == [{"type": "repository", "name": "ldapns/app", "actions": ["pull", "push"]}]
    info = me(server, "lena", PASSWORDS["lena"])
    assert "devs" in str(info) and "auditor" in str(info)
    # mark is in no mapped group: he logs in but gets nothing on the namespace.
    status, access = token_access(server, "mark", PASSWORDS["mark"], "repository:ldapns/app:pull,push")
    assert status == 200 and access == []
    users = httpx.get(server.url + "/api/v1/users", auth=("admin", ADMIN_PW), timeout=30)
    assert users.status_code == 200 and "lena" in users.text


def test_skopeo_push_as_ldap_user(server: Server, tmp_path: Path) -> None:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo not installed (make test installs it)")
    from tests.ocihelp import tar_layer, write_oci_layout

    src = tmp_path / "src"
    write_oci_layout(src, "v1", [tar_layer({"etc/ldap": b"hi\n"})])
    creds = f"lena:{PASSWORDS['lena']}"
    dest = f"docker://{server.host}/ldapns/app:v1"
    subprocess.run(
        [
            "skopeo",
            "--insecure-policy",
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            creds,
            f"oci:{src}:v1",
            dest,
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    mark_creds = f"mark:{PASSWORDS['mark']}"
    denied = subprocess.run(
        [
            "skopeo",
            "--insecure-policy",
            "copy",
            "--dest-tls-verify=false",
            "--dest-creds",
            mark_creds,
            f"oci:{src}:v1",
            dest,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert denied.returncode != 0


def test_filter_injection_is_refused(server: Server, slapd: Slapd) -> None:
    for name in ("*)(uid=*", "*", "lena)(|(uid=*"):
        status, _ = token_access(server, name, PASSWORDS["lena"], "repository:ldapns/app:pull")
        assert status == 401, name
    # The same names straight at the directory layer (past Hallmark's user-name check): escaped, no match.
    cfg = LdapConfig(
        url=slapd.url,
        bind_dn=ROOT_DN,
        bind_password=ROOT_PW,
        user_base_dn=f"ou=people,{SUFFIX}",
        user_filter="(uid={username})",
    )
    directory = LdapDirectory(cfg)
    assert directory.authenticate("lena", PASSWORDS["lena"]) is not None
    for name in ("*)(uid=*", "*", "lena)(|(uid=*", "lena*"):
        assert directory.authenticate(name, PASSWORDS["lena"]) is None, name
    templated = LdapDirectory(LdapConfig(url=slapd.url, user_dn_template=f"uid={{username}},ou=people,{SUFFIX}"))
    assert templated.authenticate("lena", PASSWORDS["lena"]) is not None
    assert templated.authenticate("lena,ou=people", PASSWORDS["lena"]) is None
    assert templated.authenticate("lena", "") is None  # an unauthenticated bind must not count as a login


def test_removed_from_group_loses_role_at_next_login(server: Server, slapd: Slapd) -> None:
    assert "auditor" in str(me(server, "lena", PASSWORDS["lena"]))
    for group in ("auditors", "developers"):
        slapd.ldap(
            "ldapmodify",
            f"dn: cn={group},ou=groups,{SUFFIX}\nchangetype: modify\nadd: member\nmember: cn=placeholder\n-\n"
            f"delete: member\nmember: uid=lena,ou=people,{SUFFIX}\n",
        )
    info = me(server, "lena", PASSWORDS["lena"])
    assert "auditor" not in str(info) and "devs" not in str(info)
    status, access = token_access(server, "lena", PASSWORDS["lena"], "repository:ldapns/app:pull,push")
    assert status == 200 and access == []
    audit = httpx.get(server.url + "/api/v1/audit", params={"actor": "ldap"}, auth=("admin", ADMIN_PW), timeout=30)
    assert audit.status_code == 200 and "permission.revoke" in audit.text


def test_wrong_password_is_401_and_rate_limited(server: Server) -> None:
    for _ in range(3):
        status, _ = token_access(server, "mark", "not-the-password", "repository:ldapns/app:pull")
        assert status == 401
    # Now even the right password is refused without asking the directory.
    r = httpx.get(server.url + "/auth/token", params={"service": "hallmark"}, auth=("mark", PASSWORDS["mark"]))
    assert r.status_code == 429
    api = httpx.get(server.url + "/api/v1/me", auth=("mark", PASSWORDS["mark"]), timeout=30)
    assert api.status_code == 429


def test_local_password_user_is_not_taken_over_by_ldap(server: Server) -> None:
    # admin exists locally with a password: the directory is never consulted for it.
    status, _ = token_access(server, "admin", PASSWORDS["lena"], "repository:ldapns/app:pull")
    assert status == 401


def test_no_password_in_server_log(server: Server) -> None:
    text = log_text(server)
    for secret in (*PASSWORDS.values(), ROOT_PW, ADMIN_PW):
        assert secret not in text
