"""``ArtifactTarget`` over a remote registry (OCI distribution API), for ``hallmark sign``/``verify``.

HTTP and auth come from :class:`hallmark.oci.registry.RegistryClient`. Referrers are listed through
``/v2/<name>/referrers/<digest>`` and, when a registry lacks that API (404), through the referrers
tag schema ``sha256-<hex>``; pushes keep that tag index up to date when the registry does not
answer with ``OCI-Subject``, as the OCI distribution spec asks clients to. Every manifest and blob
read is checked against its digest, so a registry cannot substitute content.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from hallmark.digest import digest_bytes, is_digest
from hallmark.oci import mediatypes as mt
from hallmark.oci.registry import Reference, RegistryClient
from hallmark.oci.source import OciError
from hallmark.signing.layout import INDEX_MEDIA_TYPE, Descriptor, LayoutError

MAX_MANIFEST_BYTES = 4 << 20
# Signature envelopes and cosign payloads are small; refusing big blobs bounds memory on hostile input.
MAX_BLOB_BYTES = 32 << 20
MAX_REFERRER_PAGES = 50
ACCEPT = ", ".join([mt.OCI_MANIFEST, mt.OCI_INDEX, mt.DOCKER_MANIFEST, mt.DOCKER_LIST])


class RegistryArtifactError(LayoutError):
    """A registry request failed or returned bad content (a ``LayoutError`` so the verifier reports it)."""


def referrers_tag(digest: str) -> str:
    """The fallback tag for referrers of ``digest``: ``<alg>-<hex>``."""
    return digest.replace(":", "-")


class RegistryStore:
    """One repository of a registry as an ``ArtifactTarget`` (``push=True`` asks for push scope)."""

    def __init__(
        self,
        host: str,
        repository: str,
        *,
        insecure: bool = False,
        push: bool = False,
        credentials: tuple[str, str] | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.http = RegistryClient(
            host, repository, insecure=insecure, push=push, credentials=credentials, timeout=timeout
        )

    @classmethod
    def for_reference(cls, ref: str, **kwargs: Any) -> tuple[RegistryStore, Reference]:
        """Parse ``host/repo[:tag][@digest]`` and open a store for its repository."""
        try:
            parsed = Reference.parse(ref)
        except OciError as exc:
            raise RegistryArtifactError(str(exc)) from exc
        return cls(parsed.host, parsed.repository, **kwargs), parsed

    @property
    def name(self) -> str:
        return self.http.name

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> RegistryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- read ------------------------------------------------------------------------------------
    def _get(self, path: str, *, accept: str | None = None, limit: int, missing_ok: bool = False) -> bytes | None:
        try:
            resp = self.http.request(
                "GET",
                f"{self.http.base}/{path}",
                accept=accept,
                stream=True,
                expect=(200, 404) if missing_ok else (200,),
            )
        except OciError as exc:
            raise RegistryArtifactError(str(exc)) from exc
        try:
            if resp.status_code == 404:
                return None
            declared = resp.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > limit:
                raise RegistryArtifactError(f"{self.name}: {path} is larger than {limit} bytes")
            chunks, total = [], 0
            for chunk in resp.iter_bytes():
                total += len(chunk)
                if total > limit:
                    raise RegistryArtifactError(f"{self.name}: {path} is larger than {limit} bytes")
                chunks.append(chunk)
            return b"".join(chunks)
        finally:
            resp.close()

    def _manifest(self, reference: str, missing_ok: bool = False) -> bytes | None:
        data = self._get(
            f"manifests/{quote(reference, safe=':')}", accept=ACCEPT, limit=MAX_MANIFEST_BYTES, missing_ok=missing_ok
        )
        if data is not None and is_digest(reference) and digest_bytes(data) != reference:
            raise RegistryArtifactError(f"{self.name}: manifest {reference} does not match its digest")
        return data

    def resolve(self, reference: str) -> Descriptor:
        """Tag or digest -> descriptor of exactly the bytes the registry serves (the digest is computed here)."""
        data = self._manifest(reference)
        assert data is not None
        try:
            doc = json.loads(data)
        except ValueError as exc:
            raise RegistryArtifactError(f"{self.name}: manifest {reference} is not JSON") from exc
        if not isinstance(doc, dict):
            raise RegistryArtifactError(f"{self.name}: manifest {reference} is not a JSON object")
        art = doc.get("artifactType")
        return Descriptor(
            mt.guess_media_type(doc), digest_bytes(data), len(data), art if isinstance(art, str) else None
        )

    def fetch_manifest(self, digest: str) -> bytes:
        data = self._manifest(digest)
        assert data is not None
        return data

    def fetch_blob(self, digest: str) -> bytes:
        if not is_digest(digest):
            raise RegistryArtifactError(f"invalid digest {digest!r}")
        data = self._get(f"blobs/{digest}", limit=MAX_BLOB_BYTES)
        assert data is not None
        if digest_bytes(data) != digest:
            raise RegistryArtifactError(f"{self.name}: blob {digest} does not match its digest")
        return data

    def tag_exists(self, tag: str) -> bytes | None:
        """The manifest under ``tag``, or None when there is none (cosign ``.sig`` discovery)."""
        return self._manifest(tag, missing_ok=True)

    def list_referrers(self, subject: Descriptor, artifact_type: str | None = None) -> list[Descriptor]:
        """Referrers API with pagination; the tag schema when the registry does not implement it."""
        params = {"artifactType": artifact_type} if artifact_type else None
        url: str | None = f"{self.http.base}/referrers/{subject.digest}"
        found: list[Descriptor] = []
        for _ in range(MAX_REFERRER_PAGES):
            if url is None:
                break
            try:
                resp = self.http.request("GET", url, accept=mt.OCI_INDEX, params=params, expect=(200, 404))
            except OciError as exc:
                raise RegistryArtifactError(str(exc)) from exc
            if resp.status_code == 404:
                if found:
                    break
                return self._referrers_from_tag(subject, artifact_type)
            found.extend(_index_entries(resp.content, self.name))
            link = resp.links.get("next", {}).get("url")
            url, params = (self.http.url(link), None) if link else (None, None)
        if artifact_type is not None:  # the registry may ignore the filter (no OCI-Filters-Applied)
            found = [d for d in found if d.artifact_type == artifact_type]
        return found

    def _referrers_from_tag(self, subject: Descriptor, artifact_type: str | None) -> list[Descriptor]:
        data = self._manifest(referrers_tag(subject.digest), missing_ok=True)
        if data is None:
            return []
        out = _index_entries(data, self.name)
        return [d for d in out if artifact_type is None or d.artifact_type == artifact_type]

    # -- write -----------------------------------------------------------------------------------
    def push_blob(self, data: bytes, media_type: str) -> Descriptor:
        """Monolithic upload (POST for a session, then PUT with the digest); skipped when present."""
        digest = digest_bytes(data)
        try:
            head = self.http.request("HEAD", f"{self.http.base}/blobs/{digest}", expect=(200, 404))
            if head.status_code != 200:
                start = self.http.request("POST", f"{self.http.base}/blobs/uploads/", expect=(202,))
                location = start.headers.get("location")
                if not location:
                    raise RegistryArtifactError(f"{self.name}: upload start answered without Location")
                self.http.request(
                    "PUT",
                    self.http.url(location),
                    params={"digest": digest},
                    content=data,
                    headers={"Content-Type": "application/octet-stream"},
                    expect=(201,),
                )
        except OciError as exc:
            raise RegistryArtifactError(str(exc)) from exc
        return Descriptor(media_type, digest, len(data))

    def push_manifest(self, data: bytes, media_type: str, artifact_type: str | None = None) -> Descriptor:
        """PUT by digest; maintain the referrers tag index when the registry lacks the referrers API."""
        digest = digest_bytes(data)
        try:
            resp = self.http.request(
                "PUT",
                f"{self.http.base}/manifests/{digest}",
                content=data,
                headers={"Content-Type": media_type},
                expect=(201,),
            )
        except OciError as exc:
            raise RegistryArtifactError(str(exc)) from exc
        desc = Descriptor(media_type, digest, len(data), artifact_type)
        subject = _subject_of(data)
        if subject and "oci-subject" not in resp.headers:
            self._add_to_referrers_tag(subject, desc)
        return desc

    def _add_to_referrers_tag(self, subject: str, desc: Descriptor) -> None:
        tag = referrers_tag(subject)
        existing = self._manifest(tag, missing_ok=True)
        index: dict[str, Any] = {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": []}
        if existing is not None:
            try:
                loaded = json.loads(existing)
                if isinstance(loaded, dict) and isinstance(loaded.get("manifests"), list):
                    index = loaded
            except ValueError:
                pass
        if any(isinstance(m, dict) and m.get("digest") == desc.digest for m in index["manifests"]):
            return
        index["manifests"].append(desc.to_json())
        body = json.dumps(index, separators=(",", ":")).encode()
        try:
            self.http.request(
                "PUT",
                f"{self.http.base}/manifests/{tag}",
                content=body,
                headers={"Content-Type": INDEX_MEDIA_TYPE},
                expect=(201,),
            )
        except OciError as exc:
            raise RegistryArtifactError(str(exc)) from exc


def _index_entries(data: bytes, name: str) -> list[Descriptor]:
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise RegistryArtifactError(f"{name}: referrers response is not JSON") from exc
    entries = doc.get("manifests") if isinstance(doc, dict) else None
    if not isinstance(entries, list):
        raise RegistryArtifactError(f"{name}: referrers response is not an image index")
    out = []
    for entry in entries:
        try:
            out.append(Descriptor.from_json(entry))
        except LayoutError:
            continue  # one malformed entry must not hide the valid signatures
    return out


def _subject_of(manifest: bytes) -> str | None:
    try:
        doc = json.loads(manifest)
    except ValueError:
        return None
    subject = doc.get("subject") if isinstance(doc, dict) else None
    digest = subject.get("digest") if isinstance(subject, dict) else None
    return digest if isinstance(digest, str) and is_digest(digest) else None
