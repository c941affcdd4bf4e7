"""Who sent a request: the client's address and scheme, believing `X-Forwarded-For` and
`X-Forwarded-Proto` only from the proxies of `REALTIME_TRUSTED_PROXIES`. Pure (strings
in, strings out); not a step of the data path, but every door asks it: the same-origin
check, the credential throttle (`realtime.core.throttle`) and the Engine.IO session's
binding to the address that opened it (`realtime.transport.engine`).

Anyone can send these headers. From a peer that is not a trusted proxy they are
ignored: the socket's peer address and scheme count. From a trusted proxy, the client
is the rightmost `X-Forwarded-For` hop that is not itself a trusted proxy (each proxy
appends the address it saw, so everything left of that hop is the client's own word).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
SCHEMES = ("http", "https")


# Remembered: each request asks (its peer, and the session's owner), and ipaddress's
# parse was ~7% of a websocket connect's HTTP handling in a reconnect storm (py-spy).
@functools.lru_cache(maxsize=4096)
def _address(text: str) -> Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[2001:db8::1]:443"
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # "192.0.2.1:51234": a port some proxies add
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # "::ffff:192.0.2.1", a dual-stack socket's IPv4 peer
    return address


@dataclass(frozen=True)
class Peer:
    """The client as this server should see it: `address` ("" when unknown, a unix
    socket say) and `scheme` (`http` or `https`)."""

    address: str
    scheme: str


class TrustedProxies:
    """The networks of `REALTIME_TRUSTED_PROXIES`, parsed once."""

    def __init__(self, networks: Iterable[str] = ()) -> None:
        self.networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in networks
        )

    def __bool__(self) -> bool:
        return bool(self.networks)

    def trusts(self, peer: str | None) -> bool:
        """Whether `peer` (an IP address as text) is one of the trusted proxies."""
        if not self.networks or not peer:
            return False
        address = _address(peer)
        return address is not None and any(address in n for n in self.networks)

    def _trusts(self, address: Address) -> bool:
        return any(address in n for n in self.networks)

    def client_address(self, peer: str | None, forwarded_for: Sequence[str] = ()) -> str:
        """The client's address: the socket peer, or, when the peer is a trusted proxy,
        the rightmost `X-Forwarded-For` hop that is not a trusted proxy (`forwarded_for`:
        every such header's value, in order). A hop that is not an address stops the walk:
        what lies left of it cannot be read, so the last hop known is the client."""
        own = _address(peer) if peer else None
        client = str(own) if own is not None else (peer or "")
        if own is None or not self.networks or not self._trusts(own):
            return client
        hops = [h for value in forwarded_for for h in value.split(",")]
        for hop in reversed(hops):
            address = _address(hop)
            if address is None:
                break
            client = str(address)
            if not self._trusts(address):
                break
        return client

    def client_scheme(self, peer: str | None, scheme: str, forwarded_proto: str | None) -> str:
        """`http` or `https`: the socket's, or a trusted proxy's `X-Forwarded-Proto` (its
        first value, the one the outermost proxy set, as python-engineio reads it)."""
        if forwarded_proto and self.trusts(peer):
            claimed = forwarded_proto.split(",")[0].strip().lower()
            if claimed in SCHEMES:
                return claimed
        return scheme if scheme in SCHEMES else "http"

    def peer_of(self, request: Any) -> Peer:
        """The `Peer` of an aiohttp request (its socket peer and headers)."""
        remote = request.remote
        if not self.networks:  # the common case: no headers read at all
            return Peer(str(_address(remote) or remote or ""), request.scheme)
        headers = request.headers
        return Peer(
            self.client_address(remote, headers.getall("X-Forwarded-For", ())),
            self.client_scheme(remote, request.scheme, headers.get("X-Forwarded-Proto")),
        )


def same_network(a: str, b: str) -> bool:
    """Whether two client addresses are the same client for a session's binding: equal
    IPv4 addresses, or IPv6 addresses in the same /64 (a host's privacy addresses change
    within its /64 while a session lives)."""
    if a == b:
        return True
    first, second = _address(a), _address(b)
    if first is None or second is None or first.version != second.version:
        return False
    if first.version == 4:
        return first == second
    return int(first) >> 64 == int(second) >> 64
