"""Property-based: whatever body arrives, the webhook answers HTTP 200 with a well-formed
AdmissionReview and never allows by accident; and references parse like the runtime reads them.

The app runs in-process on an empty Hallmark with the default policy, where nothing is approved:
so an allowed answer is only right for a review that checks no container at all.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hallmark.admission.references import InvalidReference, parse_reference
from hallmark.admission.review import BadReview, parse_review
from hallmark.app import Hallmark, build_app
from hallmark.config import load_config

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20))
json_any = st.recursive(
    json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)
images = st.one_of(
    st.sampled_from(["nginx", "127.0.0.1:5000/a/b:v1", "x@sha256:" + "a" * 64, "", "A/B", "a:b@c", "localhost/x"]),
    st.text(max_size=40),
    json_any,
)
container = st.fixed_dictionaries({"name": st.one_of(st.text(max_size=8), json_any), "image": images})
pod_spec = st.fixed_dictionaries(
    {},
    optional={
        "containers": st.one_of(st.lists(container, max_size=3), json_any),
        "initContainers": st.lists(container, max_size=2),
        "ephemeralContainers": st.lists(container, max_size=2),
    },
)
kinds = st.sampled_from(
    [("", "Pod"), ("apps", "Deployment"), ("batch", "CronJob"), ("batch", "Job"), ("", "ConfigMap"), ("x", "Pod")]
)


@st.composite
def reviews(draw: st.DrawFn) -> Any:
    group, kind = draw(kinds)
    spec = draw(pod_spec)
    obj: Any = {"spec": spec} if kind == "Pod" else {"spec": {"template": {"spec": spec}}}
    if kind == "CronJob":
        obj = {"spec": {"jobTemplate": obj}}
    req: dict[str, Any] = {
        "uid": draw(st.one_of(st.uuids().map(str), json_any)),
        "kind": draw(st.one_of(st.just({"group": group, "version": "v1", "kind": kind}), json_any)),
        "namespace": draw(st.one_of(st.just("default"), json_any)),
        "operation": draw(st.sampled_from(["CREATE", "UPDATE", "DELETE", "CONNECT", 7])),
        "object": draw(st.one_of(st.just(obj), json_any)),
    }
    if draw(st.booleans()):
        req["oldObject"] = draw(st.one_of(st.just(obj), json_any))
    return {
        "apiVersion": draw(st.sampled_from(["admission.k8s.io/v1", "admission.k8s.io/v1beta1", None])),
        "kind": draw(st.sampled_from(["AdmissionReview", "Pod"])),
        "request": draw(st.one_of(st.just(req), json_any)),
    }


@pytest.fixture(scope="module")
def webhook(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[asyncio.AbstractEventLoop, TestClient[Any, Any]]]:
    data = tmp_path_factory.mktemp("fuzz-admission") / "data"
    cfg = load_config(
        environ={
            "HALLMARK_DATA_DIR": str(data),
            "HALLMARK_ACCESS__ENABLED": "false",
            "HALLMARK_PIPELINE__ENABLED": "false",
            "HALLMARK_LIFECYCLE__SCHEDULER": "false",
        }
    )
    hm = Hallmark.open(cfg)
    loop = asyncio.new_event_loop()
    client: TestClient[Any, Any] = TestClient(TestServer(build_app(hm)), loop=loop)
    loop.run_until_complete(client.start_server())
    try:
        yield loop, client
    finally:
        loop.run_until_complete(client.close())
        loop.close()
        hm.close()


def _checks_containers(body: bytes) -> bool:
    try:
        review = parse_review(body)
    except BadReview:
        return True  # failure policy fail: must be denied
    return bool(review.containers)


@FUZZ
@given(st.one_of(reviews(), json_any).map(lambda d: json.dumps(d).encode()) | st.binary(max_size=200))
def test_every_body_gets_a_well_formed_answer_and_no_accidental_allow(
    webhook: tuple[asyncio.AbstractEventLoop, TestClient[Any, Any]], body: bytes
) -> None:
    loop, client = webhook
    for path in ("/admission/validate", "/admission/mutate"):

        async def call(path: str = path) -> tuple[int, Any]:
            r = await client.post(path, data=body)
            return r.status, await r.json()

        status, doc = loop.run_until_complete(call())
        assert status == 200
        assert doc["apiVersion"] == "admission.k8s.io/v1" and doc["kind"] == "AdmissionReview"
        resp = doc["response"]
        assert isinstance(resp["uid"], str) and isinstance(resp["allowed"], bool)
        if not resp["allowed"]:
            assert resp["status"]["code"] >= 400 and resp["status"]["message"]
        elif path.endswith("validate"):
            assert not _checks_containers(body), (body, resp)


@FUZZ
@given(st.text(max_size=60))
def test_references_parse_or_say_why(raw: str) -> None:
    try:
        ref = parse_reference(raw)
    except InvalidReference as exc:
        assert str(exc)
        return
    assert parse_reference(ref.normalized).normalized == ref.normalized


@pytest.mark.parametrize(
    ("raw", "normalized", "written"),
    [
        ("nginx", "docker.io/library/nginx:latest", "nginx"),
        ("team/app:1.2", "docker.io/team/app:1.2", "team/app"),
        ("index.docker.io/library/redis", "docker.io/library/redis:latest", "index.docker.io/library/redis"),
        ("localhost/app", "localhost/app:latest", "localhost/app"),
        ("Registry.Example:5000/a/b:v1", "registry.example:5000/a/b:v1", "Registry.Example:5000/a/b"),
        ("h.example/a@sha256:" + "b" * 64, "h.example/a@sha256:" + "b" * 64, "h.example/a"),
        ("h.example/a:v1@sha256:" + "b" * 64, "h.example/a:v1@sha256:" + "b" * 64, "h.example/a"),
        ("[::1]:5000/a:v", "[::1]:5000/a:v", "[::1]:5000/a"),
    ],
)
def test_docker_normalisation(raw: str, normalized: str, written: str) -> None:
    ref = parse_reference(raw)
    assert ref.normalized == normalized and ref.written_name() == written
    assert ref.pinned("sha256:" + "c" * 64) == f"{written}@sha256:{'c' * 64}"


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("Team/App", "upper-case"),
        ("app:", "not a valid tag"),
        ("app@sha256:abc", "not a digest"),
        ("a//b", "empty"),
        (" app", "white space"),
        ("", "empty"),
        ("h.example/" + "a" * 300, "longer than 255"),
    ],
)
def test_unparseable_references_say_why(raw: str, why: str) -> None:
    with pytest.raises(InvalidReference, match=why):
        parse_reference(raw)
