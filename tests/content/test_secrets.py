"""Secret detection with the real gitleaks rules: planted fakes are found, clean text is not,
and a finding never carries the secret."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sysconfig
import zipfile
from pathlib import Path

import pytest

from hallmark.content import ContentScanner, Finding, RuleBundle, load_rules
from hallmark.content.secrets import shannon_entropy

from .conftest import FakeSecrets


def _scan_text(scanner: ContentScanner, path: str, text: str) -> list[Finding]:
    return scanner.scan_file(path, 2, "sha256:" + "ab" * 32, text.encode()).findings


def _planted(fake: FakeSecrets) -> dict[str, tuple[str, dict[str, tuple[str, int]]]]:
    """path -> (content, {secret: (expected rule id, line)})."""
    return {
        "root/.aws/credentials": (
            f"[default]\naws_access_key_id = {fake.aws_key_id}\naws_secret_access_key = {fake.aws_secret}\n",
            {fake.aws_key_id: ("aws-access-token", 2), fake.aws_secret: ("aws-secret-access-key", 3)},
        ),
        "app/.env": (
            f"# deploy settings\nGITHUB_TOKEN={fake.github}\nSLACK_BOT={fake.slack}\n",
            {fake.github: ("github-pat", 2), fake.slack: ("slack-bot-token", 3)},
        ),
        "app/config.yaml": (
            f"db:\n  url: postgres://app:{fake.db_password}@db.internal:5432/app\nsession: {fake.jwt}\n",
            {fake.db_password: ("database-url-password", 2), fake.jwt: ("jwt", 3)},
        ),
        "srv/app/settings.py": (
            f'DEBUG = False\nAPI_SECRET = "{fake.generic}"\n',
            {fake.generic: ("generic-api-key", 2)},
        ),
        "etc/ssl/private/server.key": (fake.pem, {fake.pem.strip(): ("private-key", 1)}),
    }


def test_planted_secrets_found_with_location_and_fingerprint(scanner: ContentScanner, fake: FakeSecrets) -> None:
    for path, (content, expected) in _planted(fake).items():
        findings = _scan_text(scanner, path, content)
        got = {(f.rule_id, f.line, f.fingerprint) for f in findings}
        want = {(rule, line, hashlib.sha256(secret.encode()).hexdigest()) for secret, (rule, line) in expected.items()}
        assert got == want, (path, [f.to_dict() for f in findings])
        for f in findings:
            assert f.kind == "secret" and f.engine == "gitleaks"
            assert f.path == "/" + path and f.layer_index == 2 and f.layer_digest == "sha256:" + "ab" * 32
            assert f.preview and "********" in f.preview
            assert f.severity in {"critical", "high", "medium"}


def test_findings_never_contain_the_secret(scanner: ContentScanner, fake: FakeSecrets) -> None:
    for path, (content, expected) in _planted(fake).items():
        dumped = json.dumps([f.to_dict() for f in _scan_text(scanner, path, content)])
        for secret in expected:
            for part in secret.splitlines():
                if len(part) >= 8 and "-----" not in part:
                    assert part not in dumped, (path, "leaked")
            # not even a long prefix of a single-line secret
            if "\n" not in secret:
                assert secret[:8] not in dumped


def test_two_secrets_on_one_line_both_masked(scanner: ContentScanner, fake: FakeSecrets) -> None:
    line = f"export GH={fake.github} SLACK={fake.slack}\n"
    findings = _scan_text(scanner, "app/run.sh", line)
    assert {f.rule_id for f in findings} == {"github-pat", "slack-bot-token"}
    for f in findings:
        assert fake.github[4:] not in (f.preview or "") and fake.slack[5:] not in (f.preview or "")


def test_clean_ordinary_text_files_have_no_findings(scanner: ContentScanner, tmp_path: Path) -> None:
    """Python's standard library and Debian's licence texts, copied under a neutral app path
    (so no path allowlist applies): the full gitleaks rule set must report nothing."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    sources = (
        sorted(stdlib.glob("*.py")) + sorted((stdlib / "email").glob("*.py")) + sorted((stdlib / "json").glob("*.py"))
    )
    sources += sorted(Path("/usr/share/common-licenses").glob("*"))[:20]
    sources += sorted(Path("/usr/share/doc").glob("*/copyright"))[:100]
    clean = tmp_path / "clean"
    for i, src in enumerate(p for p in sources if p.is_file()):
        dst = clean / f"{i:04d}-{src.name}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
    files = sorted(clean.iterdir())
    assert len(files) > 250
    findings: list[Finding] = []
    for f in files:
        findings += scanner.scan_file(f"app/src/{f.name}", 0, "sha256:00", f.read_bytes()).findings
    assert [f.message for f in findings] == []


def test_inline_allow_and_example_keys_are_not_reported(scanner: ContentScanner, fake: FakeSecrets) -> None:
    text = (
        f"token = {fake.github}  # gitleaks:allow\n"
        "aws_access_key_id = AKIAIOSFODNN7EXAMPLE\n"  # AWS's documented example key (rule allowlist)
        'password = "${DB_PASSWORD}"\n'  # a reference, not a value (global allowlist)
    )
    assert _scan_text(scanner, "app/notes.txt", text) == []


def test_low_entropy_generic_value_is_not_reported(scanner: ContentScanner) -> None:
    value = "aaaaabbbbbaaaaabbbbb1"
    assert shannon_entropy(value) <= 3.5
    assert _scan_text(scanner, "app/settings.py", f'API_SECRET = "{value}"\n') == []


def test_global_and_default_path_allowlists(scanner: ContentScanner, fake: FakeSecrets) -> None:
    content = f"GITHUB_TOKEN={fake.github}\n"
    assert _scan_text(scanner, "app/node_modules/pkg/.env", content) == []  # gitleaks global allowlist
    assert _scan_text(scanner, "usr/share/doc/pkg/examples/env", content) == []  # Hallmark default
    assert _scan_text(scanner, "usr/lib/node/pkg/test/fixtures/env", content) == []  # package test fixture
    assert len(_scan_text(scanner, "app/.env", content)) == 1


def test_path_allowlist_is_configurable(data_dir: Path, fake: FakeSecrets) -> None:
    strict = ContentScanner(load_rules(data_dir, path_allowlist=(), yara=False))
    found = strict.scan_file("usr/share/doc/pkg/examples/env", 0, "d", f"T={fake.github}\n".encode()).findings
    assert [f.rule_id for f in found] == ["github-pat"]


def test_specific_rule_wins_over_generic(scanner: ContentScanner, fake: FakeSecrets) -> None:
    findings = _scan_text(scanner, "app/app.ini", f"api_token = {fake.github}\n")
    assert [f.rule_id for f in findings] == ["github-pat"]


def test_path_only_rule_reports_key_store_files(scanner: ContentScanner) -> None:
    out = scanner.scan_file("app/certs/client.p12", 0, "d", b"\x30\x82\x00\x00binary-ish\x00")
    assert [f.rule_id for f in out.findings] == ["pkcs12-file"]
    assert out.findings[0].fingerprint == hashlib.sha256(b"\x30\x82\x00\x00binary-ish\x00").hexdigest()


def test_secret_inside_jar_member(scanner: ContentScanner, fake: FakeSecrets) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("BOOT-INF/classes/application.properties", f"spring.datasource.password=x\ngh.token={fake.github}\n")
    out = scanner.scan_file("app/app.jar", 1, "d", buf.getvalue())
    assert [(f.rule_id, f.path, f.line) for f in out.findings] == [
        ("github-pat", "/app/app.jar!/BOOT-INF/classes/application.properties", 2)
    ]


def _bundle(tmp_path: Path, toml: str) -> RuleBundle:
    (tmp_path / "secrets").mkdir(parents=True)
    (tmp_path / "secrets" / "custom.toml").write_text(toml)
    return load_rules(tmp_path, include_builtin=False)


def test_keyword_prefilter_gates_rules(tmp_path: Path) -> None:
    bundle = _bundle(
        tmp_path,
        """
[[rules]]
id = "needs-keyword"
description = "demo"
regex = '''zz-[0-9]{6}'''
keywords = ["acme"]
""",
    )
    s = ContentScanner(bundle)
    assert s.scan_file("a.txt", 0, "d", b"value zz-123456\n").findings == []
    hit = s.scan_file("a.txt", 0, "d", b"ACME value zz-123456\n").findings  # keywords match case-insensitively
    assert [f.rule_id for f in hit] == ["needs-keyword"]


def test_allowlist_semantics_stopwords_and_condition(tmp_path: Path) -> None:
    bundle = _bundle(
        tmp_path,
        """
[allowlist]
stopwords = ["sample"]

[[rules]]
id = "tok"
description = "demo token"
regex = '''tok_([a-z0-9]{8,})'''
keywords = ["tok_"]

[[rules.allowlists]]
condition = "AND"
paths = ['''\\.md$''']
regexTarget = "line"
regexes = ['''^#''']

[[allowlists]]
targetRules = ["tok"]
regexes = ['''^0+$''']
""",
    )
    s = ContentScanner(bundle)

    def rules_in(path: str, text: str) -> list[str]:
        return [f.rule_id for f in s.scan_file(path, 0, "d", text.encode()).findings]

    assert rules_in("a.txt", "tok_ab12cd34ef\n") == ["tok"]
    assert rules_in("a.txt", "tok_sample12345\n") == []  # global stopword
    assert rules_in("a.txt", "tok_00000000\n") == []  # targeted allowlist
    assert rules_in("README.md", "# tok_ab12cd34ef\n") == []  # AND: path and line both hit
    assert rules_in("README.md", "x tok_ab12cd34ef\n") == ["tok"]  # AND: line does not hit
    assert rules_in("notes.txt", "# tok_ab12cd34ef\n") == ["tok"]  # AND: path does not hit


def test_broken_secret_rule_file_is_an_error(tmp_path: Path) -> None:
    from hallmark.content import RulesError

    with pytest.raises(RulesError, match="bad regex"):
        _bundle(tmp_path, "[[rules]]\nid = 'x'\nregex = '''(unclosed'''\n")


def test_preview_masks_nearby_password_assignments(scanner: ContentScanner, fake: FakeSecrets) -> None:
    """A credential that no rule matched but that sits next to a finding is masked too."""
    findings = _scan_text(scanner, "app/run.sh", f"DB_PASSWORD=hunter2hunter2 TOKEN={fake.github}\n")
    assert [f.rule_id for f in findings] == ["github-pat"]
    assert "hunter2" not in (findings[0].preview or "")


def test_other_credential_kinds_from_the_issue(scanner: ContentScanner) -> None:
    """GCP service-account JSON, OpenSSH and PGP private keys, Azure storage key and SAS, GitLab
    and Stripe tokens: each found by the expected rule (values generated here)."""
    import base64
    import random
    import string

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    rng = random.Random(99)
    alnum = string.ascii_letters + string.digits

    def pick(alphabet: str, n: int) -> str:
        return "".join(rng.choice(alphabet) for _ in range(n))

    pkcs8 = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        .decode()
    )
    openssh = (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
        .decode()
    )
    account_key = base64.b64encode(bytes(rng.getrandbits(8) for _ in range(64))).decode()
    cases = {
        "gcp-sa.json": (
            json.dumps(
                {"type": "service_account", "private_key_id": pick("0123456789abcdef", 40), "private_key": pkcs8}
            ),
            "private-key",
        ),
        "id_ed25519": (openssh, "private-key"),
        "signing.asc": (
            "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n"
            + "\n".join(pick(alnum, 64) for _ in range(4))
            + "\n-----END PGP PRIVATE KEY BLOCK-----\n",
            "private-key",
        ),
        "azure.env": (
            f"CONN=DefaultEndpointsProtocol=https;AccountName=demo;AccountKey={account_key};EndpointSuffix=x\n",
            "azure-storage-account-key",
        ),
        "sas.txt": (
            f"u = https://d.blob.core.windows.net/c/f?sv=2022-11-02&sp=r&se=2030-01-01&sig={pick(alnum, 43)}%3D\n",
            "azure-sas-token",
        ),
        "gitlab.env": ("GL=glpat-" + pick(alnum, 20) + "\n", "gitlab-pat"),
        "stripe.env": ("STRIPE=sk_" + "live_" + pick(alnum, 24) + "\n", "stripe-access-token"),
    }
    for name, (content, rule) in cases.items():
        findings = _scan_text(scanner, f"app/{name}", content)
        assert [f.rule_id for f in findings] == [rule], name


def test_ascii_bytes_are_searched_as_the_decoded_text_is(data_dir: Path, fake: FakeSecrets) -> None:
    """An all-ASCII file is searched as bytes (no decoding unless something matches): the same
    matches, offsets, lines and secrets as its text."""
    ruleset = load_rules(data_dir, yara=False).secrets
    text = (
        "# settings\n"
        f"AWS_ACCESS_KEY_ID={fake.aws_key_id}\naws_secret_access_key = {fake.aws_secret}\n"
        f"token: {fake.github}\nslack = '{fake.slack}'\nauth: Bearer {fake.jwt}\n"
        f"DATABASE_URL=postgres://app:{fake.db_password}@db:5432/app\n"
        f"api_key = {fake.generic}  # gitleaks:allow\nsecret_key = {fake.generic}\n"
        f"{fake.pem}\n"
        "password = changeme\n"
    )
    assert text.isascii()
    as_text = ruleset.find(text, "/app/.env")
    as_bytes = ruleset.find(text.encode(), "/app/.env")
    assert len(as_text) >= 6
    assert [(m.rule.id, m.secret, m.start, m.end, m.line) for m in as_bytes] == [
        (m.rule.id, m.secret, m.start, m.end, m.line) for m in as_text
    ]
    assert ruleset.find(b"nothing to see here\n" * 100, "/app/readme") == []
