"""Cluster inventories in the database: one atomic replace per upload, and the queries over them.

``ingest`` resolves what the parser could not (tags of Hallmark's own images, which repository
an image is) and replaces the cluster's rows in ONE transaction, after checking that the
stored inventory is not newer: a refused or failed upload leaves the previous one whole.

Public queries (for the explore module, the API and the portal):
- ``cluster_summary(meta, cluster=None)`` -> list of cluster dicts
- ``list_workloads(meta, cluster, ...)`` -> list of workload dicts with their images
- ``workloads_running(meta, digests)`` -> one flat row per (workload, container) running a digest
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, and_, delete, func, insert, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from hallmark.inventory.parse import Inventory
from hallmark.inventory.tables import clusters, workload_images, workloads
from hallmark.metadata.store import MetadataStore
from hallmark.metadata.tables import repositories, tags

MAX_SKIPS_KEPT = 200  # in clusters.summary; the response to the upload lists them all


class InventoryStale(Exception):
    """The stored inventory was taken after this one: nothing was replaced."""

    def __init__(self, cluster: str, stored: dt.datetime, offered: dt.datetime) -> None:
        super().__init__(
            f"cluster {cluster!r} already has an inventory taken at {_iso(stored)}; "
            f"this one was taken at {_iso(offered)} and is older: nothing was replaced"
        )
        self.stored, self.offered = stored, offered


@dataclass(frozen=True)
class IngestResult:
    cluster: str
    inventory_at: dt.datetime
    received_at: dt.datetime
    summary: dict[str, Any]
    skipped: list[dict[str, Any]]
    unresolved: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "inventory_at": self.inventory_at,
            "received_at": self.received_at,
            **{k: v for k, v in self.summary.items() if k != "skipped"},
            "skipped": self.skipped,
            "unresolved": self.unresolved,
        }


def _iso(t: dt.datetime) -> str:
    return _utc(t).isoformat().replace("+00:00", "Z")


def _utc(t: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes: they were stored as UTC."""
    return t.replace(tzinfo=dt.UTC) if t.tzinfo is None else t.astimezone(dt.UTC)


def _resolve(conn: Connection, inv: Inventory, hosts: set[str]) -> list[dict[str, Any]]:
    """Fill repo_name for Hallmark's images and digests from tags; returns what stays unresolved."""
    ours = [i for w in inv.workloads for i in w.images if i.host in hosts and i.repository]
    names = {i.repository for i in ours if i.repository}
    known: set[str] = set()
    for chunk in _chunks(sorted(names)):
        known |= set(conn.execute(select(repositories.c.name).where(repositories.c.name.in_(chunk))).scalars())
    pairs = sorted({(i.repository, i.tag) for i in ours if i.digest is None and i.tag and i.repository in known})
    tagged: dict[tuple[str, str], str] = {}
    for chunk in _chunks(pairs):
        q = (
            select(repositories.c.name, tags.c.name, tags.c.digest)
            .join(tags, tags.c.repo_id == repositories.c.id)
            .where(tuple_(repositories.c.name, tags.c.name).in_(chunk))
        )
        tagged |= {(r, t): d for r, t, d in conn.execute(q)}
    unresolved: list[dict[str, Any]] = []
    for w in inv.workloads:
        for img in w.images:
            if img.host in hosts and img.repository in known:
                img.repo_name = img.repository
                if img.digest is None and img.tag and (img.repository, img.tag) in tagged:
                    img.digest, img.digest_source = tagged[(img.repository, img.tag)], "tag"
            if img.digest is None:
                if img.host is None:
                    reason = "not a valid image reference"
                elif img.host not in hosts:
                    reason = "no imageID and no digest in the reference of an image outside Hallmark"
                elif img.repo_name is None:
                    reason = f"repository {img.repository!r} is not in Hallmark"
                else:
                    reason = f"no imageID, no digest, and tag {img.tag!r} is not in Hallmark"
                unresolved.append(
                    {
                        "kind": w.kind,
                        "namespace": w.namespace,
                        "name": w.name,
                        "container": img.container,
                        "image": img.image_ref,
                        "reason": reason,
                    }
                )
    return unresolved


def _chunks(seq: list[Any], n: int = 500) -> Iterable[list[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def _lock_cluster(conn: Connection, row: dict[str, Any]) -> dt.datetime | None:
    """Create the cluster row if missing and lock it; the stored inventory time (None if new)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(clusters).values(**row).on_conflict_do_nothing(index_elements=["name"])
    if conn.execute(stmt.returning(clusters.c.name)).first() is not None:
        return None
    q = select(clusters.c.inventory_at).where(clusters.c.name == row["name"])
    if conn.dialect.name == "postgresql":
        q = q.with_for_update()  # SQLite: the store's write lock already serialises writers
    return _utc(conn.execute(q).scalar_one())


def ingest(
    meta: MetadataStore,
    cluster: str,
    inv: Inventory,
    inventory_at: dt.datetime,
    received_by: str,
    hosts: set[str],
    received_at: dt.datetime | None = None,
) -> IngestResult:
    """Replace ``cluster``'s workloads with ``inv`` unless a newer inventory is stored (InventoryStale)."""
    received = _utc(received_at or dt.datetime.now(dt.UTC))
    taken = _utc(inventory_at)
    skipped = [s.as_dict() for s in inv.skipped]
    with meta.transaction() as conn:
        unresolved = _resolve(conn, inv, hosts)
        summary = {
            "counts": dict(sorted(inv.counts.items())),
            "workloads": len(inv.workloads),
            "exposed": sum(1 for w in inv.workloads if w.exposed),
            "images": sum(len(w.images) for w in inv.workloads),
            "unresolved": len(unresolved),
            "newest_object_created_at": _iso(inv.newest_created) if inv.newest_created else None,
            "skipped": skipped[:MAX_SKIPS_KEPT],
            "skipped_total": len(skipped),
        }
        row = {
            "name": cluster,
            "inventory_at": taken,
            "received_at": received,
            "received_by": received_by[:128],
            "summary": orjson.dumps(summary).decode(),
        }
        stored = _lock_cluster(conn, row)
        if stored is not None:
            if stored > taken:
                raise InventoryStale(cluster, stored, taken)
            conn.execute(update(clusters).where(clusters.c.name == cluster).values(**row))
            conn.execute(delete(workloads).where(workloads.c.cluster == cluster))  # images cascade
        if inv.workloads:
            conn.execute(
                insert(workloads),
                [
                    {
                        "cluster": cluster,
                        "namespace": w.namespace,
                        "kind": w.kind,
                        "name": w.name,
                        "uid": w.uid,
                        "exposed": w.exposed,
                        "exposure": orjson.dumps(w.exposure).decode() if w.exposure else None,
                        "labels": orjson.dumps(w.labels).decode() if w.labels else None,
                    }
                    for w in inv.workloads
                ],
            )
            ids = {
                (r.namespace, r.kind, r.name): r.id
                for r in conn.execute(
                    select(workloads.c.id, workloads.c.namespace, workloads.c.kind, workloads.c.name).where(
                        workloads.c.cluster == cluster
                    )
                )
            }
            conn.execute(
                insert(workload_images),
                [
                    {
                        "workload_id": ids[(w.namespace, w.kind, w.name)],
                        "container": i.container,
                        "container_type": i.container_type,
                        "image_ref": i.image_ref,
                        "digest": i.digest,
                        "digest_source": i.digest_source,
                        "repo_name": i.repo_name,
                    }
                    for w in inv.workloads
                    for i in w.images
                ],
            )
    return IngestResult(cluster, taken, received, summary, skipped, unresolved)


# -- queries ----------------------------------------------------------------------------------------
def _cluster_doc(r: Any) -> dict[str, Any]:
    summary = orjson.loads(r.summary) if r.summary else {}
    return {
        "name": r.name,
        "inventory_at": _utc(r.inventory_at),
        "received_at": _utc(r.received_at),
        "received_by": r.received_by,
        "workloads": summary.get("workloads", 0),
        "exposed": summary.get("exposed", 0),
        "images": summary.get("images", 0),
        "unresolved": summary.get("unresolved", 0),
        "counts": summary.get("counts", {}),
        "skipped": summary.get("skipped", []),
        "skipped_total": summary.get("skipped_total", 0),
    }


def cluster_summary(meta: MetadataStore, cluster: str | None = None) -> list[dict[str, Any]]:
    """Every cluster (or the one named): inventory time, who sent it, counts, what was skipped.

    Keys: name, inventory_at, received_at, received_by, workloads, exposed, images, unresolved,
    counts ({kind: n}), skipped ([{kind, namespace, name, reason}], first 200), skipped_total.
    """
    q = select(clusters).order_by(clusters.c.name)
    if cluster is not None:
        q = q.where(clusters.c.name == cluster)
    with meta.engine.connect() as conn:
        return [_cluster_doc(r) for r in conn.execute(q)]


def _image_doc(r: Any) -> dict[str, Any]:
    return {
        "container": r.container,
        "container_type": r.container_type,
        "image_ref": r.image_ref,
        "digest": r.digest,
        "digest_source": r.digest_source,
        "repo_name": r.repo_name,
    }


def list_workloads(
    meta: MetadataStore,
    cluster: str,
    namespace: str | None = None,
    exposed: bool | None = None,
    kind: str | None = None,
    limit: int | None = None,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """A cluster's workloads in (namespace, kind, name) order, each with its images.

    Keys: id, cluster, namespace, kind, name, uid, exposed, exposure (list of paths), labels,
    images ([{container, container_type, image_ref, digest, digest_source, repo_name}]).
    """
    conds = [workloads.c.cluster == cluster]
    if namespace is not None:
        conds.append(workloads.c.namespace == namespace)
    if exposed is not None:
        conds.append(workloads.c.exposed == exposed)
    if kind is not None:
        conds.append(workloads.c.kind == kind)
    q = select(workloads).where(and_(*conds)).order_by(workloads.c.namespace, workloads.c.kind, workloads.c.name)
    if limit is not None:
        q = q.limit(limit).offset(offset)
    with meta.engine.connect() as conn:
        rows = list(conn.execute(q))
        images: dict[int, list[dict[str, Any]]] = {}
        for chunk in _chunks([r.id for r in rows]):
            iq = (
                select(workload_images)
                .where(workload_images.c.workload_id.in_(chunk))
                .order_by(workload_images.c.workload_id, workload_images.c.id)
            )
            for i in conn.execute(iq):
                images.setdefault(i.workload_id, []).append(_image_doc(i))
    return [
        {
            "id": r.id,
            "cluster": r.cluster,
            "namespace": r.namespace,
            "kind": r.kind,
            "name": r.name,
            "uid": r.uid,
            "exposed": bool(r.exposed),
            "exposure": orjson.loads(r.exposure) if r.exposure else [],
            "labels": orjson.loads(r.labels) if r.labels else {},
            "images": images.get(r.id, []),
        }
        for r in rows
    ]


def workloads_running(meta: MetadataStore, digests: Iterable[str]) -> list[dict[str, Any]]:
    """Every workload container running one of ``digests``, over all clusters.

    One row per (workload, container, digest): workload_id, cluster, namespace, kind, name,
    exposed, exposure (list of paths), container, container_type, image_ref, digest,
    digest_source, repo_name, inventory_at (when the cluster's inventory was taken).
    """
    wanted = sorted(set(digests))
    out: list[dict[str, Any]] = []
    with meta.engine.connect() as conn:
        for chunk in _chunks(wanted):
            q = (
                select(
                    workloads.c.id.label("workload_id"),
                    workloads.c.cluster,
                    workloads.c.namespace,
                    workloads.c.kind,
                    workloads.c.name,
                    workloads.c.exposed,
                    workloads.c.exposure,
                    workload_images.c.container,
                    workload_images.c.container_type,
                    workload_images.c.image_ref,
                    workload_images.c.digest,
                    workload_images.c.digest_source,
                    workload_images.c.repo_name,
                    clusters.c.inventory_at,
                )
                .join(workloads, workloads.c.id == workload_images.c.workload_id)
                .join(clusters, clusters.c.name == workloads.c.cluster)
                .where(workload_images.c.digest.in_(chunk))
            )
            for r in conn.execute(q):
                d = r._asdict()
                d["exposed"] = bool(d["exposed"])
                d["exposure"] = orjson.loads(d["exposure"]) if d["exposure"] else []
                d["inventory_at"] = _utc(d["inventory_at"])
                out.append(d)
    out.sort(key=lambda d: (d["cluster"], d["namespace"], d["kind"], d["name"], d["container"]))
    return out


def workload_counts(meta: MetadataStore) -> dict[str, int]:
    """Totals over all clusters (clusters, workloads, exposed), for a dashboard tile."""
    with meta.engine.connect() as conn:
        n_clusters = conn.execute(select(func.count()).select_from(clusters)).scalar_one()
        n_workloads = conn.execute(select(func.count()).select_from(workloads)).scalar_one()
        n_exposed = conn.execute(select(func.count()).select_from(workloads).where(workloads.c.exposed)).scalar_one()
    return {"clusters": n_clusters, "workloads": n_workloads, "exposed": n_exposed}
