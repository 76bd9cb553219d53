"""Flat forms of explore rows for CSV and tables: one line per row, lists joined with spaces."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any

WORKLOAD_COLUMNS = [
    "cluster", "namespace", "kind", "workload", "exposed", "exposure", "containers", "image", "digest_source",
    "finding_count", "findings", "top_severity", "kev", "fix_available", "source_repo", "commit", "pipeline",
    "run_id", "run_url", "verified", "owner", "grade", "stage", "eol_status",
]  # fmt: skip
IMAGE_COLUMNS = [
    "image", "workload_count", "exposed_count", "workloads", "finding_count", "findings", "top_severity", "kev",
    "fix_available", "source_repo", "commit", "pipeline", "run_id", "run_url", "verified", "owner", "grade",
    "stage", "eol_status",
]  # fmt: skip


def exposure_text(path: Mapping[str, Any]) -> str:
    """``shop.example/ -> svc/web:80`` for an ingress path, ``LoadBalancer svc/web:443`` for a service."""
    if path.get("via") == "ingress":
        where = f"{path.get('host') or '*'}{path.get('path') or '/'}"
        return f"{where} -> svc/{path.get('service')}:{path.get('port')}"
    ports = ",".join(str(p) for p in path.get("ports") or [])
    internal = " (internal)" if path.get("internal") else ""
    return f"{path.get('type') or 'Service'} svc/{path.get('service')}:{ports}{internal}"


def finding_text(f: Mapping[str, Any]) -> str:
    marks = ("KEV " if f.get("kev") else "") + ("fix" if f.get("fix_available") else "no-fix")
    return f"{f['id']}({f['severity']} {f['package']} {f['version']} {marks})"


def _common(row: Mapping[str, Any]) -> dict[str, Any]:
    findings = row.get("findings") or []
    source = row.get("source") or {}
    owner = row.get("owner") or {}
    life = row.get("lifecycle") or {}
    return {
        "finding_count": row.get("finding_count", len(findings)),
        "findings": " ".join(finding_text(f) for f in findings),
        "top_severity": findings[0]["severity"] if findings else "",
        "kev": any(f.get("kev") for f in findings),
        "fix_available": any(f.get("fix_available") for f in findings),
        "source_repo": source.get("repository") or "",
        "commit": source.get("commit") or "",
        "pipeline": source.get("pipeline") or "",
        "run_id": source.get("run_id") or "",
        "run_url": source.get("run_url") or "",
        "verified": "" if source.get("verified") is None else source.get("verified"),
        "owner": owner.get("name") or "",
        "grade": row.get("grade") or "",
        "stage": life.get("stage") or "",
        "eol_status": life.get("eol_status") or "",
    }


def flat(row: Mapping[str, Any], view: str) -> dict[str, Any]:
    """One row as a flat dict of the view's columns."""
    if view == "images":
        wls = row.get("workloads") or []
        return {
            "image": row["image"]["ref"],
            "workload_count": row.get("workload_count", len(wls)),
            "exposed_count": row.get("exposed_count", 0),
            "workloads": " ".join(f"{w['cluster']}/{w['namespace']}/{w['kind']}/{w['name']}" for w in wls),
            **_common(row),
        }
    w = row["workload"]
    return {
        "cluster": w["cluster"],
        "namespace": w["namespace"],
        "kind": w["kind"],
        "workload": w["name"],
        "exposed": w["exposed"],
        "exposure": " ; ".join(exposure_text(p) for p in w.get("exposure") or []),
        "containers": " ".join(c["name"] for c in row.get("containers") or []),
        "image": row["image"]["ref"],
        "digest_source": row["image"].get("digest_source") or "",
        **_common(row),
    }


def to_csv(rows: Sequence[Mapping[str, Any]], view: str) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=IMAGE_COLUMNS if view == "images" else WORKLOAD_COLUMNS)
    writer.writeheader()
    for row in rows:
        writer.writerow({k: str(v).lower() if isinstance(v, bool) else v for k, v in flat(row, view).items()})
    return out.getvalue()
