"""The client's address, as seen through trusted reverse proxies.

Behind a load balancer every connection comes from the balancer, so rate limits and the
audit log keyed on the peer address would lump all clients together. A proxy listed in
``[server] trusted_proxies`` appends the address it received the request from to a
forwarding header; reading that header from the right and skipping the trusted proxies
gives the first address no trusted party vouches for, which is the client. Entries further
left were written by the client itself and are never believed, and the header is ignored
entirely when the peer is not a trusted proxy, so a client cannot choose its own address.

Only the one header the proxies are configured to append is read (``trusted_proxy_header``):
honouring both would let a client forge the one its proxy does not touch.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web

from hallmark.config import ServerConfig

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_MAX_HOPS = 32  # a longer chain is not a real proxy path; the rest is the client's own text


@dataclass(frozen=True)
class TrustedProxies:
    """Proxy networks whose forwarding header is believed, and which header that is."""

    networks: tuple[IPNetwork, ...] = ()
    header: str = "x-forwarded-for"

    @classmethod
    def parse(cls, networks: Iterable[str], header: str = "x-forwarded-for") -> TrustedProxies:
        return cls(tuple(ipaddress.ip_network(n.strip(), strict=False) for n in networks), header.lower())

    @classmethod
    def from_config(cls, server: ServerConfig) -> TrustedProxies:
        return cls.parse(server.trusted_proxies, server.trusted_proxy_header)

    def trusts(self, addr: IPAddress) -> bool:
        return any(addr in net for net in self.networks)


# Set by ``hallmark serve`` (and whoever builds the app) so request handlers can find the setting.
TRUSTED_PROXIES = web.AppKey("trusted_proxies", TrustedProxies)


def parse_ip(text: str) -> IPAddress | None:
    """An address from a header or the peer: ``1.2.3.4``, ``1.2.3.4:80``, ``[::1]:80``, ``::1``."""
    text = text.strip().strip('"')
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else ""
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]  # IPv4 with a port
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped  # a dual-stack socket's view of an IPv4 client
    return addr


def _split_outside_quotes(value: str, sep: str) -> list[str]:
    parts: list[str] = []
    buf: list[str] = []
    quoted = False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    parts.append("".join(buf))
    return parts


def _forwarded_for(values: list[str]) -> list[str]:
    """The ``for=`` of each RFC 7239 element, in order; an element without one gives ""."""
    hops = []
    for element in _split_outside_quotes(",".join(values), ","):
        found = ""
        for pair in _split_outside_quotes(element, ";"):
            key, _, val = pair.partition("=")
            if key.strip().lower() == "for":
                found = val.strip()
        hops.append(found)
    return hops


def client_addr(request: web.BaseRequest, trusted_proxies: TrustedProxies | None) -> str | None:
    """The client's address: the peer, or when the peer is a trusted proxy, the rightmost address
    in its forwarding header that is not itself a trusted proxy. None when the peer is unknown.

    A hop that is not an address (``unknown``, an obfuscated name, garbage) ends the walk at
    the last address a trusted proxy vouched for, never at something the client wrote.
    """
    peer_text = request.remote
    if not peer_text:
        return None
    peer = parse_ip(peer_text)
    if peer is None:
        return peer_text  # e.g. a unix socket's name: nothing to resolve
    if trusted_proxies is None or not trusted_proxies.networks or not trusted_proxies.trusts(peer):
        return str(peer)
    values = request.headers.getall(trusted_proxies.header, [])
    if trusted_proxies.header == "forwarded":
        hops = _forwarded_for(values)
    else:
        hops = ",".join(values).split(",")
    addr = peer
    for hop in reversed(hops[-_MAX_HOPS:]):
        ip = parse_ip(hop)
        if ip is None:
            break
        addr = ip
        if not trusted_proxies.trusts(ip):
            break
    return str(addr)
