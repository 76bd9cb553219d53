"""Property-based fuzzing of the manifest and index parsers that read untrusted bytes.

Pushed manifests reach :func:`parse_manifest` (and, for index pulls, platform selection);
manifests fetched from other registries or archives reach :mod:`hallmark.oci.source`. Each
must answer any input with its documented error type (``RegistryError`` / ``OciError``),
never another exception, which would be a 500 or a crashed scan. Examples are derandomized
and bounded so CI runs them in seconds; ``HALLMARK_FUZZ_EXAMPLES`` raises the count locally.
"""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hallmark.oci.source import ImageManifest, OciError, Platform, select_from_index
from hallmark.registry.errors import RegistryError
from hallmark.registry.manifests import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    default_platform_child,
    parse_manifest,
)

EXAMPLES = int(os.environ.get("HALLMARK_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

DIGEST = "sha256:" + "ab" * 32
MEDIA_TYPES = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST, "application/json", "", "text/plain"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
    st.sampled_from([*MEDIA_TYPES, DIGEST, "sha256:bad", "linux", "amd64"]),
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=20,
)


def maybe(value: Any) -> st.SearchStrategy[Any]:
    """The right value most of the time, otherwise any JSON value (or the key left out)."""
    return st.one_of(st.just(value), json_values)


def descriptors() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.fixed_dictionaries(
            {"mediaType": maybe(OCI_MANIFEST), "digest": maybe(DIGEST), "size": maybe(10)},
            optional={
                "platform": st.one_of(
                    st.fixed_dictionaries({"os": maybe("linux"), "architecture": maybe("amd64")}), json_values
                ),
                "annotations": st.one_of(st.dictionaries(st.text(max_size=5), st.text(max_size=5)), json_values),
                "urls": json_values,
                "artifactType": json_values,
            },
        ),
        json_values,
    )


manifest_docs = st.fixed_dictionaries(
    {"schemaVersion": maybe(2)},
    optional={
        "mediaType": st.one_of(st.sampled_from(MEDIA_TYPES), json_values),
        "config": descriptors(),
        "layers": st.one_of(st.lists(descriptors(), max_size=3), json_values),
        "manifests": st.one_of(st.lists(descriptors(), max_size=3), json_values),
        "subject": descriptors(),
        "annotations": json_values,
        "artifactType": json_values,
    },
)


def encodings() -> st.SearchStrategy[bytes]:
    """Manifest-shaped JSON, arbitrary JSON, deep nesting, and raw bytes."""
    return st.one_of(
        manifest_docs.map(lambda d: json.dumps(d).encode()),
        json_values.map(lambda d: json.dumps(d).encode()),
        st.integers(min_value=1, max_value=5000).map(lambda n: b"[" * n + b"]" * n),
        st.integers(min_value=1, max_value=5000).map(lambda n: b'{"manifests":' * n + b"[]" + b"}" * n),
        st.binary(max_size=200),
        st.just(b'{"schemaVersion": 2, "size": Infinity, "x": NaN}'),
        st.just(b'{"config": {"digest": "' + DIGEST.encode() + b'", "size": Infinity}}'),
    )


@FUZZ
@given(encodings(), st.one_of(st.none(), st.sampled_from(MEDIA_TYPES), st.text(max_size=30)))
def test_parse_manifest_raises_only_registry_errors(content: bytes, content_type: str | None) -> None:
    try:
        parsed = parse_manifest(content, content_type)
    except RegistryError as err:
        assert err.code == "MANIFEST_INVALID"
        return
    assert all(isinstance(d, str) for d in parsed.blob_refs + parsed.manifest_refs)
    assert parsed.subject is None or isinstance(parsed.subject, str)


@FUZZ
@given(encodings(), st.lists(st.sampled_from([*MEDIA_TYPES, "*/*"]), max_size=3))
def test_default_platform_child_never_raises(content: bytes, accept: list[str]) -> None:
    child = default_platform_child(content, accept)
    assert child is None or isinstance(child, str)


@FUZZ
@given(encodings())
def test_image_manifest_parse_raises_only_oci_errors(raw: bytes) -> None:
    try:
        parsed = ImageManifest.parse(raw)
    except OciError:
        return
    assert isinstance(parsed.config.digest, str) and all(isinstance(x.size, int) for x in parsed.layers)


@FUZZ
@given(encodings(), st.sampled_from(["linux/amd64", "linux/arm64/v8", "windows/amd64"]))
def test_select_from_index_raises_only_oci_errors(raw: bytes, platform: str) -> None:
    try:
        desc = select_from_index(raw, Platform.parse(platform))
    except OciError:
        return
    assert isinstance(desc.digest, str)
