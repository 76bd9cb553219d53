"""HTTPS: a real ``hallmark serve`` with certificates from ``hallmark tls generate``.

skopeo and httpx trust only the generated CA; the token realm and the portal's cookies follow the
https scheme; blobs large enough for the raw-socket upload and the sendfile download paths go
through TLS intact; replaced certificate files reach new connections (in every worker) while open
connections keep theirs; unusable TLS settings stop the start with one line and exit code 2.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from tests.cli.clirun import hallmark
from tests.conftest import Server
from tests.ocihelp import sha256, tar_layer, write_oci_layout


def generate(out: Path, hosts: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return hallmark(out.parent / "unused-data", "tls", "generate", "--hosts", hosts, "--out", str(out), *extra)


def ca_context(ca: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(ca))


class TLSServer(Server):
    """``hallmark serve`` over HTTPS; ready once it answers over TLS verified with the generated CA."""

    def __init__(self, data_dir: Path, tls: Path, workers: int = 1, access: bool = False) -> None:
        env = {
            "HALLMARK_SERVER__TLS_CERT": str(tls / "server.crt"),
            "HALLMARK_SERVER__TLS_KEY": str(tls / "server.key"),
            "HALLMARK_SERVER__WORKERS": str(workers),
        }
        super().__init__(data_dir, env=env, access=access)
        self.ca = tls / "ca.crt"
        self.log = data_dir.parent / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"https://{self.host}"

    def start(self) -> TLSServer:
        env = {**os.environ, "HALLMARK_DATA_DIR": str(self.data_dir), **self.extra_env}
        if not self.access:
            env["HALLMARK_ACCESS__ENABLED"] = "false"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hallmark", "serve", "--listen", self.host],
            env=env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        verify = ca_context(self.ca)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()}")
            try:
                httpx.get(self.url + "/healthz", verify=verify, timeout=1).raise_for_status()
                return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def password(self) -> str:
        return (self.data_dir / "initial-admin-password").read_text().split()[0]


def peer_serial(port: int, ca: Path, server_name: str = "localhost") -> int:
    """The serial of the certificate a new TLS connection is handed."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ca_context(ca).wrap_socket(raw, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def serial_of(cert: Path) -> int:
    return x509.load_pem_x509_certificate(cert.read_bytes()).serial_number


def replace(src: Path, dest: Path) -> None:
    """Atomically, as a secret update or cert-manager does it."""
    tmp = dest.with_name(f".{dest.name}.new")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tls") / "certs"
    res = generate(out, "localhost,127.0.0.1")
    assert res.returncode == 0, res.stderr
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, tls_dir: Path) -> Iterator[TLSServer]:
    """Access control on: the token realm and the portal's login go through HTTPS too."""
    data = tmp_path_factory.mktemp("hallmark-tls") / "data"
    data.mkdir()
    srv = TLSServer(data, tls_dir, access=True).start()
    try:
        yield srv
    finally:
        srv.stop()


def skopeo(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo not installed (make test installs it)")
    return subprocess.run(
        ["skopeo", "--insecure-policy", *args], capture_output=True, text=True, check=check, timeout=120
    )


# -- hallmark tls generate ---------------------------------------------------------------------------
def test_generate_writes_ca_and_server_certificate(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    res = generate(out, "registry.example.com,localhost,10.1.2.3,::1", "--days", "30")
    assert res.returncode == 0, res.stderr
    for name in ("ca.key", "server.key"):
        assert (out / name).stat().st_mode & 0o777 == 0o600
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((out / "server.crt").read_bytes())
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["registry.example.com", "localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.1.2.3", "::1"]
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 30
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # The caBundle to paste into a webhook configuration, and the settings to use the files.
    bundle = res.stdout.strip().splitlines()[-1]
    assert base64.b64decode(bundle) == (out / "ca.crt").read_bytes()
    assert f'tls_cert = "{out / "server.crt"}"' in res.stdout
    assert f"HALLMARK_SERVER__TLS_KEY={out / 'server.key'}" in res.stdout


def test_generate_refuses_to_replace_keys_without_force_and_keeps_the_ca(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    assert generate(out, "localhost").returncode == 0
    before = {name: (out / name).read_bytes() for name in ("ca.crt", "ca.key", "server.crt", "server.key")}
    again = generate(out, "other.example")
    assert again.returncode == 2
    assert "server.key exists" in again.stderr and "--force" in again.stderr
    assert {name: (out / name).read_bytes() for name in before} == before
    forced = generate(out, "other.example", "--force")
    assert forced.returncode == 0, forced.stderr
    # A new server key and certificate from the same CA: clients and webhook caBundles stay valid.
    assert (out / "server.key").read_bytes() != before["server.key"]
    assert (out / "ca.crt").read_bytes() == before["ca.crt"] and (out / "ca.key").read_bytes() == before["ca.key"]
    assert "existing CA, reused" in forced.stdout
    new_ca = generate(out, "other.example", "--force", "--new-ca")
    assert new_ca.returncode == 0 and (out / "ca.crt").read_bytes() != before["ca.crt"]


@pytest.mark.parametrize("hosts", ["bad_host!", "", "a..b", "-x.example"])
def test_generate_rejects_bad_hosts(tmp_path: Path, hosts: str) -> None:
    res = generate(tmp_path / "certs", hosts)
    assert res.returncode == 2
    assert res.stderr.startswith("hallmark: --hosts:") and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "certs" / "server.key").exists()


# -- serving -----------------------------------------------------------------------------------------
def test_httpx_with_the_ca_and_https_token_realm(site: TLSServer) -> None:
    verify = ca_context(site.ca)
    for host in ("127.0.0.1", "localhost"):
        assert httpx.get(f"https://{host}:{site.port}/healthz", verify=verify).json()["status"] == "ok"
    # The token realm names the scheme the client used.
    resp = httpx.get(site.url + "/v2/", verify=verify)
    assert resp.status_code == 401
    assert f'realm="https://{site.host}/auth/token"' in resp.headers["www-authenticate"]
    # Without the CA the certificate is not trusted; plain HTTP gets no answer.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(site.url + "/healthz")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{site.host}/healthz")


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_tls_1_1_is_refused(site: TLSServer) -> None:
    ctx = ca_context(site.ca)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with socket.create_connection(("127.0.0.1", site.port), timeout=10) as raw, pytest.raises(ssl.SSLError):
        ctx.wrap_socket(raw, server_hostname="localhost")
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = ca_context(site.ca)
        ctx.minimum_version = ctx.maximum_version = version
        with socket.create_connection(("127.0.0.1", site.port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                assert tls.version() == version.name.replace("v1_", "v1.")


def test_portal_over_https_sets_secure_cookies(site: TLSServer) -> None:
    with httpx.Client(base_url=site.url, verify=ca_context(site.ca)) as c:
        resp = c.get("/login")
        assert resp.status_code == 200 and "<form" in resp.text
        cookies = resp.headers.get_list("set-cookie")
        assert cookies and all("Secure" in cookie for cookie in cookies)


def test_skopeo_copy_over_https_with_the_ca(site: TLSServer, tmp_path: Path) -> None:
    certs = tmp_path / "certs.d"  # skopeo trusts the *.crt of a folder; keys there would be read as client keys
    certs.mkdir()
    shutil.copyfile(site.ca, certs / "ca.crt")
    creds = f"admin:{site.password()}"
    # Larger than the raw-socket upload threshold and served by the blob sendfile response: both
    # must go through the TLS transport, never around it.
    layers = [tar_layer({"big.bin": os.urandom(10 << 20)}), tar_layer({"etc/hello": b"hello\n"})]
    src = tmp_path / "src"
    digest = write_oci_layout(src, "v1", layers)
    dest = f"docker://{site.host}/tls/app:v1"
    untrusted = skopeo("copy", "--dest-creds", creds, f"oci:{src}:v1", dest, check=False)
    assert untrusted.returncode != 0 and "certificate" in untrusted.stderr
    skopeo("copy", "--dest-cert-dir", str(certs), "--dest-creds", creds, f"oci:{src}:v1", dest)
    info = json.loads(skopeo("inspect", "--cert-dir", str(certs), "--creds", creds, dest).stdout)
    assert info["Digest"] == digest
    out = tmp_path / "out"
    skopeo("copy", "--src-cert-dir", str(certs), "--src-creds", creds, dest, f"oci:{out}:v1")
    for layer in layers:
        assert (out / "blobs" / "sha256" / sha256(layer).split(":")[1]).read_bytes() == layer


def test_replaced_certificate_reaches_new_connections_only(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    live = tmp_path / "live"
    assert generate(live, "localhost,127.0.0.1").returncode == 0
    data = tmp_path_factory.mktemp("hallmark-reload") / "data"
    data.mkdir()
    srv = TLSServer(data, live).start()
    try:
        first = serial_of(live / "server.crt")
        assert peer_serial(srv.port, srv.ca) == first
        ctx = ca_context(srv.ca)
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as kept:
                # Another certificate from the same CA, for another host name.
                staged = tmp_path / "staged"
                shutil.copytree(live, staged)
                res = generate(staged, "reloaded.test,127.0.0.1", "--force")
                assert res.returncode == 0, res.stderr
                second = serial_of(staged / "server.crt")
                # Half a rotation (the new key, the old certificate) is not loadable: the old pair stays.
                replace(staged / "server.key", live / "server.key")
                assert peer_serial(srv.port, srv.ca) == first
                replace(staged / "server.crt", live / "server.crt")
                assert peer_serial(srv.port, srv.ca, "reloaded.test") == second
                # The connection opened before keeps its certificate and still works.
                kept.sendall(f"GET /healthz HTTP/1.1\r\nHost: {srv.host}\r\nConnection: close\r\n\r\n".encode())
                reply = b""
                while chunk := kept.recv(65536):
                    reply += chunk
                assert reply.startswith(b"HTTP/1.1 200")
                der = kept.getpeercert(binary_form=True)
                assert der is not None and x509.load_der_x509_certificate(der).serial_number == first
        assert "TLS certificate reloaded" in srv.log.read_text()
        assert "does not belong to the certificate" in srv.log.read_text()
    finally:
        srv.stop()


def test_workers_share_the_port_and_each_reloads(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> None:
    live = tmp_path / "live"
    assert generate(live, "localhost,127.0.0.1").returncode == 0
    data = tmp_path_factory.mktemp("hallmark-workers") / "data"
    data.mkdir()
    srv = TLSServer(data, live, workers=2).start()
    try:
        assert {peer_serial(srv.port, srv.ca) for _ in range(20)} == {serial_of(live / "server.crt")}
        staged = tmp_path / "staged"
        shutil.copytree(live, staged)
        assert generate(staged, "localhost,127.0.0.1", "--force").returncode == 0
        replace(staged / "server.key", live / "server.key")
        replace(staged / "server.crt", live / "server.crt")
        # The kernel spreads new connections over both workers; every one sees the new certificate.
        assert {peer_serial(srv.port, srv.ca) for _ in range(20)} == {serial_of(staged / "server.crt")}
        assert srv.log.read_text().count("Hallmark serving") == 1
    finally:
        srv.stop()


# -- start errors --------------------------------------------------------------------------------------
def serve_error(data: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    res = hallmark(data, "serve", "--listen", "127.0.0.1:0", env=env, timeout=60)
    assert "serving" not in res.stdout
    return res


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing-cert", "TLS certificate {dir}/nope.crt does not exist"),
        ("missing-key", "TLS key {dir}/nope.key does not exist"),
        ("directory", "TLS certificate {dir} is a directory, not a file"),
        ("not-pem", "TLS certificate {dir}/ca.key is not a PEM certificate"),
        ("key-not-pem", "TLS key {dir}/server.crt is not a PEM private key"),
        ("mismatch", "TLS key {dir}/ca.key does not belong to the certificate {dir}/server.crt"),
    ],
)
def test_bad_tls_files_stop_the_start_with_one_line(tls_dir: Path, tmp_path: Path, setup: str, message: str) -> None:
    cert, key = tls_dir / "server.crt", tls_dir / "server.key"
    cert, key = {
        "missing-cert": (tls_dir / "nope.crt", key),
        "missing-key": (cert, tls_dir / "nope.key"),
        "directory": (tls_dir, key),
        "not-pem": (tls_dir / "ca.key", key),
        "key-not-pem": (cert, cert),
        "mismatch": (cert, tls_dir / "ca.key"),
    }[setup]
    res = serve_error(tmp_path, {"HALLMARK_SERVER__TLS_CERT": str(cert), "HALLMARK_SERVER__TLS_KEY": str(key)})
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == ["hallmark: " + message.format(dir=tls_dir)]


def test_tls_cert_without_key_is_a_configuration_error(tls_dir: Path, tmp_path: Path) -> None:
    res = serve_error(tmp_path, {"HALLMARK_SERVER__TLS_CERT": str(tls_dir / "server.crt")})
    assert res.returncode == 2
    assert "tls_cert and tls_key must be set together" in res.stderr
    assert "Traceback" not in res.stderr
