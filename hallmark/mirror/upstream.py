"""An upstream registry, read over the OCI distribution API (async, for the pull-through cache and mirrors).

The auth dance is the one of :mod:`hallmark.oci.registry` (its challenge parsing, Basic header and
token reading are reused): anonymous first, then Basic or the Bearer-token flow the ``WWW-Authenticate``
challenge asks for, one token per repository. Everything that comes back is checked before anyone
uses it: manifests are read up to a size limit and their digest verified, blob bodies have their
length checked and are hashed by their consumer, which holds the last bytes back until the digest
matches, so nothing that forwards them ever forwards a whole corrupt blob. Credentials and tokens
never appear in messages or logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from hallmark.digest import InvalidDigest, digest_bytes, parse_digest
from hallmark.oci import mediatypes as mt
from hallmark.oci.registry import basic_authorization, parse_challenge, token_of

MAX_REDIRECTS = 5
CHUNK = 1 << 16


class UpstreamError(Exception):
    """The upstream failed or sent something unusable; ``status`` is its HTTP status when it answered."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def unreachable(self) -> bool:
        """No answer, a timeout or a server error: the cached copy may stand in."""
        return self.status is None or self.status >= 500 or self.status == 429


@dataclass(frozen=True)
class UpstreamManifest:
    content: bytes
    media_type: str
    digest: str


class Upstream:
    """One upstream registry (``https://host[:port]``); safe to share between concurrent requests."""

    def __init__(
        self,
        url: str,
        *,
        credentials: tuple[str, str] | None = None,
        timeout: float = 30.0,
        max_manifest_bytes: int = 4 << 20,
        max_redirects: int = MAX_REDIRECTS,
        verify_tls: bool = True,
    ) -> None:
        self.url = url.rstrip("/")
        self.max_manifest_bytes = max_manifest_bytes
        self._credentials = credentials
        # Redirects are followed (blob storage behind a CDN), a few only; httpx drops Authorization
        # when a redirect leaves the upstream's origin, so credentials never reach a third party.
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout), follow_redirects=True, max_redirects=max_redirects, verify=verify_tls
        )
        self._authorization: dict[str, str] = {}  # repository -> Authorization value
        self._timeout = timeout
        self._verify_tls = verify_tls
        self._max_redirects = max_redirects
        self.requests = 0  # HTTP requests sent (tests and metrics)

    def __repr__(self) -> str:  # never the credentials
        return f"Upstream({self.url!r})"

    async def close(self) -> None:
        await self._client.aclose()

    async def _authenticate(self, repository: str, challenge: str) -> None:
        scheme, fields = parse_challenge(challenge)
        if scheme == "basic":
            if not self._credentials:
                raise UpstreamError(f"{self.url}: upstream wants credentials (Basic); none are configured", 401)
            self._authorization[repository] = basic_authorization(self._credentials)
            return
        if scheme != "bearer":
            raise UpstreamError(f"{self.url}: upstream wants {scheme or '?'} auth; only Bearer and Basic work", 401)
        realm = fields.pop("realm", None)
        if not realm:
            raise UpstreamError(f"{self.url}: Bearer challenge without realm", 401)
        fields["scope"] = f"repository:{repository}:pull"
        auth = httpx.BasicAuth(*self._credentials) if self._credentials else None
        self.requests += 1
        try:
            resp = await self._client.get(realm, params=fields, auth=auth)
        except httpx.HTTPError as exc:
            raise UpstreamError(f"{self.url}: token endpoint: {type(exc).__name__}") from exc
        if resp.status_code != 200:
            raise UpstreamError(f"{self.url}: token endpoint answered {resp.status_code}", resp.status_code)
        token = token_of(resp)
        if not token:
            raise UpstreamError(f"{self.url}: token endpoint returned no token")
        self._authorization[repository] = f"Bearer {token}"

    async def _send(self, method: str, repository: str, path: str, accept: str | None = None) -> httpx.Response:
        """A streamed response with status 200, authenticating once on a 401; other statuses raise."""
        url = f"{self.url}/v2/{repository}/{path}"
        for attempt in range(2):
            headers = {"Accept": accept} if accept else {}
            if repository in self._authorization:
                headers["Authorization"] = self._authorization[repository]
            self.requests += 1
            try:
                resp = await self._client.send(self._client.build_request(method, url, headers=headers), stream=True)
            except httpx.TooManyRedirects as exc:
                raise UpstreamError(f"{self.url}: {method} {path}: too many redirects", 508) from exc
            except httpx.HTTPError as exc:
                raise UpstreamError(f"{self.url}: {method} {path}: {type(exc).__name__} {exc}") from exc
            if resp.status_code == 401 and attempt == 0 and "www-authenticate" in resp.headers:
                await resp.aclose()
                self._authorization.pop(repository, None)
                await self._authenticate(repository, resp.headers["www-authenticate"])
                continue
            if resp.status_code != 200:
                await resp.aclose()
                raise UpstreamError(f"{self.url}: {method} {path} answered {resp.status_code}", resp.status_code)
            return resp
        raise UpstreamError(f"{self.url}: {method} {path}: unauthorized", 401)

    async def head_manifest(self, repository: str, reference: str) -> str:
        """The digest the upstream has under ``reference`` (a tag check: one HEAD, no body)."""
        resp = await self._send("HEAD", repository, f"manifests/{reference}", mt.ACCEPT_MANIFESTS)
        await resp.aclose()
        digest = resp.headers.get("docker-content-digest", "")
        try:
            parse_digest(digest)
        except InvalidDigest as exc:
            raise UpstreamError(f"{self.url}: HEAD manifests/{reference}: no valid Docker-Content-Digest") from exc
        return digest

    async def manifest(self, repository: str, reference: str) -> UpstreamManifest:
        """A manifest, read up to the size limit, its digest checked against the reference (or the
        upstream's ``Docker-Content-Digest``)."""
        resp = await self._send("GET", repository, f"manifests/{reference}", mt.ACCEPT_MANIFESTS)
        body = bytearray()
        try:
            declared = resp.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > self.max_manifest_bytes:
                raise UpstreamError(f"{self.url}: manifest {reference} is over {self.max_manifest_bytes} bytes")
            async for chunk in resp.aiter_raw(CHUNK):
                body += chunk
                if len(body) > self.max_manifest_bytes:
                    raise UpstreamError(f"{self.url}: manifest {reference} is over {self.max_manifest_bytes} bytes")
        except httpx.HTTPError as exc:
            raise UpstreamError(f"{self.url}: manifest {reference}: {type(exc).__name__} {exc}") from exc
        finally:
            await resp.aclose()
        content = bytes(body)
        if declared and declared.isdigit() and int(declared) != len(content):
            raise UpstreamError(f"{self.url}: manifest {reference} truncated ({len(content)} of {declared} bytes)")
        expected = reference if ":" in reference else resp.headers.get("docker-content-digest")
        algo = "sha256"
        if expected:
            try:
                algo, _ = parse_digest(expected)
            except InvalidDigest as exc:
                raise UpstreamError(f"{self.url}: manifest {reference}: invalid digest {expected!r}") from exc
        digest = digest_bytes(content, algo)
        if expected and digest != expected:
            raise UpstreamError(f"{self.url}: manifest {reference}: digest mismatch ({digest} != {expected})")
        media_type = resp.headers.get("content-type", "").split(";")[0].strip()
        return UpstreamManifest(content, media_type, digest)

    async def blob_size(self, repository: str, digest: str) -> int | None:
        """The size the upstream announces for a blob (HEAD), None when it gives none."""
        resp = await self._send("HEAD", repository, f"blobs/{digest}")
        await resp.aclose()
        length = resp.headers.get("content-length", "")
        return int(length) if length.isdigit() else None

    async def blob(self, repository: str, digest: str) -> UpstreamBlob:
        """An open blob (status 200, headers read); read it with :meth:`UpstreamBlob.readinto` in a
        thread (blocking).

        Bodies come through a plain blocking ``http.client`` connection, read by the caller's thread
        straight into its buffers: a cold pull then costs one copy per byte on the way in and none on
        the event loop (aiohttp's client copied each byte two or three times there). The
        authorization is the one httpx obtained (one auth flow); it is dropped, like httpx does, when
        a redirect leaves the upstream's origin."""
        try:
            algo, _ = parse_digest(digest)
        except InvalidDigest as exc:
            raise UpstreamError(f"invalid digest {digest!r}", 400) from exc
        for attempt in range(2):
            self.requests += 1
            resp, conn = await asyncio.to_thread(self._open_blob, repository, digest)
            if resp.status == 401 and attempt == 0 and resp.getheader("WWW-Authenticate"):
                conn.close()
                self._authorization.pop(repository, None)
                await self._authenticate(repository, resp.getheader("WWW-Authenticate", ""))
                continue
            if resp.status != 200:
                conn.close()
                raise UpstreamError(f"{self.url}: GET blobs/{digest} answered {resp.status}", resp.status)
            length = resp.getheader("Content-Length", "")
            size = int(length) if length.isdigit() else None
            return UpstreamBlob(self.url, digest, algo, resp, conn, size)
        raise UpstreamError(f"{self.url}: GET blobs/{digest}: unauthorized", 401)

    def _open_blob(self, repository: str, digest: str) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
        """GET a blob, following redirects (a few); returns the first non-redirect answer, body unread."""
        url = f"{self.url}/v2/{repository}/blobs/{digest}"
        origin = urlsplit(url)[:2]
        headers = {"Authorization": self._authorization[repository]} if repository in self._authorization else {}
        for _ in range(self._max_redirects + 1):
            parts = urlsplit(url)
            if parts[:2] != origin:
                headers.pop("Authorization", None)  # never the credentials to a third party
            if parts.scheme == "https":
                ctx = ssl.create_default_context()
                if not self._verify_tls:
                    ctx.check_hostname = False
                    ctx.verify_mode = ssl.CERT_NONE
                conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                    parts.hostname or "", parts.port, timeout=self._timeout, context=ctx
                )
            elif parts.scheme == "http":
                conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=self._timeout)
            else:
                raise UpstreamError(f"{self.url}: GET blobs/{digest}: redirected to a {parts.scheme!r} URL")
            try:
                conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                raise UpstreamError(f"{self.url}: GET blobs/{digest}: {type(exc).__name__} {exc}") from exc
            location = resp.getheader("Location")
            if resp.status in (301, 302, 303, 307, 308) and location:
                conn.close()
                url = urljoin(url, location)
                continue
            return resp, conn
        raise UpstreamError(f"{self.url}: GET blobs/{digest}: too many redirects", 508)


class UpstreamBlob:
    """A blob body in flight, read (blocking, in a thread) with :meth:`readinto`, then :meth:`finish`
    checks its length; the digest is left to a consumer that hashes anyway (the blob store's writer)
    and checks it before it releases the last bytes."""

    def __init__(
        self,
        url: str,
        digest: str,
        algo: str,
        resp: http.client.HTTPResponse,
        conn: http.client.HTTPConnection,
        size: int | None,
    ) -> None:
        self.url = url
        self.digest = digest
        self.size = size
        self.algo = algo
        self._resp = resp
        self._conn = conn
        self._got = 0

    def readinto(self, buf: memoryview) -> int:
        """Fill ``buf`` as far as the body goes; 0 at its end (blocking)."""
        filled = 0
        try:
            while filled < len(buf):
                n = self._resp.readinto(buf[filled:])
                if not n:
                    break
                filled += n
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise UpstreamError(f"{self.url}: blob {self.digest}: {type(exc).__name__} {exc}") from exc
        self._got += filled
        return filled

    def finish(self) -> None:
        """Raise unless the whole announced length arrived."""
        self.close()
        if self.size is not None and self._got != self.size:
            raise UpstreamError(f"{self.url}: blob {self.digest}: truncated ({self._got} of {self.size} bytes)")
        self.size = self._got

    def close(self) -> None:
        """Close the connection; a thread blocked in :meth:`readinto` wakes up (with an error)."""
        sock = self._conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._conn.close()
