"""Property-based tests: the credential, token and scope parsers raise only their documented errors.

Bounded (``max_examples``, no deadline flakiness) so the whole file runs in seconds in CI.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hallmark.access import crypto
from hallmark.access.model import Scope
from hallmark.access.service import AccessService, AuthFailed, RateLimited
from hallmark.config import load_config
from hallmark.metadata.db import make_engine, migrate
from hallmark.registry.names import valid_name
from hallmark.web.auth import basic_credentials, identify, parse_scopes

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# Text that looks like what these parsers see: mostly the grammar's own characters, sometimes anything.
grammar = st.text(alphabet="repositoryhallmarkcatalog:/,*._-pushdelete aA0\t", max_size=80)
anything = st.text(max_size=200)
header_text = st.one_of(grammar, anything, st.binary(max_size=120).map(lambda b: b.decode("latin-1")))


@pytest.fixture(scope="module")
def access(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AccessService]:
    data: Path = tmp_path_factory.mktemp("fuzz") / "data"
    data.mkdir()
    cfg = load_config(environ={"HALLMARK_DATA_DIR": str(data)})
    engine = make_engine(cfg.database_url, 2)
    migrate(engine)
    svc = AccessService(cfg, engine)
    svc.add_user("test", "fuzzer", "fuzzer-Secret-123")
    yield svc
    engine.dispose()


@FUZZ
@given(st.one_of(grammar, anything))
def test_scope_grammar_raises_only_value_error(text: str) -> None:
    try:
        scope = Scope.parse(text)
    except ValueError:
        return
    assert scope.pattern and scope.actions
    assert Scope.parse(str(scope)) == scope  # what it prints, it reads back


@FUZZ
@given(st.lists(st.one_of(grammar, anything), max_size=8))
def test_token_endpoint_scopes_never_raise(values: list[str]) -> None:
    out = parse_scopes(values)
    assert len(out) <= 64
    for rtype, name, _actions in out:
        assert rtype and name
        if rtype == "repository":
            assert valid_name(name)


@FUZZ
@given(st.one_of(anything, st.binary(max_size=200).map(lambda b: base64.b64encode(b).decode())))
def test_basic_credentials_raise_only_auth_failed(value: str) -> None:
    try:
        user, secret = basic_credentials(value)
    except AuthFailed:
        return
    assert user and secret


@FUZZ
@given(st.one_of(anything, st.text(alphabet="hmk_0123456789abcdef-", max_size=300)))
def test_token_id_parser_never_raises(token: str) -> None:
    tid = crypto.parse_token_id(token)
    assert tid is None or (len(tid) == 16 and token.startswith("hmk_"))


@FUZZ
@given(st.one_of(anything, st.text(alphabet="eyJhbGciOiJFUzI1NiJ9.-_=", max_size=400)))
def test_jwt_verification_raises_only_auth_failed(access: AccessService, token: str) -> None:
    try:
        access.verify_jwt(token)
    except AuthFailed:
        return
    raise AssertionError("a random string verified as a registry token")


@FUZZ
@given(
    st.sampled_from(["Bearer ", "Basic ", "bearer ", "BASIC ", "Digest ", "", "Bearer hmk_"]),
    header_text,
)
def test_authorization_header_raises_only_auth_errors(access: AccessService, scheme: str, value: str) -> None:
    header = (scheme + value).replace("\r", "").replace("\n", "")
    request = make_mocked_request("GET", "/api/v1/me", headers={"Authorization": header})

    async def run() -> None:
        try:
            ident = await identify(access, request)
        except (AuthFailed, RateLimited):
            return
        assert ident.anonymous is False or header.strip() == ""

    asyncio.run(run())
