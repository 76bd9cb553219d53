"""Test helpers: SLSA statements, DSSE envelopes signed here, and oras-style referrer manifests."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from hallmark.provenance.dsse import DSSE_MEDIA_TYPE, INTOTO_PAYLOAD_TYPE, pae
from tests.ocihelp import EMPTY_JSON, OCI_MANIFEST, descriptor, image, sha256, tar_layer

SLSA_V1 = "https://slsa.dev/provenance/v1"
COMMIT_A = "a" * 40
COMMIT_B = "b" * 40


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def write_public_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def slsa_v1(digest: str, commit: str = COMMIT_B, repo: str = "https://github.com/acme/shop") -> dict[str, Any]:
    """A SLSA v1 statement as GitHub's build-provenance action writes it."""
    return {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "registry.example/acme/shop", "digest": {"sha256": digest.split(":", 1)[1]}}],
        "predicateType": SLSA_V1,
        "predicate": {
            "buildDefinition": {
                "buildType": "https://actions.github.io/buildtypes/workflow/v1",
                "externalParameters": {
                    "workflow": {"ref": "refs/heads/main", "repository": repo, "path": ".github/workflows/build.yml"}
                },
                "internalParameters": {"github": {"event_name": "push"}},
                "resolvedDependencies": [{"uri": f"git+{repo}@refs/heads/main", "digest": {"gitCommit": commit}}],
            },
            "runDetails": {
                "builder": {"id": "https://github.com/acme/shop/.github/workflows/build.yml@refs/heads/main"},
                "metadata": {"invocationId": f"{repo}/actions/runs/4242/attempts/1"},
            },
        },
    }


def envelope(statement: dict[str, Any], key: ec.EllipticCurvePrivateKey | None, keyid: str = "") -> bytes:
    payload = json.dumps(statement).encode()
    sigs = []
    if key is not None:
        sig = key.sign(pae(INTOTO_PAYLOAD_TYPE, payload), ec.ECDSA(hashes.SHA256()))
        sigs.append({"keyid": keyid, "sig": base64.b64encode(sig).decode()})
    doc = {"payloadType": INTOTO_PAYLOAD_TYPE, "payload": base64.b64encode(payload).decode(), "signatures": sigs}
    return json.dumps(doc).encode()


def referrer(subject_manifest: bytes, layer: bytes, media_type: str = DSSE_MEDIA_TYPE) -> bytes:
    """An oras-style artifact manifest: empty config, one attestation layer, ``subject`` set."""
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": media_type,
            "config": descriptor(EMPTY_JSON, b"{}"),
            "layers": [descriptor(media_type, layer, annotations={"in-toto.io/predicate-type": SLSA_V1})],
            "subject": descriptor(OCI_MANIFEST, subject_manifest),
        }
    ).encode()


def annotated_image(name: str, commit: str = COMMIT_A) -> tuple[bytes, bytes, bytes]:
    """(layer, config, manifest) of an image whose annotations and labels name its source."""
    layer = tar_layer({"app.txt": name.encode()})
    labels = {
        "org.opencontainers.image.source": "git@github.com:acme/shop.git",
        "org.opencontainers.image.revision": commit,
        "org.opencontainers.image.version": "1.2.3",
    }
    config, manifest = image(
        [layer],
        config_extra={"config": {"Labels": labels}},
        annotations={
            "org.opencontainers.image.source": "https://github.com/acme/shop/",
            "org.opencontainers.image.revision": commit,
            "org.opencontainers.image.created": "2026-12-01T10:00:00Z",
            "org.opencontainers.image.vendor": "Acme",
            "org.opencontainers.image.base.name": "docker.io/library/debian:12",
        },
    )
    return layer, config, manifest


__all__ = ["COMMIT_A", "COMMIT_B", "SLSA_V1", "annotated_image", "envelope", "new_key", "referrer", "sha256"]
