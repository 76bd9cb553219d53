"""aiohttp handlers for the ``/v2/`` API. They translate HTTP to :class:`RegistryService` calls.

Repository names contain slashes, so routing is one regular-expression dispatch
over the path instead of the framework router.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlencode

import orjson
from aiohttp import web

from hallmark.mirror.proxy import ProxiedBlob
from hallmark.mirror.upstream import UpstreamError
from hallmark.registry.errors import RegistryError
from hallmark.registry.manifests import OCI_INDEX
from hallmark.registry.rawbody import RAW_KEY, raw_body
from hallmark.registry.sendfile import SendfileResponse
from hallmark.registry.service import RegistryService, referrers_document
from hallmark.registry.uploads import BlobInfo, upload_location
from hallmark.storage.base import StorageUnavailable

API_VERSION = {"Docker-Distribution-API-Version": "registry/2.0"}
_RANGE_RE = re.compile(r"^(?:bytes[ =])?(\d+)-(\d+)$")
_READ = 1 << 20

Handler = Callable[[web.Request, RegistryService, dict[str, str]], Awaitable[web.StreamResponse]]
SERVICE_KEY = web.AppKey("registry_service", RegistryService)
# Optional guard (access control): awaited as guard(request, handler, svc, params) instead of the handler.
GUARD_KEY: web.AppKey[Any] = web.AppKey("registry_guard")
# Request key the guard sets to False when the caller may not read the cross-mount source repository.
MOUNT_ALLOWED = "hallmark.mount_allowed"
# Request key under which the guard puts the caller's identity (hallmark.access.model.Identity).
IDENTITY = "hallmark.identity"


def _principal(request: web.Request) -> str | None:
    """Who is uploading, for the per-principal limit on open uploads (None without access control)."""
    ident = request.get(IDENTITY)
    if ident is None or getattr(ident, "anonymous", True):
        return None
    return str(ident.name)


def error_response(err: RegistryError, head: bool = False) -> web.Response:
    headers = {"Content-Type": "application/json", **API_VERSION, **err.headers}
    if head:
        return web.Response(status=err.status, headers=headers)
    return web.Response(status=err.status, body=err.body(), headers=headers)


def oci_json(
    doc: Any, status: int = 200, headers: dict[str, str] | None = None, ctype: str = "application/json"
) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(doc), headers={"Content-Type": ctype, **(headers or {})})


async def _body(request: web.Request) -> AsyncIterator[bytes]:
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return
        yield chunk


def _content_length(request: web.Request) -> int | None:
    value = request.headers.get("Content-Length")
    if value is None:
        return None
    if not value.isdigit():
        raise RegistryError("SIZE_INVALID", message="invalid Content-Length")
    return int(value)


def _content_range(request: web.Request) -> tuple[int, int] | None:
    value = request.headers.get("Content-Range")
    if value is None:
        return None
    m = _RANGE_RE.match(value.strip())
    if not m:
        raise RegistryError("BLOB_UPLOAD_INVALID", message=f"malformed Content-Range {value!r}", status=416)
    return int(m.group(1)), int(m.group(2))


def _upload_headers(repo: str, upload_id: str, size: int) -> dict[str, str]:
    return {
        "Location": upload_location(repo, upload_id),
        "Range": f"0-{max(size - 1, 0)}",
        "Docker-Upload-UUID": upload_id,
        "Content-Length": "0",
    }


def _blob_created(repo: str, info: BlobInfo) -> web.Response:
    return web.Response(
        status=201,
        headers={
            "Location": f"/v2/{repo}/blobs/{info.digest}",
            "Docker-Content-Digest": info.digest,
            "Content-Length": "0",
        },
    )


def warning_header(text: str) -> str:
    """A ``Warning: 299 - "..."`` value (distribution spec; docker and podman print it): printable
    ASCII only, quotes and backslashes escaped, so a stored reason cannot break the header."""
    clean = "".join(c if " " <= c <= "~" else "?" for c in " ".join(text.split()))[:1000]
    return '299 - "' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _actor(request: web.Request) -> str:
    """Who changes a tag, for its history: the identity the registry guard resolved (the client
    address when access control is off)."""
    ident = request.get(IDENTITY)
    name = getattr(ident, "name", None)
    return str(name) if name else (request.remote or "anonymous")


def next_link(path: str, params: dict[str, str]) -> str:
    return f'<{quote(path)}?{urlencode(params)}>; rel="next"'


# -- handlers --------------------------------------------------------------------------------
async def base(request: web.Request, svc: RegistryService, m: dict[str, str]) -> web.StreamResponse:
    return oci_json({})


async def catalog(request: web.Request, svc: RegistryService, m: dict[str, str]) -> web.StreamResponse:
    names, more = await svc.catalog(request.query.get("n"), request.query.get("last"))
    headers = {}
    if more and names:
        headers["Link"] = next_link("/v2/_catalog", {"n": str(len(names)), "last": names[-1]})
    return oci_json({"repositories": names}, headers=headers)


async def tags_list(request: web.Request, svc: RegistryService, m: dict[str, str]) -> web.StreamResponse:
    repo = m["name"]
    names, more = await svc.list_tags(repo, request.query.get("n"), request.query.get("last"))
    headers = {}
    if more and names:
        headers["Link"] = next_link(f"/v2/{repo}/tags/list", {"n": str(len(names)), "last": names[-1]})
    return oci_json({"name": repo, "tags": names}, headers=headers)


async def manifest(request: web.Request, svc: RegistryService, m: dict[str, str]) -> web.StreamResponse:
    repo, ref = m["name"], m["ref"]
    if request.method in ("GET", "HEAD"):
        accept = [a.split(";")[0].strip() for a in request.headers.getall("Accept", []) for a in a.split(",")]
        accept = [a for a in accept if a]
        stale: str | None = None
        if svc.proxy is not None and svc.proxy.route(repo) is not None:
            served = await svc.proxy.manifest(repo, ref, accept)
            rec, stale = served.record, served.warning
        else:
            rec = await svc.get_manifest(repo, ref, accept)
        warning = await svc.check_pull(repo, rec.digest)
        warning = ", ".join(warning_header(w) for w in (stale, warning) if w) or None
        headers = {
            "Content-Type": rec.media_type,
            "Docker-Content-Digest": rec.digest,
            "ETag": f'"{rec.digest}"',
        }
        if warning:
            headers["Warning"] = warning
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(rec.content))
            return web.Response(status=200, headers=headers)
        return web.Response(status=200, body=rec.content, headers=headers)
    if request.method == "PUT":
        refuse_proxy_push(svc, repo)
        limit = svc.config.max_manifest_bytes
        length = _content_length(request)
        if length is not None and length > limit:
            raise RegistryError("SIZE_INVALID", message=f"manifest exceeds {limit} bytes", status=413)
        content = bytearray()
        async for chunk in _body(request):
            content += chunk
            if len(content) > limit:
                raise RegistryError("SIZE_INVALID", message=f"manifest exceeds {limit} bytes", status=413)
        pushed = await svc.put_manifest(repo, ref, bytes(content), request.headers.get("Content-Type"), _actor(request))
        headers = {
            "Location": pushed.location or f"/v2/{repo}/manifests/{pushed.digest}",
            "Docker-Content-Digest": pushed.digest,
            "Content-Length": "0",
        }
        if pushed.subject:
            headers["OCI-Subject"] = pushed.subject
        return web.Response(status=201, headers=headers)
    if request.method == "DELETE":
        await svc.delete_manifest(repo, ref, _actor(request))
        return web.Response(status=202, headers={"Content-Length": "0"})
    raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD", "PUT", "DELETE"])


async def blob(request: web.Request, svc: RegistryService, m: dict[str, str]) -> web.StreamResponse:
    repo, digest = m["name"], m["digest"]
    if request.method in ("GET", "HEAD"):
        if svc.proxy is not None and svc.proxy.route(repo) is not None:
            found = await svc.proxy.blob(repo, digest, request.method == "HEAD")
            if isinstance(found, ProxiedBlob):
                return await _stream_proxied(request, found)
            info = found
        else:
            info = await svc.stat_blob(repo, digest)
        headers = {"Docker-Content-Digest": info.digest, "Content-Type": "application/octet-stream"}
        if info.path is not None:
            # FileResponse serves Range requests and uses sendfile(2): no copy through Python.
            resp = SendfileResponse(info.path, svc.executor, headers=headers)
            resp.etag = info.digest.replace(":", "-")
            return resp
        return await _blob_from_store(request, svc, info, headers)
    if request.method == "DELETE":
        await svc.delete_blob(repo, digest)
        return web.Response(status=202, headers={"Content-Length": "0"})
    raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD", "DELETE"])


async def _blob_from_store(
    request: web.Request, svc: RegistryService, info: BlobInfo, headers: dict[str, str]
) -> web.StreamResponse:
    """A blob without a local file (object storage): a 307 to a presigned URL, or streamed.

    The redirect is offered by stores with ``presigned_url(digest)`` (None when turned off);
    streaming serves one byte range (``Range: bytes=a-b``), as the file path does.
    """
    presign = getattr(svc.blobs, "presigned_url", None)
    if request.method == "GET" and presign is not None:
        url = await svc.run(presign, info.digest)
        if url:
            return web.Response(status=307, headers={**headers, "Location": url, "Content-Length": "0"})
    start, end, status = 0, info.size, 200
    if "Range" in request.headers:
        try:
            rng = request.http_range
        except ValueError:
            rng = slice(info.size, None)
        if rng.start is not None and rng.start < 0:
            start = max(info.size + rng.start, 0)
        elif rng.start is not None:
            start = rng.start
            end = min(rng.stop, info.size) if rng.stop is not None else info.size
        if start >= end and info.size:
            raise web.HTTPRequestRangeNotSatisfiable(headers={"Content-Range": f"bytes */{info.size}"})
        if (start, end) != (0, info.size):
            status = 206
            headers = {**headers, "Content-Range": f"bytes {start}-{end - 1}/{info.size}"}
    resp = web.StreamResponse(status=status, headers={**headers, "Accept-Ranges": "bytes"})
    resp.content_length = end - start
    resp.etag = info.digest.replace(":", "-")
    if request.method == "HEAD":
        await resp.prepare(request)
        return resp
    try:
        f = await svc.run(svc.blobs.open, info.digest)
    except KeyError as exc:  # BlobNotFound: gone from the store although linked
        raise RegistryError("BLOB_UNKNOWN", detail={"digest": info.digest}) from exc
    try:
        await resp.prepare(request)
        if start:
            await svc.run(f.seek, start)
        left = end - start
        while left > 0:
            chunk = await svc.run(f.read, min(_READ, left))
            if not chunk:
                break  # the store came up short: the client sees a truncated body, never wrong bytes
            await resp.write(chunk)
            left -= len(chunk)
    finally:
        await svc.run(f.close)
    await resp.write_eof()
    return resp


async def _stream_proxied(request: web.Request, blob: ProxiedBlob) -> web.StreamResponse:
    """Send a blob as it arrives from a pull-through upstream. A bad body raises after some bytes went
    out: the connection is then cut short of its length, so the client never takes it for complete."""
    headers = {"Docker-Content-Digest": blob.digest, "Content-Type": "application/octet-stream"}
    if blob.size is not None:
        headers["Content-Length"] = str(blob.size)
    resp = web.StreamResponse(status=200, headers=headers)
    async with contextlib.aclosing(blob.chunks) as chunks:
        try:  # a body that fails before its first byte is sent still gets a proper error
            first = await anext(chunks, b"")
        except UpstreamError as exc:
            raise RegistryError("UNAVAILABLE", message=str(exc), detail={"digest": blob.digest}) from exc
        await resp.prepare(request)
        if first:
            await resp.write(first)
        async for chunk in chunks:
            await resp.write(chunk)
    await resp.write_eof()
    return resp


def refuse_proxy_push(svc: RegistryService, repo: str) -> None:
    """Pull-through namespaces hold the upstream's content only (as in Harbor and Quay): no pushes."""
    proxy = svc.proxy.namespace_of(repo) if svc.proxy is not None else None
    if proxy is not None:
        raise RegistryError(
            "DENIED",
            message=f"{proxy.namespace}/ is a pull-through cache of {proxy.upstream}: pushes are refused",
            detail={"repository": repo},
        )


async def upload_start(request: web.Request, svc: RegistryService, m: dict[str, str]) -> web.StreamResponse:
    repo = m["name"]
    if request.method != "POST":
        raise web.HTTPMethodNotAllowed(request.method, ["POST"])
    refuse_proxy_push(svc, repo)
    q = request.query
    mount, source = q.get("mount"), q.get("from")
    if mount is not None:
        from hallmark.registry.names import check_digest

        check_digest(mount)
        if source and request.get(MOUNT_ALLOWED, True) and await svc.mount_blob(repo, mount, source):
            return web.Response(
                status=201,
                headers={
                    "Location": f"/v2/{repo}/blobs/{mount}",
                    "Docker-Content-Digest": mount,
                    "Content-Length": "0",
                },
            )
    elif "digest" in q:
        length = _content_length(request)
        raw = raw_body(request, svc.executor, length)
        try:
            info = await svc.monolithic_upload(repo, q["digest"], raw or _body(request), length, _principal(request))
        finally:
            if raw is not None:
                raw.release()
        return _blob_created(repo, info)
    upload_id = await svc.start_upload(repo)
    return web.Response(status=202, headers=_upload_headers(repo, upload_id, 0))


async def upload(request: web.Request, svc: RegistryService, m: dict[str, str]) -> web.StreamResponse:
    repo, upload_id = m["name"], m["uuid"]
    if request.method in ("PATCH", "PUT"):
        refuse_proxy_push(svc, repo)
        length, crange = _content_length(request), _content_range(request)
        raw = raw_body(request, svc.executor, length)
        try:
            if request.method == "PATCH":
                size = await svc.patch_upload(
                    repo, upload_id, raw or _body(request), crange, length, _principal(request)
                )
                return web.Response(status=202, headers=_upload_headers(repo, upload_id, size))
            info = await svc.finish_upload(
                repo, upload_id, request.query.get("digest"), raw or _body(request), crange, length, _principal(request)
            )
            return _blob_created(repo, info)
        finally:
            if raw is not None:
                raw.release()
    if request.method == "GET":
        size = await svc.upload_status(repo, upload_id)
        return web.Response(status=204, headers=_upload_headers(repo, upload_id, size))
    if request.method == "DELETE":
        await svc.cancel_upload(repo, upload_id)
        return web.Response(status=204, headers={"Content-Length": "0"})
    raise web.HTTPMethodNotAllowed(request.method, ["GET", "PATCH", "PUT", "DELETE"])


async def referrers(request: web.Request, svc: RegistryService, m: dict[str, str]) -> web.StreamResponse:
    repo, digest = m["name"], m["digest"]
    artifact_type = request.query.get("artifactType")
    refs, more = await svc.referrers(repo, digest, artifact_type, request.query.get("last"))
    headers = {}
    if artifact_type is not None:
        headers["OCI-Filters-Applied"] = "artifactType"
    if more and refs:
        params = {"last": refs[-1].digest}
        if artifact_type is not None:
            params["artifactType"] = artifact_type
        headers["Link"] = next_link(f"/v2/{repo}/referrers/{digest}", params)
    return oci_json(referrers_document(refs), headers=headers, ctype=OCI_INDEX)


ROUTES: list[tuple[re.Pattern[str], Handler]] = [
    (re.compile(r"^/v2/?$"), base),
    (re.compile(r"^/v2/_catalog$"), catalog),
    (re.compile(r"^/v2/(?P<name>.+)/tags/list$"), tags_list),
    (re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)$"), manifest),
    (re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/?$"), upload_start),
    (re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/(?P<uuid>[^/]+)$"), upload),
    (re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>[^/]+)$"), blob),
    (re.compile(r"^/v2/(?P<name>.+)/referrers/(?P<digest>[^/]+)$"), referrers),
]


def match_route(path: str) -> tuple[Handler, dict[str, str]] | None:
    for pattern, handler in ROUTES:
        m = pattern.match(path)
        if m:
            return handler, m.groupdict()
    return None


async def dispatch(request: web.Request) -> web.StreamResponse:
    svc = request.app[SERVICE_KEY]
    found = match_route(request.path)
    head = request.method == "HEAD"
    try:
        raw_segments = request.raw_path.split("?", 1)[0].split("/")
        if ".." in raw_segments or "." in raw_segments or "%2e%2e" in request.raw_path.lower():
            raise RegistryError("NAME_INVALID", message="path segments '.' and '..' are not allowed")
        if found is None:
            raise RegistryError("NAME_INVALID", message="unknown registry endpoint", status=404)
        handler, params = found
        guard = request.app.get(GUARD_KEY)
        if guard is not None:
            resp = await guard(request, handler, svc, params)
        else:
            resp = await handler(request, svc, params)
    except RegistryError as err:
        resp = error_response(err, head)
    except StorageUnavailable as exc:
        # Object storage down, throttling or misconfigured: a retryable 503, never a 500 or a partial blob.
        unavailable = RegistryError("UNAVAILABLE", message=str(exc), headers={"Retry-After": "5"})
        resp = error_response(unavailable, head)
    if request.get(RAW_KEY):
        resp.force_close()  # the body bypassed the HTTP parser: this connection cannot be reused
    resp.headers.update(API_VERSION)
    return resp


def add_routes(app: web.Application, svc: RegistryService) -> None:
    app[SERVICE_KEY] = svc
    app.router.add_route("*", "/v2", dispatch)
    app.router.add_route("*", "/v2/{tail:.*}", dispatch)
