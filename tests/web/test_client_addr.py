"""The client address behind trusted proxies, and that nobody else can choose theirs."""

from __future__ import annotations

from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from hallmark.config import ConfigError, load_config
from hallmark.web.client import TrustedProxies, client_addr

LB = TrustedProxies.parse(["10.0.0.0/8", "fd00::/8"])


def request(peer: str | None, headers: dict[str, str] | list[tuple[str, str]] | None = None) -> web.Request:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (peer, 40000) if name == "peername" and peer is not None else default
    )
    return make_mocked_request("GET", "/v2/", headers=headers or {}, transport=transport)


def addr(peer: str | None, trusted: TrustedProxies | None, **headers: str) -> str | None:
    return client_addr(request(peer, {k.replace("_", "-"): v for k, v in headers.items()}), trusted)


def test_without_trusted_proxies_the_peer_is_the_client() -> None:
    assert addr("203.0.113.9", None, X_Forwarded_For="198.51.100.1") == "203.0.113.9"
    assert addr("10.1.2.3", TrustedProxies(), X_Forwarded_For="198.51.100.1") == "10.1.2.3"
    assert addr(None, LB) is None


def test_forwarded_for_is_believed_only_from_a_trusted_proxy() -> None:
    assert addr("10.1.2.3", LB, X_Forwarded_For="198.51.100.1") == "198.51.100.1"
    # Spoofing: a client that talks to us directly cannot name another address.
    assert addr("203.0.113.9", LB, X_Forwarded_For="198.51.100.1") == "203.0.113.9"
    assert addr("203.0.113.9", LB, X_Forwarded_For="10.0.0.1") == "203.0.113.9"


def test_entries_the_client_wrote_are_ignored() -> None:
    # The client sent "X-Forwarded-For: 198.51.100.66, 10.9.9.9"; the balancer appended its peer.
    assert addr("10.1.2.3", LB, X_Forwarded_For="198.51.100.66, 10.9.9.9, 203.0.113.5") == "203.0.113.5"
    # A chain of trusted proxies is skipped up to the first address none of them is.
    assert addr("10.1.2.3", LB, X_Forwarded_For="198.51.100.66, 203.0.113.5, 10.2.2.2, 10.3.3.3") == "203.0.113.5"
    # Several header lines are one list, in order.
    req = request("10.1.2.3", [("X-Forwarded-For", "198.51.100.66"), ("X-Forwarded-For", "203.0.113.5")])
    assert client_addr(req, LB) == "203.0.113.5"


def test_unusable_hops_stop_at_the_last_vouched_address() -> None:
    assert addr("10.1.2.3", LB) == "10.1.2.3"  # a trusted peer without the header
    assert addr("10.1.2.3", LB, X_Forwarded_For="unknown") == "10.1.2.3"
    assert addr("10.1.2.3", LB, X_Forwarded_For="198.51.100.1, garbage, 10.4.4.4") == "10.4.4.4"
    assert addr("10.1.2.3", LB, X_Forwarded_For="10.5.5.5, 10.4.4.4") == "10.5.5.5"  # all trusted: the first


def test_address_forms() -> None:
    assert addr("10.1.2.3", LB, X_Forwarded_For="198.51.100.1:5555") == "198.51.100.1"
    assert addr("10.1.2.3", LB, X_Forwarded_For="[2001:db8::1]:443") == "2001:db8::1"
    assert addr("fd00::5", LB, X_Forwarded_For="2001:db8::7") == "2001:db8::7"
    assert addr("::ffff:10.1.2.3", LB, X_Forwarded_For="198.51.100.1") == "198.51.100.1"  # dual-stack peer
    assert addr("::ffff:203.0.113.9", LB) == "203.0.113.9"


def test_rfc7239_forwarded_header() -> None:
    fw = TrustedProxies.parse(["10.0.0.0/8"], "forwarded")
    value = 'for=198.51.100.66;proto=https, for="[2001:db8:cafe::17]:4711";by=10.0.0.1'
    assert addr("10.1.2.3", fw, Forwarded=value) == "2001:db8:cafe::17"
    assert addr("10.1.2.3", fw, Forwarded='for="_hidden", for=203.0.113.5') == "203.0.113.5"
    assert addr("10.1.2.3", fw, Forwarded="for=unknown") == "10.1.2.3"
    # Only the configured header counts: the one the proxy does not touch is the client's own.
    assert addr("10.1.2.3", fw, X_Forwarded_For="198.51.100.1") == "10.1.2.3"
    assert addr("10.1.2.3", LB, Forwarded="for=198.51.100.1") == "10.1.2.3"


def test_config_validates_proxies() -> None:
    cfg = load_config(environ={"HALLMARK_SERVER__TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7"})
    assert TrustedProxies.from_config(cfg.server).networks == LB.parse(["10.0.0.0/8", "192.0.2.7/32"]).networks
    cfg = load_config(environ={"HALLMARK_SERVER__TRUSTED_PROXIES": '["fd00::/8"]'})
    assert cfg.server.trusted_proxies == ["fd00::/8"]
    with pytest.raises(ConfigError, match="trusted_proxies"):
        load_config(environ={"HALLMARK_SERVER__TRUSTED_PROXIES": "10.0.0.0/33"})
    with pytest.raises(ConfigError, match="trusted_proxy_header"):
        load_config(environ={"HALLMARK_SERVER__TRUSTED_PROXY_HEADER": "x-real-ip"})
