"""Fixtures for the content-check tests.

Real rule data comes from ``<repo root>/../shared/data`` (read-only, never copied); tests that
need it skip when it is absent. Fake secrets and the EICAR string are built at run time so no
secret-shaped literal or test-virus file is committed.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hallmark.content import ContentScanner, RuleBundle, load_rules

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT.parent / "shared" / "data"


def eicar() -> bytes:
    """The EICAR test string, assembled so the source file is not itself a test virus."""
    head = "X5O!P%@AP[4\\PZX54(P^)7CC)7}$"
    return (head + "EICAR-STANDARD-ANTIVIRUS-" + "TEST-FILE!$H+H*").encode()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "secrets" / "gitleaks" / "gitleaks.toml").is_file():
        pytest.skip(f"shared rule data not found at {DATA_DIR}")
    return DATA_DIR


@pytest.fixture(scope="session")
def rules(data_dir: Path) -> RuleBundle:
    return load_rules(data_dir)


@pytest.fixture
def scanner(rules: RuleBundle) -> ContentScanner:
    return ContentScanner(rules)


@dataclass(frozen=True)
class FakeSecrets:
    aws_key_id: str
    aws_secret: str
    github: str
    slack: str
    jwt: str
    db_password: str
    generic: str
    pem: str


@pytest.fixture(scope="session")
def fake() -> FakeSecrets:
    rng = random.Random(20261125)
    alnum = string.ascii_letters + string.digits

    def pick(alphabet: str, n: int) -> str:
        return "".join(rng.choice(alphabet) for _ in range(n))

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return FakeSecrets(
        aws_key_id="AKIA" + pick(string.ascii_uppercase + "234567", 16),
        aws_secret=pick(alnum + "/+", 40),
        github="ghp_" + pick(alnum, 36),
        slack="xoxb-" + pick(string.digits, 12) + "-" + pick(string.digits, 12) + "-" + pick(alnum, 24),
        jwt=jwt.encode({"sub": "svc-" + pick(alnum, 8), "iat": 1_700_000_000}, pick(alnum, 32), algorithm="HS256"),
        db_password=pick(alnum, 18),
        generic=pick(alnum, 32),
        pem=pem,
    )
