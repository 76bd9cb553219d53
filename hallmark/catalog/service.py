"""Catalog logic: lifecycle stages, promotion gates and the approval stamp.

Stages follow what Harbor/Quay users expect of a curated catalog: every pushed image starts in
``staging``; a security reviewer approves it only when the gates pass (scan finished, no
unsuppressed finding of any kind -- vulnerability, exposed secret, malware, configuration check --
at or above the configured severity, complete advisory coverage and content scan, no malware,
optionally a verified signature). Approval signs the manifest with the enterprise key
when one is configured, so anyone can check later that the catalog approved exactly this digest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from hallmark.catalog.store import DEFAULT_STAGE, CatalogStore
from hallmark.digest import is_digest
from hallmark.pipeline.findings import KIND_LABELS, at_or_above, combine, content_by_kind, of_summary, scan_errors
from hallmark.registry.names import valid_name, valid_tag

if TYPE_CHECKING:
    from hallmark.access.audit import AuditLog
    from hallmark.config import CatalogConfig
    from hallmark.pipeline.service import Pipeline

STAGES = ("staging", "approved", "deprecated", "retired")
TRANSITIONS = frozenset(
    {
        ("staging", "approved"),
        ("approved", "deprecated"),
        ("deprecated", "approved"),
        ("approved", "retired"),
        ("deprecated", "retired"),
    }
)
_ENTRY_FIELDS = (
    "owner",
    "owner_kind",
    "description",
    "support_status",
    "signature_digest",
    "replacement",
    "stage_reason",
    "stage_changed_at",
    "updated_at",
)


class CatalogError(Exception):
    """Base class; ``status`` and ``code`` map to the API error."""

    status = 400
    code = "INVALID_INPUT"


class NotFound(CatalogError):
    status = 404
    code = "NOT_FOUND"


class InvalidTransition(CatalogError):
    status = 409
    code = "INVALID_TRANSITION"


class UnknownReplacement(CatalogError):
    """The named replacement is not in the registry (or cannot replace this image)."""

    code = "REPLACEMENT_UNKNOWN"


class GateFailed(CatalogError):
    status = 409
    code = "GATE_FAILED"

    def __init__(self, message: str, gates: list[Gate]) -> None:
        super().__init__(message)
        self.gates = gates


class StampFailed(CatalogError):
    """The approval could not be signed; the stage is left unchanged rather than approved unsigned."""

    status = 500
    code = "SIGNING_FAILED"


@dataclass
class Gate:
    name: str
    passed: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class CatalogService:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.store = CatalogStore(pipeline.meta)

    @property
    def cfg(self) -> CatalogConfig:
        return self.pipeline.config.catalog

    # -- reads -------------------------------------------------------------------------------
    def entry(self, repo: str, digest: str, *, history: bool = True) -> dict[str, Any]:
        """Entry, image status, signature verification status and (optionally) the stage history."""
        from hallmark.signing.service import verification_status

        image = self.pipeline.store.get_image(repo, digest)
        if image is None:
            raise NotFound(f"{repo}@{digest} is not an image known to the catalog")
        out: dict[str, Any] = {"repository": repo, "digest": digest, **summary(self.store, repo, digest)}
        out["image_status"] = image["status"]
        out["combined"] = of_summary(image["summary"]) if image.get("summary") else None
        out["verification"] = verification_status(self.pipeline, repo, digest)
        if history:
            out["history"] = self.store.history(repo, digest)
        return out

    def search(
        self, stage: str | None, q: str | None, owner: str | None, grade: str | None = None
    ) -> list[dict[str, Any]]:
        """``grade``: comma-separated health grades to keep (``A,B``; ``unknown`` too)."""
        from hallmark.lifecycle.health import GradeError, parse_grades

        if stage is not None and stage not in STAGES:
            raise CatalogError(f"unknown stage {stage!r} (known: {', '.join(STAGES)})")
        try:
            grades = parse_grades(grade)
        except GradeError as exc:
            raise CatalogError(str(exc)) from exc
        return self.store.search(stage, q, owner, grades=grades)

    # -- changes -----------------------------------------------------------------------------
    def update(self, repo: str, digest: str, values: dict[str, Any]) -> dict[str, Any]:
        """Owner, description and support status (descriptive metadata; no stage change)."""
        if self.pipeline.store.get_image(repo, digest) is None:
            raise NotFound(f"{repo}@{digest} is not an image known to the catalog")
        if "owner" in values:  # a named owner is a team unless said otherwise; clearing it clears the kind
            values["owner_kind"] = values.get("owner_kind") or ("team" if values["owner"] else None)
        self.store.set_fields(repo, digest, values)
        return self.entry(repo, digest, history=False)

    def gates(self, repo: str, digest: str, force: bool = False) -> list[Gate]:
        """Every approval gate with its outcome; disabled gates pass and say so."""
        image = self.pipeline.store.get_image(repo, digest)
        if image is None:
            raise NotFound(f"{repo}@{digest} is not an image known to the catalog")
        summary_ = image.get("summary") or {}
        done = image["status"] == "done"
        report = self.pipeline.store.get_report(repo, digest, "content")
        content = report["doc"] if report is not None else None
        gates = [Gate("scan", done, f"pipeline status is {image['status']}" + ("" if done else "; wait for done"))]
        gates.append(self._severity_gate(summary_, content, done))
        gates.append(self._complete_gate(summary_, content, done, force))
        gates.append(self._malware_gate(content))
        gates.append(self._signature_gate(repo, digest))
        return gates

    def _severity_gate(self, summary_: dict[str, Any], content: dict[str, Any] | None, done: bool) -> Gate:
        """Vulnerabilities (VEX-suppressed excluded) and content findings against one threshold.

        Counted from the stored reports, not from a summary that could predate the content
        report; a missing content report fails while content checks are on, since its secrets,
        malware and configuration findings are then unknown rather than absent.
        """
        limit = self.cfg.gate_max_severity
        if limit == "none":
            return Gate("severity", True, "not required (catalog.gate_max_severity = none)")
        if not done:
            return Gate("severity", False, "no vulnerability report yet")
        if content is None and self.pipeline.config.pipeline.content_checks:
            return Gate(
                "severity",
                False,
                "no content-check report: exposed secrets, malware and configuration findings are unknown, "
                "not absent; rescan the image",
            )
        counts = combine(
            summary_.get("by_severity"), content_by_kind(content.get("findings") or []) if content else None
        )
        skip = () if self.cfg.block_malware else ("malware",)
        over = at_or_above(counts, limit, skip)
        notes = []
        if summary_.get("suppressed"):
            notes.append(f"{summary_['suppressed']} suppressed by VEX")
        if content is None:
            notes.append("content checks are off (pipeline.content_checks = false): vulnerabilities only")
        elif skip and at_or_above(counts, limit).get("malware"):
            notes.append("malware not counted (catalog.block_malware = false)")
        note = f" ({'; '.join(notes)})" if notes else ""
        if not over:
            return Gate("severity", True, f"no unsuppressed finding at or above {limit}{note}")
        total: dict[str, int] = {}
        for kind_counts in over.values():
            for sev, n in kind_counts.items():
                total[sev] = total.get(sev, 0) + n
        by_sev = ", ".join(f"{s}: {n}" for s, n in total.items())
        by_kind = "; ".join(
            f"{KIND_LABELS.get(kind, kind)} {sum(c.values())} (" + ", ".join(f"{s}: {n}" for s, n in c.items()) + ")"
            for kind, c in over.items()
        )
        return Gate(
            "severity",
            False,
            f"{sum(total.values())} unsuppressed finding(s) at or above {limit} ({by_sev}) from {by_kind}{note}",
        )

    def _complete_gate(self, summary_: dict[str, Any], content: dict[str, Any] | None, done: bool, force: bool) -> Gate:
        """Advisory coverage and a content scan without scanner failures; only force with a reason
        accepts a gap, and the gate says which one."""
        if not self.cfg.require_complete_scan:
            return Gate("complete_scan", True, "not required (catalog.require_complete_scan = false)")
        if not done:
            return Gate("complete_scan", False, "no vulnerability report yet")
        gaps = []
        if not summary_.get("complete", False):
            missing = ", ".join(summary_.get("unsupported_releases") or []) or "the OS release"
            gaps.append(f"no advisory data for {missing}")
        errors = scan_errors(content)
        if errors:
            reasons = ", ".join(f"{r}: {n}" for r, n in sorted(errors.items()))
            gaps.append(f"content checks failed on {sum(errors.values())} file(s) ({reasons})")
        if not gaps:
            scanned = "; content checks ran without scanner errors" if content is not None else ""
            return Gate("complete_scan", True, "advisory data covers the image's OS release" + scanned)
        if force:
            return Gate("complete_scan", True, f"forced by the reviewer: {'; '.join(gaps)}")
        return Gate("complete_scan", False, f"{'; '.join(gaps)}; approve with force and a reason to accept that")

    def _malware_gate(self, content: dict[str, Any] | None) -> Gate:
        if not self.cfg.block_malware:
            return Gate("malware", True, "not required (catalog.block_malware = false)")
        if content is None:
            if not self.pipeline.config.pipeline.content_checks:
                return Gate("malware", True, "content checks are off (pipeline.content_checks = false)")
            return Gate("malware", False, "no content-check report yet")
        hits = [f for f in content.get("findings") or [] if f.get("kind") == "malware" and not f.get("suppressed")]
        if hits:
            paths = ", ".join(str(f.get("path")) for f in hits[:5])
            return Gate("malware", False, f"{len(hits)} malware finding(s): {paths}")
        return Gate("malware", True, "no malware found")

    def _signature_gate(self, repo: str, digest: str) -> Gate:
        if not self.cfg.require_signature_verification:
            return Gate("signature", True, "not required (catalog.require_signature_verification = false)")
        from hallmark.signing.errors import PolicyError
        from hallmark.signing.service import NotFound as SigNotFound
        from hallmark.signing.service import verify_image

        try:
            result = verify_image(self.pipeline, repo, digest)
        except (PolicyError, SigNotFound) as exc:
            return Gate("signature", False, f"cannot verify: {exc}")
        if result.get("passed"):
            return Gate("signature", True, f"verified under trust policy {result.get('policy')!r}")
        return Gate("signature", False, f"verification failed: {result.get('error') or 'no valid signature'}")

    def promote(
        self,
        repo: str,
        digest: str,
        to: str,
        actor: str,
        reason: str,
        *,
        force: bool = False,
        audit: AuditLog | None = None,
        client_addr: str | None = None,
        replacement: str | None = None,
    ) -> dict[str, Any]:
        """Move an image to another stage; approval runs the gates and stamps (signs) the manifest.

        Deprecation and retirement record ``replacement`` (``repo@digest`` or ``repo:tag``, which
        must be in the registry): the registry names it when it warns about or refuses a pull.
        Retiring a deprecated image without naming one keeps the deprecation's replacement.
        Raises ``InvalidTransition`` / ``GateFailed`` (409), ``NotFound``, ``UnknownReplacement``,
        ``CatalogError`` (bad input), each before anything changes. A refused approval is audited
        as denied, so reviewers' attempts are visible too.
        """
        if to not in STAGES:
            raise CatalogError(f"unknown stage {to!r} (known: {', '.join(STAGES)})")
        if not reason.strip():
            raise CatalogError("a reason is required for every stage change")
        if self.pipeline.store.get_image(repo, digest) is None:
            raise NotFound(f"{repo}@{digest} is not an image known to the catalog")
        current = _stage(self.store, repo, digest)
        if (current, to) not in TRANSITIONS:
            allowed = sorted(t for f, t in TRANSITIONS if f == current)
            raise InvalidTransition(
                f"cannot move {repo}@{digest} from {current} to {to}; from {current} it can go to: "
                + (", ".join(allowed) or "nothing (final stage)")
            )
        if replacement is not None:
            if to not in ("deprecated", "retired"):
                raise CatalogError(f"a replacement applies to deprecated or retired images, not {to}")
            replacement = self.check_replacement(repo, digest, replacement)
        elif to == "retired" and current == "deprecated":
            replacement = (self.store.get(repo, digest) or {}).get("replacement")
        detail: dict[str, Any] = {"from": current, "to": to, "reason": reason[:500], "forced": force}
        if replacement:
            detail["replacement"] = replacement
        gates = self.gates(repo, digest, force) if to == "approved" else []
        failed = [g for g in gates if not g.passed]
        if failed:
            if audit is not None:
                audit.record(
                    actor,
                    "promote",
                    repo,
                    digest,
                    "denied",
                    client_addr,
                    {**detail, "failed": [g.name for g in failed]},
                )
            raise GateFailed(
                f"approval refused by {', '.join(g.name for g in failed)}: " + "; ".join(g.detail for g in failed),
                gates,
            )
        signature = self._stamp(repo, digest) if to == "approved" else None
        ok = self.store.transition(
            repo,
            digest,
            current,
            to,
            actor,
            reason,
            forced=force,
            signature_digest=signature,
            detail={"gates": [g.as_dict() for g in gates], **({"replacement": replacement} if replacement else {})},
            replacement=replacement,
        )
        if not ok:
            raise InvalidTransition(f"{repo}@{digest} changed stage while this request ran; reload and retry")
        if audit is not None:
            audit.record(actor, "promote", repo, digest, "allowed", client_addr, {**detail, "signature": signature})
        if to in ("approved", "retired"):
            # Push mirrors replicate approved images; those with delete_remote withdraw retired ones
            # (deprecated images stay on the remote: deprecation warns, it does not withdraw).
            from hallmark.mirror.sync_jobs import queue_push_runs

            queue_push_runs(self.pipeline, repo, "approval" if to == "approved" else "retirement")
        return {
            "repository": repo,
            "digest": digest,
            "from": current,
            "to": to,
            "gates": [g.as_dict() for g in gates],
            "signature_digest": signature,
            "entry": self.entry(repo, digest, history=False),
        }

    def check_replacement(self, repo: str, digest: str, ref: str) -> str:
        """``ref`` (``repo@digest`` or ``repo:tag``) checked against the registry; returns it.

        It must exist, must not be the image itself and must not be retired: a replacement that
        cannot be pulled would send users from one refusal to the next.
        """
        ref = ref.strip()
        if "@" in ref:
            r_repo, _, r_ref = ref.rpartition("@")
            by_digest = True
            ok = valid_name(r_repo) and is_digest(r_ref)
        else:
            r_repo, sep, r_ref = ref.rpartition(":")
            by_digest = False
            ok = bool(sep) and valid_name(r_repo) and valid_tag(r_ref)
        if not ok:
            raise CatalogError(f"replacement {ref!r} must be REPOSITORY@DIGEST or REPOSITORY:TAG")
        rec = self.pipeline.meta.get_manifest(r_repo, r_ref, by_digest)
        if rec is None:
            raise UnknownReplacement(f"replacement {ref} is not in the registry")
        if r_repo == repo and rec.digest == digest:
            raise UnknownReplacement(f"replacement {ref} is {repo}@{digest} itself")
        if _stage(self.store, r_repo, rec.digest) == "retired":
            raise UnknownReplacement(f"replacement {ref} is itself retired ({r_repo}@{rec.digest})")
        return ref

    def _stamp(self, repo: str, digest: str) -> str | None:
        """Sign the manifest with the enterprise key, or None when no key is configured."""
        if self.pipeline.signer() is None:
            return None
        from hallmark.signing.service import sign_image

        try:
            return sign_image(self.pipeline, repo, digest)
        except Exception as exc:  # any signing failure must stop the approval, not approve unsigned
            raise StampFailed(f"could not sign the approval: {exc}") from exc


def _stage(store: CatalogStore, repo: str, digest: str) -> str:
    row = store.get(repo, digest)
    return str(row["stage"]) if row else DEFAULT_STAGE


def summary(store: CatalogStore, repo: str, digest: str) -> dict[str, Any]:
    """The catalog fields of one image (defaults when nothing is stored), for the image API."""
    row = store.get(repo, digest) or {}
    return {"stage": row.get("stage", DEFAULT_STAGE), **{k: row.get(k) for k in _ENTRY_FIELDS}}


def catalog_entry(pipeline: Pipeline, repo: str, digest: str) -> dict[str, Any]:
    return summary(CatalogStore(pipeline.meta), repo, digest)
