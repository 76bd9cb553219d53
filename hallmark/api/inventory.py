"""Cluster inventories: ``POST /api/v1/clusters/{cluster}/inventory``, ``GET /api/v1/clusters``,
``GET /api/v1/clusters/{cluster}/workloads``.

Posting needs the catalog role ``cluster_reporter`` (what an in-cluster reporter's robot holds;
administrator qualifies) and is audited (``cluster.inventory``). Reading needs a login; who
runs what where is sensitive, so the workload listing is filtered: administrators, security
reviewers and auditors see every workload, anyone else only workloads that run an image of a
Hallmark repository they may pull (and, of those, only the Hallmark images they may pull).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import orjson
from aiohttp import web

from hallmark.access.model import ADMINISTRATOR, AUDITOR, CLUSTER_REPORTER, SECURITY_REVIEWER
from hallmark.api.common import ApiError, json_response
from hallmark.api.guards import actor, audit
from hallmark.config import Config
from hallmark.inventory.parse import Inventory, InventoryError, parse_inventory
from hallmark.inventory.refs import host_forms
from hallmark.inventory.store import InventoryStale, cluster_summary, ingest, list_workloads
from hallmark.metadata.store import MetadataStore
from hallmark.registry.service import RegistryService
from hallmark.web.auth import ACCESS_KEY, api_permissions
from hallmark.web.authz import LOGIN, role, route

# kubectl's JSON for a few thousand pods; managedFields are not in `kubectl get -o json` and
# `hallmark k8s report` also drops annotations. Counted after any Content-Encoding is undone.
MAX_INVENTORY_BYTES = 64 << 20
MAX_FUTURE_SKEW = dt.timedelta(minutes=5)
CLUSTER_PATH = "/api/v1/clusters/{cluster:[a-z0-9][a-z0-9._-]*}"
FULL_VIEW_ROLES = (ADMINISTRATOR, SECURITY_REVIEWER, AUDITOR)


def hallmark_hosts(config: Config) -> set[str]:
    """Hosts that mean this registry in an image reference: ``[server] public_hosts``, the host
    of ``public_url`` and a non-wildcard listen address (as admission control counts them)."""
    hosts = {h.strip().lower() for h in getattr(config.server, "public_hosts", []) if h.strip()}
    if config.server.public_url:
        hosts |= host_forms(config.server.public_url)
    listen = config.server.listen.lower()
    if listen.rsplit(":", 1)[0].strip("[]") not in ("0.0.0.0", "::", ""):  # noqa: S104 (not a bind)
        hosts.add(listen)
    return hosts


def _cluster(request: web.Request) -> str:
    name = request.match_info["cluster"]
    if len(name) > 253 or not name[-1].isalnum():
        raise ApiError(400, "INVALID_INPUT", f"invalid cluster name {name!r} (lowercase letters, digits, . _ -)")
    return name


def _taken_at(request: web.Request, received: dt.datetime) -> dt.datetime:
    raw = request.query.get("taken_at")
    if raw is None:
        return received
    try:
        taken = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ApiError(400, "INVALID_INPUT", f"taken_at {raw!r} is not an RFC 3339 time") from None
    if taken.tzinfo is None:
        raise ApiError(400, "INVALID_INPUT", "taken_at needs a time zone offset (e.g. 2026-12-05T19:00:00Z)")
    if taken > received + MAX_FUTURE_SKEW:
        # A time in the future would lock out every later inventory of the cluster.
        raise ApiError(400, "INVALID_INPUT", f"taken_at {raw} is in the future (server time {received.isoformat()})")
    return taken.astimezone(dt.UTC)


async def _read_body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_INVENTORY_BYTES:
        raise ApiError(413, "TOO_LARGE", f"an inventory may have at most {MAX_INVENTORY_BYTES >> 20} MiB")
    buf = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        buf += chunk
        if len(buf) > MAX_INVENTORY_BYTES:
            raise ApiError(413, "TOO_LARGE", f"an inventory may have at most {MAX_INVENTORY_BYTES >> 20} MiB")
    return bytes(buf)


def routes(meta: MetadataStore, config: Config, registry: RegistryService) -> list[web.RouteDef]:
    run = registry.run
    hosts = hallmark_hosts(config)

    async def full_view(request: web.Request) -> bool:
        if ACCESS_KEY not in request.app:
            return True
        perms = await api_permissions(request)
        return any(perms.has_role(r) for r in FULL_VIEW_ROLES)

    async def post_inventory(request: web.Request) -> web.Response:
        cluster = _cluster(request)
        received = dt.datetime.now(dt.UTC)
        taken = _taken_at(request, received)
        raw = await _read_body(request)

        def parse() -> Inventory:
            try:
                doc = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise ApiError(400, "INVALID_INPUT", f"the inventory is not valid JSON: {exc}") from None
            try:
                inv = parse_inventory(doc)
            except InventoryError as exc:
                raise ApiError(400, "INVALID_INPUT", str(exc)) from None
            return inv

        inv = await run(parse)
        who = await actor(request)
        try:
            result = await run(ingest, meta, cluster, inv, taken, who, hosts, received)
        except InventoryStale as exc:
            raise ApiError(
                409, "INVENTORY_STALE", str(exc), {"stored_inventory_at": exc.stored, "offered": exc.offered}
            ) from None
        doc = result.as_dict()
        detail = {
            "cluster": cluster,
            "inventory_at": doc["inventory_at"].isoformat(),
            "workloads": doc["workloads"],
            "exposed": doc["exposed"],
            "skipped": len(doc["skipped"]),
            "unresolved": len(doc["unresolved"]),
        }
        await audit(request, "cluster.inventory", None, None, detail)
        return json_response(doc)

    async def get_clusters(request: web.Request) -> web.Response:
        rows = await run(cluster_summary, meta)
        if not await full_view(request):
            for r in rows:  # object names of skipped items are workload details
                r.pop("skipped", None)
        return json_response({"clusters": rows})

    async def get_workloads(request: web.Request) -> web.Response:
        cluster = _cluster(request)
        q = request.query
        exposed = {"true": True, "false": False, None: None}.get(q.get("exposed"), "bad")
        if exposed == "bad":
            raise ApiError(400, "INVALID_INPUT", "exposed must be true or false")
        try:
            limit = min(max(int(q.get("limit", "1000")), 1), 10_000)
            offset = max(int(q.get("offset", "0")), 0)
        except ValueError:
            raise ApiError(400, "INVALID_INPUT", "limit and offset are integers") from None
        info = await run(cluster_summary, meta, cluster)
        if not info:
            raise ApiError(404, "NOT_FOUND", f"no inventory for cluster {cluster!r}")
        rows = await run(
            list_workloads, meta, cluster, q.get("namespace") or None, exposed, q.get("kind") or None, limit + 1, offset
        )
        more = len(rows) > limit
        rows = rows[:limit]
        if not await full_view(request):
            perms = await api_permissions(request)

            def readable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
                shown = []
                for w in rows:  # perms.can may read the database (public repositories)
                    mine = [i for i in w["images"] if i["repo_name"] and perms.can(i["repo_name"], "pull")]
                    if mine:
                        w["images"] = [i for i in w["images"] if not i["repo_name"] or i in mine]
                        shown.append(w)
                return shown

            rows = await run(readable, rows)
        body: dict[str, Any] = {
            "cluster": cluster,
            "inventory_at": info[0]["inventory_at"],
            "workloads": rows,
            "next_offset": offset + limit if more else None,
        }
        return json_response(body)

    return [
        route("GET", "/api/v1/clusters", get_clusters, LOGIN),
        route("POST", CLUSTER_PATH + "/inventory", post_inventory, role(CLUSTER_REPORTER)),
        route("GET", CLUSTER_PATH + "/workloads", get_workloads, LOGIN),
    ]
