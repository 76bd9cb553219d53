"""Remote registries over the OCI distribution API, with the Bearer-token and Basic flows.

httpx does the HTTP; the token dance (RFC 6750 challenge -> token endpoint -> retry) is the
few lines every registry client writes, since no maintained Python library does only that.
Credentials (given, or found by :mod:`hallmark.oci.auth`) go to the token endpoint or as
Basic auth; neither they nor tokens ever appear in messages.
"""

from __future__ import annotations

import base64
import io
import re
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, cast

import httpx

from hallmark.digest import digest_bytes, is_digest
from hallmark.oci import mediatypes as mt
from hallmark.oci.source import (
    Descriptor,
    ImageManifest,
    OciError,
    Platform,
    manifest_media_type,
    select_from_index,
)

DOCKER_HUB = "registry-1.docker.io"
MAX_MANIFEST_BYTES = 4 << 20
_REPO_RE = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*")


@dataclass(frozen=True)
class Reference:
    """``host/repo[:tag][@digest]``, Docker Hub shorthands expanded."""

    host: str
    repository: str
    tag: str | None
    digest: str | None

    @property
    def reference(self) -> str:
        return self.digest or self.tag or "latest"

    def __str__(self) -> str:
        return f"{self.host}/{self.repository}" + (f"@{self.digest}" if self.digest else f":{self.reference}")

    @classmethod
    def parse(cls, text: str) -> Reference:
        rest, _, digest = text.partition("@")
        if digest and not is_digest(digest):
            raise OciError(f"invalid digest in reference {text!r}")
        first, slash, remainder = rest.partition("/")
        if slash and ("." in first or ":" in first or first == "localhost"):
            host, path = first, remainder
        else:
            host, path = DOCKER_HUB, rest
        tag = None
        name, colon, maybe_tag = path.rpartition(":")
        if colon and "/" not in maybe_tag:
            path, tag = name, maybe_tag
        if host == DOCKER_HUB and "/" not in path:
            path = f"library/{path}"
        if not _REPO_RE.fullmatch(path):
            raise OciError(f"invalid repository name in reference {text!r}")
        return cls(host, path, tag, digest or None)


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """A ``WWW-Authenticate`` value as (lowercased scheme, its quoted parameters)."""
    scheme, _, params = header.strip().partition(" ")
    return scheme.lower(), dict(re.findall(r'(\w+)="([^"]*)"', params))


def basic_authorization(credentials: tuple[str, str]) -> str:
    """The ``Authorization`` value for HTTP Basic."""
    user, password = credentials
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def token_of(resp: httpx.Response) -> str | None:
    """The token in a token endpoint's answer (``token``, or OAuth2's ``access_token``); None when absent."""
    try:
        body = resp.json()
    except ValueError:
        return None
    token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
    return token if isinstance(token, str) and token else None


class _StreamReader(io.RawIOBase):
    """Turns an httpx streaming response into a file object for the decompressors."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response
        self._chunks: Iterator[bytes] = response.iter_raw(1 << 16)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._pending = chunk
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        if not self.closed:
            self._response.close()
        super().close()


class RegistryClient:
    """HTTP to one repository of a registry: Bearer-token (RFC 6750) and Basic flows, pull or pull+push.

    Shared by the read side (``RegistrySource``) and by signing's ``RegistryStore`` so the auth
    dance lives in one place. Credentials are optional (anonymous pulls); they and tokens are never
    put in error messages.
    """

    def __init__(
        self,
        host: str,
        repository: str,
        *,
        insecure: bool = False,
        push: bool = False,
        credentials: tuple[str, str] | None = None,
        timeout: float = 60.0,
        auth_hint: str | None = None,
        delete: bool = False,
    ) -> None:
        self.host = host
        self.repository = repository
        self.insecure = insecure
        self.root = f"{'http' if insecure else 'https'}://{host}"
        self.base = f"{self.root}/v2/{repository}"
        # Token servers (distribution, Harbor) want the ``delete`` action for DELETE requests.
        self.actions = "pull,push,delete" if delete else "pull,push" if push else "pull"
        self._credentials = credentials
        # Where the credentials came from (or why there are none), added to "unauthorized" errors.
        self.auth_hint = auth_hint
        self._client = httpx.Client(timeout=timeout, follow_redirects=True)
        self._authorization: str | None = None

    @property
    def name(self) -> str:
        return f"{self.host}/{self.repository}"

    def url(self, location: str) -> str:
        """Absolute URL for a (possibly relative) ``Location`` header."""
        return str(httpx.URL(self.root).join(location))

    def _unauthorized(self, what: str) -> OciError:
        """The "who are you" error: with credentials they were refused, without them say how to give some."""
        if self._credentials:
            text = f"{self.name}: {what}: the registry refused the credentials"
        else:
            text = (
                f"{self.name}: {what}: authentication required; give --creds USER[:PASS] or "
                "-u USER --password-stdin, or log in with docker/podman/skopeo login"
            )
        return OciError(text + (f" ({self.auth_hint})" if self.auth_hint else ""))

    def _transport_error(self, exc: httpx.HTTPError) -> OciError:
        """A network error; a failed TLS handshake against what may be a plain-HTTP registry suggests --insecure."""
        cause: BaseException | None = exc
        while cause is not None and not isinstance(cause, ssl.SSLError):
            cause = cause.__cause__ or cause.__context__
        if not self.insecure and (cause is not None or "SSL" in str(exc)):
            return OciError(
                f"{self.name}: TLS handshake failed ({exc}); if {self.host} serves plain HTTP, use --insecure"
            )
        return OciError(f"{self.name}: {exc}")

    def _authenticate(self, challenge: str) -> None:
        scheme, fields = parse_challenge(challenge)
        if scheme == "basic":
            if not self._credentials:
                raise self._unauthorized("registry wants Basic auth")
            self._authorization = basic_authorization(self._credentials)
            return
        if scheme != "bearer":
            raise OciError(f"{self.name}: registry wants {scheme or '?'} auth; only Bearer and Basic work")
        realm = fields.pop("realm", None)
        if not realm:
            raise OciError(f"{self.name}: Bearer challenge without realm")
        if self.actions != "pull" or "scope" not in fields:
            fields["scope"] = f"repository:{self.repository}:{self.actions}"
        auth = httpx.BasicAuth(*self._credentials) if self._credentials else None
        try:
            resp = self._client.get(realm, params=fields, auth=auth)
        except httpx.HTTPError as exc:
            raise OciError(f"{self._transport_error(exc)} (token endpoint)") from exc
        if resp.status_code in (401, 403):
            raise self._unauthorized(f"token endpoint answered {resp.status_code}")
        if resp.status_code != 200:
            raise OciError(f"{self.name}: token endpoint answered {resp.status_code}")
        token = token_of(resp)
        if not token:
            raise OciError(f"{self.name}: token endpoint returned no token")
        self._authorization = f"Bearer {token}"

    def request(
        self,
        method: str,
        url: str,
        *,
        accept: str | None = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        stream: bool = False,
        expect: tuple[int, ...] = (200,),
    ) -> httpx.Response:
        """Send, authenticating once on a 401 challenge; a status outside ``expect`` raises ``OciError``."""
        for attempt in range(2):
            h = dict(headers or {})
            if accept:
                h["Accept"] = accept
            if self._authorization:
                h["Authorization"] = self._authorization
            req = self._client.build_request(method, url, headers=h, content=content, params=params)
            try:
                resp = self._client.send(req, stream=stream)
            except httpx.HTTPError as exc:
                raise self._transport_error(exc) from exc
            if resp.status_code == 401 and attempt == 0 and "www-authenticate" in resp.headers:
                resp.close()
                self._authenticate(resp.headers["www-authenticate"])
                continue
            if resp.status_code not in expect:
                resp.close()
                if resp.status_code in (401, 403) and not (self._credentials and resp.status_code == 403):
                    raise self._unauthorized(f"{method} {req.url.path} answered {resp.status_code}")
                raise OciError(f"{self.name}: {method} {req.url.path} answered {resp.status_code}")
            return resp
        raise self._unauthorized("unauthorized")

    def close(self) -> None:
        self._client.close()


class RegistrySource:
    """An image in a remote registry (read side of ``hallmark sbom``); anonymous unless credentials are given."""

    def __init__(
        self,
        ref: str,
        *,
        insecure: bool = False,
        platform: Platform | None = None,
        timeout: float = 60.0,
        credentials: tuple[str, str] | None = None,
        auth_hint: str | None = None,
    ) -> None:
        self.ref = Reference.parse(ref)
        self.platform = platform or Platform()
        self._http = RegistryClient(
            self.ref.host,
            self.ref.repository,
            insecure=insecure,
            credentials=credentials,
            timeout=timeout,
            auth_hint=auth_hint,
        )
        self._base = self._http.base

    @property
    def name(self) -> str:
        return str(self.ref)

    def _send(self, url: str, accept: str | None = None, stream: bool = False) -> httpx.Response:
        return self._http.request("GET", url, accept=accept, stream=stream)

    def get_json(self, path: str) -> Any:
        """GET ``path`` on the registry's host with this source's credentials, as JSON (a Hallmark
        server's ``/api/v1`` image document, for ``hallmark scan``); OciError unless 200 JSON."""
        resp = self._http.request("GET", self._http.root + path, accept="application/json")
        try:
            return resp.json()
        except ValueError as exc:
            raise OciError(f"{self.name}: {path} did not answer JSON") from exc

    def _get_manifest(self, reference: str) -> tuple[bytes, str]:
        resp = self._send(f"{self._base}/manifests/{reference}", accept=mt.ACCEPT_MANIFESTS)
        raw = resp.content
        if len(raw) > MAX_MANIFEST_BYTES:
            raise OciError(f"{self.name}: manifest larger than {MAX_MANIFEST_BYTES} bytes")
        digest = digest_bytes(raw)
        if is_digest(reference) and reference != digest:
            raise OciError(f"{self.name}: manifest digest mismatch ({digest} != {reference})")
        return raw, digest

    def get_manifest(self) -> ImageManifest:
        raw, digest = self._get_manifest(self.ref.reference)
        for _ in range(4):
            if manifest_media_type(raw) not in mt.INDEX_TYPES:
                return ImageManifest.parse(raw, digest)
            raw, digest = self._get_manifest(select_from_index(raw, self.platform).digest)
        raise OciError(f"{self.name}: image indexes nested too deeply")

    def get_config(self, manifest: ImageManifest) -> bytes:
        resp = self._send(f"{self._base}/blobs/{manifest.config.digest}")
        data = resp.content
        if digest_bytes(data) != manifest.config.digest:
            raise OciError(f"{self.name}: config digest mismatch")
        return data

    def open_blob(self, desc: Descriptor) -> BinaryIO:
        resp = self._send(f"{self._base}/blobs/{desc.digest}", stream=True)
        return cast(BinaryIO, io.BufferedReader(_StreamReader(resp), 1 << 16))

    def close(self) -> None:
        self._http.close()
