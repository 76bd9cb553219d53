"""Kubernetes admission webhooks: ``POST /admission/validate`` and ``POST /admission/mutate``.

Public routes: the API server calls them without a Hallmark user (it authenticates Hallmark by
TLS, ``caBundle``); they reveal nothing beyond the decision. Every answer is HTTP 200 with a
well-formed ``AdmissionReview``, whatever arrives (malformed JSON, a foreign kind, no uid, an
oversized body, a timeout, an internal error), decided by ``[admission] failure_policy`` so
nothing is allowed by accident. ``?cluster=NAME`` on the webhook URL names the cluster in the
decisions table and the audit log. Validating decisions are audited (``admission.review``,
durable) and stored per workload; mutations (digest pins) are not decisions and only logged.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re

import orjson
from aiohttp import web

from hallmark.access.audit import ALLOWED, DENIED
from hallmark.admission.review import BadReview, parse_review
from hallmark.admission.service import Admission, Decision
from hallmark.pipeline.service import Pipeline
from hallmark.registry.service import RegistryService
from hallmark.web.auth import ACCESS_KEY, client_addr
from hallmark.web.authz import PUBLIC, route

log = logging.getLogger(__name__)
_CLUSTER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}\Z")


def _answer(decision: Decision) -> web.Response:
    return web.Response(body=orjson.dumps(decision.response), content_type="application/json")


async def _body(request: web.Request, limit: int) -> bytes:
    """The body, or BadReview when it is over ``limit`` (read no further than that)."""
    if request.content_length is not None and request.content_length > limit:
        raise BadReview(f"the request body is larger than {limit} bytes ([admission] max_request_bytes)")
    data = await request.content.read(limit + 1)
    if len(data) > limit:
        raise BadReview(f"the request body is larger than {limit} bytes ([admission] max_request_bytes)")
    return data


def routes(pipeline: Pipeline, registry: RegistryService) -> list[web.RouteDef]:
    admission = Admission(pipeline)
    loop_timeout = admission.timeout
    networks = [ipaddress.ip_network(n, strict=False) for n in pipeline.config.admission.allowed_networks]

    def caller_allowed(request: web.Request) -> bool:
        if not networks:
            return True
        try:
            addr = ipaddress.ip_address(client_addr(request) or "")
        except ValueError:
            return False
        return any(addr in net for net in networks)

    async def review(request: web.Request, mutate: bool) -> web.Response:
        if not caller_allowed(request):
            # Nothing evaluated, stored or audited: a stranger cannot fill the audit log.
            log.warning("admission review from %s refused: not in [admission] allowed_networks", client_addr(request))
            return web.json_response({"error": "not an allowed admission client"}, status=403)
        cluster = request.query.get("cluster", "")
        uid = ""
        parsed = None
        try:
            if cluster and not _CLUSTER.match(cluster):
                raise BadReview(f"cluster {cluster[:80]!r} in the webhook URL is not a valid name")
            body = await _body(request, admission.max_request_bytes)
            parsed = parse_review(body)
            uid = parsed.uid
            decision = await asyncio.wait_for(registry.run(admission.decide, parsed, mutate), loop_timeout)
        except BadReview as exc:
            decision = admission.failure(exc.uid or uid, str(exc), 400, parsed)
        except TimeoutError:
            decision = admission.failure(uid, f"evaluation took longer than {loop_timeout:g} s", 504, parsed)
        except Exception:
            log.exception("admission review %s failed", uid)
            decision = admission.failure(uid, "internal error in Hallmark (see its log)", 500, parsed)
        if not mutate:
            await _record(request, admission, decision, cluster if parsed is not None else "")
        elif decision.response["response"].get("patch"):
            log.info("admission mutate %s: pinned %d image(s)", uid, len([x for x in decision.results if x.pin]))
        return _answer(decision)

    async def validate(request: web.Request) -> web.Response:
        return await review(request, False)

    async def mutate(request: web.Request) -> web.Response:
        return await review(request, True)

    async def _record(request: web.Request, admission: Admission, decision: Decision, cluster: str) -> None:
        try:
            await registry.run(admission.record, decision, cluster)
        except Exception:
            log.exception("could not store the admission decision")
        if ACCESS_KEY not in request.app:
            return
        rev = decision.review
        detail: dict[str, object] = {
            "cluster": cluster,
            "uid": decision.response["response"]["uid"],
            "mode": decision.mode,
            "allowed": decision.allowed,
            "reasons": decision.reasons(),
        }
        if rev is not None:
            detail.update(
                namespace=rev.namespace,
                kind=f"{rev.group}/{rev.kind}".lstrip("/"),
                name=rev.name,
                operation=rev.operation,
                dry_run=rev.dry_run,
                user=rev.username[:256],
            )
        # The first refused Hallmark image, so the audit log can be searched by repository.
        first = next((x for x in decision.results if not x.allowed and x.repo), None)
        await request.app[ACCESS_KEY].audit.record_durable(
            "kubernetes:" + (cluster or "-"),
            "admission.review",
            repo=first.repo if first is not None else None,
            digest=first.digest if first is not None else None,
            result=ALLOWED if decision.allowed else DENIED,
            client_addr=client_addr(request),
            detail=detail,
        )

    return [
        route("POST", "/admission/validate", validate, PUBLIC),
        route("POST", "/admission/mutate", mutate, PUBLIC),
    ]
