"""Image-configuration checks on crafted OCI config documents and tar mode bits."""

from __future__ import annotations

import json
import stat
from typing import Any

from hallmark.content import CHECKS, ContentScanner, Finding

from .conftest import FakeSecrets


def _config(**cfg: Any) -> dict[str, Any]:
    history = cfg.pop("history", [])
    return {"architecture": "amd64", "os": "linux", "config": cfg, "history": history, "rootfs": {}}


def _ids(findings: list[Finding], kind: str = "config") -> list[str]:
    return sorted(f.rule_id for f in findings if f.kind == kind)


HEALTHY = {"Test": ["CMD", "true"], "Interval": 30_000_000_000}


def test_catalog_is_complete() -> None:
    assert set(CHECKS) == {
        "root-user",
        "secret-in-env",
        "secret-in-build-arg",
        "add-remote-url",
        "setuid-file",
        "setgid-file",
        "world-writable",
        "ssh-port-exposed",
        "no-healthcheck",
        "latest-base-image",
    }
    cis = {c.id: c.cis_id for c in CHECKS.values()}
    assert cis["root-user"] == "4.1" and cis["no-healthcheck"] == "4.6" and cis["setuid-file"] == "4.8"
    assert cis["add-remote-url"] == "4.9" and cis["secret-in-env"] == "4.10"
    for c in CHECKS.values():
        assert c.title and c.description and c.remediation and c.severity in {"high", "medium", "low"}
    assert CHECKS["no-healthcheck"].severity == "low"


def test_well_configured_image_has_no_findings(scanner: ContentScanner) -> None:
    doc = _config(
        User="10001:10001",
        Env=[
            "PATH=/usr/local/bin:/usr/bin",
            "LANG=C.UTF-8",
            "GPG_KEY=A035C8C19219BA821ECEA86B64E628F8D684696D",
            "DB_PASSWORD_FILE=/run/secrets/db",
        ],
        ExposedPorts={"8080/tcp": {}},
        Healthcheck=HEALTHY,
        Labels={"org.opencontainers.image.base.name": "docker.io/library/debian:12-slim"},
        history=[
            {"created_by": "/bin/sh -c #(nop) ADD file:5a6b in / "},
            {"created_by": "RUN /bin/sh -c apt-get update && apt-get install -y curl # buildkit"},
            {"created_by": "COPY app /app # buildkit"},
        ],
    )
    out = scanner.scan_config(doc)
    assert [f.message for f in out.findings] == [] and out.skipped == []


def test_root_user_no_healthcheck_and_ssh(scanner: ContentScanner) -> None:
    for user in (None, "", "root", "0", "0:0", "root:staff"):
        cfg: dict[str, Any] = {"ExposedPorts": {"22/tcp": {}, "80/tcp": {}}}
        if user is not None:
            cfg["User"] = user
        out = scanner.scan_config(_config(**cfg))
        assert _ids(out.findings) == ["no-healthcheck", "root-user", "ssh-port-exposed"], user
    disabled = scanner.scan_config(_config(User="app", Healthcheck={"Test": ["NONE"]}))
    assert _ids(disabled.findings) == ["no-healthcheck"]
    f = disabled.findings[0]
    assert f.severity == "low" and f.cis_id == "4.6" and f.remediation and f.description


def test_secrets_in_env_by_name_and_by_rule(scanner: ContentScanner, fake: FakeSecrets) -> None:
    doc = _config(
        User="app",
        Healthcheck=HEALTHY,
        Env=["PATH=/usr/bin", "DB_PASSWORD=hunter2hunter2", f"CI_TOKEN_VALUE={fake.github}", "API_KEY=$API_KEY"],
    )
    out = scanner.scan_config(doc)
    by_loc = {(f.kind, f.rule_id, f.location) for f in out.findings}
    assert by_loc == {
        ("config", "secret-in-env", "config.Env[1]"),  # name heuristic
        ("config", "secret-in-env", "config.Env[2]"),  # gitleaks rule hit in ENV
        ("secret", "github-pat", "config.Env[2]"),
    }
    dumped = json.dumps([f.to_dict() for f in out.findings])
    assert "hunter2hunter2" not in dumped and fake.github[4:] not in dumped
    assert all(f.cis_id == "4.10" for f in out.findings if f.kind == "config")


def test_build_args_env_and_add_in_history(scanner: ContentScanner, fake: FakeSecrets) -> None:
    doc = _config(
        User="app",
        Healthcheck=HEALTHY,
        history=[
            {"created_by": "ADD https://example.invalid/tool.tar.gz /opt/ # buildkit"},
            {"created_by": "/bin/sh -c #(nop) ADD url:0af3d1e in /usr/local/bin/tool"},
            {"created_by": f"RUN |2 DEPLOY_TOKEN=s3cr3t-build-value GH={fake.github} /bin/sh -c make # buildkit"},
            {"created_by": "/bin/sh -c #(nop)  ENV ADMIN_PASSWORD=letmein123"},
            {"created_by": "ENV MODE=prod # buildkit"},
            {"created_by": "ADD https://deploy:pw-in-url-123@example.invalid/a.tgz /a # buildkit"},
        ],
    )
    out = scanner.scan_config(doc)
    got = sorted((f.kind, f.rule_id, f.location) for f in out.findings)
    assert got == [
        ("config", "add-remote-url", "history[0].created_by"),
        ("config", "add-remote-url", "history[1].created_by"),
        ("config", "add-remote-url", "history[5].created_by"),
        ("config", "secret-in-build-arg", "history[2].created_by"),
        ("config", "secret-in-env", "history[3].created_by"),
        ("secret", "github-pat", "history[2].created_by"),
    ]
    dumped = json.dumps([f.to_dict() for f in out.findings])
    assert "s3cr3t-build-value" not in dumped and "letmein123" not in dumped and "pw-in-url-123" not in dumped


def test_latest_base_image_from_labels_and_history(scanner: ContentScanner) -> None:
    for ref, latest in [
        ("debian", True),
        ("docker.io/library/debian:latest", True),
        ("registry:5000/team/base", True),
        ("registry:5000/team/base:1.4", False),
        ("debian@sha256:" + "0" * 64, False),
    ]:
        out = scanner.scan_config(
            _config(User="app", Healthcheck=HEALTHY, Labels={"org.opencontainers.image.base.name": ref})
        )
        assert _ids(out.findings) == (["latest-base-image"] if latest else []), ref
    out = scanner.scan_config(
        _config(User="app", Healthcheck=HEALTHY, history=[{"created_by": "x", "comment": "FROM alpine:latest"}])
    )
    assert [(f.rule_id, f.location) for f in out.findings] == [("latest-base-image", "history[0].comment")]


def test_file_mode_checks(scanner: ContentScanner) -> None:
    def rules_for(mode: int, is_dir: bool = False) -> list[str]:
        if is_dir:
            return _ids(scanner.scan_metadata("var/x", 0, "d", mode, is_dir=True))
        return _ids(scanner.scan_file("usr/bin/x", 0, "d", b"#!/bin/sh\n", mode=mode).findings)

    assert rules_for(0o755) == []
    assert rules_for(0o4755) == ["setuid-file"]
    assert rules_for(0o2755) == ["setgid-file"]
    assert rules_for(0o6755) == ["setgid-file", "setuid-file"]
    assert rules_for(0o666) == ["world-writable"]
    assert rules_for(0o1777, is_dir=True) == []  # /tmp-style: sticky
    assert rules_for(0o777, is_dir=True) == ["world-writable"]
    f = scanner.scan_file("usr/bin/su", 4, "sha256:l4", b"\x7fELF", mode=0o4755).findings[0]
    assert (f.path, f.layer_index, f.cis_id, f.severity) == ("/usr/bin/su", 4, "4.8", "low")
    assert f.preview == stat.filemode(0o4755 | stat.S_IFREG).join(["mode ", ""])


def test_malformed_config_documents_do_not_raise(scanner: ContentScanner) -> None:
    for doc in [
        {},
        {"config": None, "history": None},
        {"config": {"Env": ["NOEQUALS", 5, None], "Labels": {"a": None}, "ExposedPorts": ["22/tcp"]}},
        {"config": {"Healthcheck": "yes"}, "history": ["not-a-dict", {"created_by": None}]},
    ]:
        out = scanner.scan_config(doc)  # type: ignore[arg-type]
        assert all(isinstance(f, Finding) for f in out.findings)
    # a lone surrogate (valid JSON "\\ud800") must not stop the secret rules
    out = scanner.scan_config({"config": {"Env": ["NOTE=caf\ud800", "API_TOKEN=zQ8vW2xK9mP4rT7y"]}})
    assert out.skipped == []
    assert [(f.rule_id, f.location) for f in out.findings if f.rule_id == "secret-in-env"] == [
        ("secret-in-env", "config.Env[1]")
    ]
