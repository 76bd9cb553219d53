"""A ready trust policy and trust store for a generated key, in the layout notation uses too.

``hallmark key generate`` writes them next to the key so that ``hallmark verify`` (and the server's
``[signing] trust_policy``/``trust_store``) and ``notation verify`` accept what the key signs with no
hand-written JSON: ``trustpolicy.json`` plus ``truststore/x509/ca/<name>/ca.crt``, the same folder
shape as notation's configuration directory (``~/.config/notation/``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from cryptography import x509

from hallmark.signing.keys import write_certificates

POLICY_FILE = "trustpolicy.json"
STORE_DIR = "truststore"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")  # notation's trust store names


def valid_store_name(name: str) -> bool:
    return bool(_NAME.match(name))


def trust_policy(store_name: str, identity: str, scopes: list[str] | None = None) -> dict[str, object]:
    """One strict policy: signatures chaining to the ``ca:<store_name>`` store, by ``identity`` only."""
    return {
        "version": "1.0",
        "trustPolicies": [
            {
                "name": store_name,
                "registryScopes": scopes or ["*"],
                "signatureVerification": {"level": "strict"},
                "trustStores": [f"ca:{store_name}"],
                "trustedIdentities": [identity],
            }
        ],
    }


def write_trust_config(
    out: Path, ca_cert: x509.Certificate, leaf_cert: x509.Certificate, store_name: str
) -> dict[str, Path]:
    """Write ``trustpolicy.json`` and ``truststore/x509/ca/<store_name>/ca.crt`` under ``out``."""
    if not valid_store_name(store_name):
        raise ValueError(f"trust store name {store_name!r}: use letters, digits, '.', '_' or '-'")
    store = out / STORE_DIR
    ca_dir = store / "x509" / "ca" / store_name
    ca_dir.mkdir(parents=True, exist_ok=True)
    write_certificates(ca_dir / "ca.crt", [ca_cert])
    identity = f"x509.subject:{leaf_cert.subject.rfc4514_string()}"
    policy = out / POLICY_FILE
    policy.write_text(json.dumps(trust_policy(store_name, identity), indent=2) + "\n", encoding="utf-8")
    return {"policy": policy, "store": store, "store_ca": ca_dir / "ca.crt"}
