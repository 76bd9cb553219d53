"""The referrers tag schema (``<name>:sha256-<hex>``), served as an index computed from the referrers API.

notation 1.0.x (and cosign/oras without referrers-API support) discover signatures only through
that tag. No notation binary is installable offline here (neither Debian nor PyPI ship it), and
oras-py has no referrers support, so the client side is played in raw HTTP, request for request,
the way notation 1.0 drives oras-go with the referrers capability set to false.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from hallmark.app import Hallmark
from hallmark.config import load_config
from hallmark.metadata.store import ManifestRecord
from hallmark.registry.errors import RegistryError
from hallmark.registry.service import ArtifactLayer, attach_artifact
from tests.ocihelp import EMPTY_JSON, OCI_INDEX, OCI_MANIFEST, descriptor, push_blob, push_image, push_manifest, sha256

NOTATION_SIG = "application/vnd.cncf.notary.signature"
SBOM = "application/vnd.example.sbom"
# What oras-go (notation 1.0's registry client) sends when it fetches a manifest by tag.
ORAS_ACCEPT = ", ".join(
    [
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        OCI_MANIFEST,
        OCI_INDEX,
    ]
)


def push_referrer(
    client: httpx.Client, repo: str, subject: str, artifact_type: str, payload: bytes, subject_size: int = 100
) -> dict:
    """Push an artifact manifest whose subject is ``subject``, by digest (as notation does); its descriptor."""
    push_blob(client, repo, b"{}")
    push_blob(client, repo, payload)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": descriptor(EMPTY_JSON, b"{}"),
            "layers": [descriptor("application/jose+json", payload)],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": subject_size},
            "annotations": {"io.cncf.notary.x509chain.thumbprint#S256": "[]"},
        }
    ).encode()
    r = push_manifest(client, repo, sha256(manifest), manifest)
    assert r.status_code == 201, r.text
    return {"mediaType": OCI_MANIFEST, "digest": sha256(manifest), "size": len(manifest)}


def referrers_tag(digest: str) -> str:
    return digest.replace(":", "-")


def test_referrers_tag_is_the_referrers_api_index_and_always_current(client: httpx.Client) -> None:
    repo = "reftag/app"
    push_image(client, repo, "v1")
    # A subject that is never pushed (allowed by OCI 1.1), so the scan pipeline attaches
    # no reports to it while the test counts referrers.
    subject = sha256(b"reftag subject")
    tag = referrers_tag(subject)
    # No referrers yet: what fallback clients take as "none" (GET and HEAD alike).
    r = client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": ORAS_ACCEPT})
    assert r.status_code == 404 and r.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"
    assert client.head(f"/v2/{repo}/manifests/{tag}").status_code == 404

    sig = push_referrer(client, repo, subject, NOTATION_SIG, b"signature one")
    sbom = push_referrer(client, repo, subject, SBOM, b"an sbom")
    r = client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": ORAS_ACCEPT})
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == OCI_INDEX
    assert r.headers["Docker-Content-Digest"] == sha256(r.content)
    api = client.get(f"/v2/{repo}/referrers/{subject}")
    assert r.json() == api.json()
    index = r.json()
    assert index["mediaType"] == OCI_INDEX and index["schemaVersion"] == 2
    assert {(m["digest"], m["artifactType"]) for m in index["manifests"]} == {
        (sig["digest"], NOTATION_SIG),
        (sbom["digest"], SBOM),
    }
    h = client.head(f"/v2/{repo}/manifests/{tag}")
    assert h.status_code == 200 and h.content == b""
    assert h.headers["Docker-Content-Digest"] == sha256(r.content)
    assert int(h.headers["Content-Length"]) == len(r.content)
    # Computed, not stored: the tag list stays the tags clients pushed.
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["v1"]

    # Always current: a new referrer shows at once, a deleted one goes.
    later = push_referrer(client, repo, subject, NOTATION_SIG, b"signature two")
    r2 = client.get(f"/v2/{repo}/manifests/{tag}")
    assert later["digest"] in {m["digest"] for m in r2.json()["manifests"]}
    assert r2.headers["Docker-Content-Digest"] != r.headers["Docker-Content-Digest"]
    for d in (sig, sbom, later):
        assert client.delete(f"/v2/{repo}/manifests/{d['digest']}").status_code == 202
    assert client.get(f"/v2/{repo}/manifests/{tag}").status_code == 404
    # A digest-looking tag for another algorithm is an ordinary tag.
    assert client.get(f"/v2/{repo}/manifests/sha512-{'a' * 64}").status_code == 404


def test_notation_1_0_signs_and_verifies_through_the_tag_schema(client: httpx.Client) -> None:
    repo = "reftag/notation"
    image = push_image(client, repo, "release")
    tag = referrers_tag(image)

    # notation sign: resolve the tag, push the signature manifest by digest...
    resolved = client.head(f"/v2/{repo}/manifests/release", headers={"Accept": ORAS_ACCEPT})
    assert resolved.headers["Docker-Content-Digest"] == image
    size = int(resolved.headers["Content-Length"])
    sig = push_referrer(client, repo, image, NOTATION_SIG, b"jws envelope", size)
    # ...then read the referrers index under the tag, to add the signature to it. It is
    # already listed (same mediaType, digest and size), so oras-go has nothing to push.
    r = client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": ORAS_ACCEPT})
    assert r.status_code == 200
    listed = [{k: m[k] for k in ("mediaType", "digest", "size")} for m in r.json()["manifests"]]
    assert sig in listed

    # notation verify: the referrers come from the tag, filtered by artifactType on the client
    # (the scan pipeline's own reports may be listed too, under their own types).
    r = client.get(f"/v2/{repo}/manifests/{tag}", headers={"Accept": ORAS_ACCEPT})
    assert r.headers["Content-Type"] == OCI_INDEX and sha256(r.content) == r.headers["Docker-Content-Digest"]
    assert int(r.headers["Content-Length"]) == len(r.content)
    sigs = [m for m in r.json()["manifests"] if m.get("artifactType") == NOTATION_SIG]
    assert [m["digest"] for m in sigs] == [sig["digest"]]
    m = client.get(f"/v2/{repo}/manifests/{sigs[0]['digest']}", headers={"Accept": OCI_MANIFEST})
    assert sha256(m.content) == sigs[0]["digest"] and len(m.content) == sigs[0]["size"]
    assert m.json()["subject"]["digest"] == image
    envelope = m.json()["layers"][0]["digest"]
    assert client.get(f"/v2/{repo}/blobs/{envelope}").content == b"jws envelope"


def test_pushes_to_the_referrers_tag(client: httpx.Client) -> None:
    repo = "reftag/push"
    push_image(client, repo, "v1")
    image = sha256(b"reftag push subject")  # never pushed: no pipeline reports race the test
    tag = referrers_tag(image)
    sig = push_referrer(client, repo, image, NOTATION_SIG, b"sig")
    served = client.get(f"/v2/{repo}/manifests/{tag}").content

    # A fallback client that pushes the index anyway (the spec's step) gets a success and a
    # pullable Location; what is served stays the referrers API's answer.
    mine = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [sig]}).encode()
    r = push_manifest(client, repo, tag, mine, OCI_INDEX)
    assert r.status_code == 201, r.text
    assert r.headers["Docker-Content-Digest"] == sha256(mine)
    assert r.headers["Location"] == f"/v2/{repo}/manifests/{tag}"
    assert client.get(r.headers["Location"]).content == served
    assert client.get(f"/v2/{repo}/tags/list").json()["tags"] == ["v1"]

    # An index naming a manifest that is not a referrer of this subject would be lost: refused.
    stranger = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [sig, descriptor(OCI_MANIFEST, b"x")]}
    ).encode()
    r = push_manifest(client, repo, tag, stranger, OCI_INDEX)
    assert r.status_code == 400 and r.json()["errors"][0]["code"] == "MANIFEST_INVALID"
    assert r.json()["errors"][0]["detail"] == {"not_referrers": [sha256(b"x")]}
    # So is an image under that name, and a malformed body gets the usual error.
    image_manifest = client.get(f"/v2/{repo}/manifests/v1", headers={"Accept": OCI_MANIFEST}).content
    r = push_manifest(client, repo, tag, image_manifest)
    assert r.status_code == 400 and "only an OCI image index" in r.json()["errors"][0]["message"]
    assert push_manifest(client, repo, tag, b"{nope", OCI_INDEX).status_code == 400
    assert client.get(f"/v2/{repo}/manifests/{tag}").content == served

    # Deleting the computed tag is not a thing: the referrers are what to delete.
    r = client.delete(f"/v2/{repo}/manifests/{tag}")
    assert r.status_code == 405 and r.json()["errors"][0]["code"] == "UNSUPPORTED"
    assert client.get(f"/v2/{repo}/manifests/{tag}").status_code == 200


def test_artifacts_hallmark_attaches_are_listed_across_referrer_pages(tmp_path: Path) -> None:
    cfg = load_config(environ={"HALLMARK_DATA_DIR": str(tmp_path), "HALLMARK_REGISTRY__REFERRERS_PAGE_SIZE": "2"})
    hm = Hallmark.open(cfg)
    try:
        content = b'{"schemaVersion": 2}'
        subject = ManifestRecord(sha256(content), OCI_MANIFEST, content)
        made = {
            attach_artifact(hm.registry, "own/app", subject, "application/vnd.hallmark.report", [layer])
            for layer in (ArtifactLayer("application/json", f'{{"n": {i}}}'.encode()) for i in range(5))
        }
        rec = asyncio.run(hm.registry.get_manifest("own/app", referrers_tag(subject.digest)))
        assert rec.media_type == OCI_INDEX and rec.digest == sha256(rec.content)
        assert {m["digest"] for m in json.loads(rec.content)["manifests"]} == made
        with pytest.raises(RegistryError) as err:
            asyncio.run(hm.registry.get_manifest("own/other", referrers_tag(subject.digest)))
        assert err.value.code == "MANIFEST_UNKNOWN"
    finally:
        hm.close()
