"""What the image page shows beyond the image document: provenance, where it runs, layers, history.

Each loader calls the domain module the JSON API uses (provenance store, inventory store,
admission decisions) and runs in a worker thread (``hm.registry.run``); the findings-over-time
chart is drawn here as plain SVG numbers, so the page needs no script and no CDN.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import orjson
from sqlalchemy import select

from hallmark.pipeline.tables import events

if TYPE_CHECKING:
    from collections.abc import Callable

    from hallmark.pipeline.service import Pipeline

MAX_CONFIG_BYTES = 8 << 20
CHART_POINTS = 120
CHART_W, CHART_H, CHART_PAD = 480, 140, 28
CHART_SEVERITIES = ("critical", "high", "medium", "low")
KIND_LABELS = {
    "ci": "CI",
    "slsa": "SLSA provenance",
    "intoto": "in-toto statement",
    "annotation": "manifest annotation",
    "label": "image label",
}


def web_link(url: Any) -> str | None:
    """Only http(s) URLs become links: a source could claim ``javascript:`` as its repository."""
    if not isinstance(url, str):
        return None
    parts = urlsplit(url)
    return url if parts.scheme in ("http", "https") and parts.netloc else None


def commit_link(source_repo: Any, revision: Any) -> str | None:
    """``<repo>/commit/<rev>``: the form GitHub, GitLab, Gitea and Bitbucket all answer."""
    base = web_link(source_repo)
    if base is None or not isinstance(revision, str) or not revision.isalnum():
        return None
    base = base.rstrip("/")
    return (base[:-4] if base.endswith(".git") else base) + "/commit/" + revision


def provenance_rows(pipeline: Pipeline, digest: str) -> list[dict[str, Any]]:
    """Every source's claim, best first (verified first: ``provenance.store.order``), with links."""
    from hallmark.provenance.store import provenance_for

    rows = provenance_for(pipeline.meta, digest)
    for r in rows:
        r["kind_label"] = KIND_LABELS.get(r["kind"], r["kind"])
        r["source_link"] = web_link(r["source_repo"])
        r["commit_link"] = commit_link(r["source_repo"], r["revision"])
        r["run_link"] = web_link(r["run_url"])
    return rows


def runs_in(pipeline: Pipeline, digest: str, can_read: Callable[[str | None], bool]) -> list[dict[str, Any]]:
    """Workload containers running ``digest`` with each workload's latest admission decision.

    Rows naming a repository the viewer may not pull are left out, as ``/api/v1/clusters/.../workloads``
    leaves them out.
    """
    from hallmark.admission.service import latest_decisions
    from hallmark.inventory.store import workloads_running

    rows = [r for r in workloads_running(pipeline.meta, [digest]) if r["repo_name"] is None or can_read(r["repo_name"])]
    decisions: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for cluster in sorted({r["cluster"] for r in rows}):
        for d in latest_decisions(pipeline, cluster):
            decisions.setdefault((d["cluster"], d["namespace"], d["kind"], d["name"]), d)
    for r in rows:
        a = decisions.get((r["cluster"], r["namespace"], r["kind"], r["name"]))
        if a is not None and isinstance(a.get("decided_at"), str):
            a["decided_at"] = dt.datetime.fromisoformat(a["decided_at"])
        r["admission"] = a
    return rows


def layers(pipeline: Pipeline, repo: str, digest: str) -> list[dict[str, Any]]:
    """Layers in order with size and the config ``history`` command that created each.

    History entries marked ``empty_layer`` (ENV, LABEL...) made no layer, so they are skipped when
    pairing; when the counts still disagree (squashed or hand-made images) the command stays empty.
    """
    rec = pipeline.meta.get_manifest(repo, digest, True)
    if rec is None:
        return []
    try:
        doc = orjson.loads(rec.content)
    except orjson.JSONDecodeError:
        return []
    descs = [d for d in doc.get("layers") or [] if isinstance(d, dict)] if isinstance(doc, dict) else []
    history: list[dict[str, Any]] = []
    cfg_digest = (doc.get("config") or {}).get("digest") if isinstance(doc, dict) else None
    if isinstance(cfg_digest, str) and (pipeline.blobs.stat(cfg_digest) or 0) <= MAX_CONFIG_BYTES:
        try:
            with pipeline.blobs.open(cfg_digest) as f:
                config = orjson.loads(f.read(MAX_CONFIG_BYTES))
            raw = config.get("history") if isinstance(config, dict) else None
            history = [h for h in raw or [] if isinstance(h, dict) and not h.get("empty_layer")]
        except (OSError, orjson.JSONDecodeError):
            history = []
    paired = len(history) == len(descs)
    out = []
    for i, d in enumerate(descs):
        h = history[i] if paired else {}
        out.append(
            {
                "index": i,
                "digest": d.get("digest"),
                "size": d.get("size") if isinstance(d.get("size"), int) else None,
                "media_type": d.get("mediaType"),
                "created_by": str(h.get("created_by") or "")[:2000],
                "created": h.get("created"),
                "comment": h.get("comment"),
            }
        )
    return out


def _by_severity(summary: Any) -> dict[str, int]:
    if not isinstance(summary, dict):
        return {}
    combined = summary.get("combined")
    by = (combined or {}).get("by_severity") if isinstance(combined, dict) else None
    by = by if isinstance(by, dict) else summary.get("by_severity")
    return {k: int(v) for k, v in (by or {}).items() if isinstance(v, int)}


def _utc(value: Any) -> dt.datetime | None:
    if not isinstance(value, dt.datetime):
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def finding_history(pipeline: Pipeline, image: dict[str, Any]) -> list[tuple[dt.datetime, dict[str, int]]]:
    """(when, counts per severity) from the ``image.findings_changed`` events of this image (every
    match that changed its findings, re-matches after an advisory update included), then now."""
    repo, digest = image["repository"], image["digest"]
    q = (
        select(events.c.created_at, events.c.payload)
        .where(events.c.type == "image.findings_changed", events.c.repo_name == repo, events.c.digest == digest)
        .order_by(events.c.id.desc())
        .limit(CHART_POINTS)
    )
    with pipeline.meta.engine.connect() as conn:
        rows = list(conn.execute(q))
    points: list[tuple[dt.datetime, dict[str, int]]] = []
    for created, payload in reversed(rows):
        when = _utc(created)
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            continue
        if when is not None:
            points.append((when, _by_severity(doc.get("summary"))))
    now = _utc(image.get("updated_at"))
    if image.get("summary") and now is not None and (not points or now > points[-1][0]):
        points.append((now, _by_severity(image["summary"])))
    return points


def chart(points: list[tuple[dt.datetime, dict[str, int]]]) -> dict[str, Any] | None:
    """Polylines in SVG user units for the template, one per severity; None without points."""
    if not points:
        return None
    t0, t1 = points[0][0].timestamp(), points[-1][0].timestamp()
    top = max([1, *(p[1].get(s, 0) for p in points for s in CHART_SEVERITIES)])
    inner_w, inner_h = CHART_W - 2 * CHART_PAD, CHART_H - 2 * CHART_PAD

    def x(t: float) -> float:
        return CHART_PAD + (inner_w * (t - t0) / (t1 - t0) if t1 > t0 else inner_w / 2)

    def y(n: int) -> float:
        return CHART_PAD + inner_h * (1 - n / top)

    lines = []
    for sev in CHART_SEVERITIES:
        pts = [(round(x(when.timestamp()), 1), round(y(c.get(sev, 0)), 1)) for when, c in points]
        if len(pts) == 1:  # one point: a short flat line, so it is visible
            pts = [(pts[0][0] - 6, pts[0][1]), (pts[0][0] + 6, pts[0][1])]
        lines.append(
            {"severity": sev, "points": " ".join(f"{a},{b}" for a, b in pts), "last": points[-1][1].get(sev, 0)}
        )
    summary = ", ".join(f"{s} {points[-1][1].get(s, 0)}" for s in CHART_SEVERITIES)
    return {
        "width": CHART_W,
        "height": CHART_H,
        "pad": CHART_PAD,
        "top": top,
        "lines": lines,
        "first": points[0][0],
        "last": points[-1][0],
        "count": len(points),
        "label": f"Findings over time, {len(points)} point(s); now {summary}",
        "rows": [(when, [c.get(s, 0) for s in CHART_SEVERITIES]) for when, c in points[-10:]],
    }


def base_and_advice(
    pipeline: Pipeline, repo: str, digest: str, can_read: Callable[[str | None], bool]
) -> dict[str, Any]:
    """The base image and upgrade advice of the image document (``hallmark.discovery.base``),
    without naming repositories the viewer may not pull (they read as an uncataloged base)."""
    from hallmark.discovery.base import base_and_advice as found

    doc = found(pipeline.meta, repo, digest, pipeline.config.lifecycle.eol_soon_days)
    base, advice = doc.get("base"), doc.get("advice")
    if base is not None and base.get("repository") and not can_read(base["repository"]):
        base = {"digest": base["digest"], "name": base.get("name"), "source": base["source"], "cataloged": False}
        advice = None
    if advice is not None:
        advice = {**advice, "replacements": [r for r in advice["replacements"] if can_read(r["repository"])]}
    return {"base": base, "advice": advice}
