"""Who sent a request (realtime/core/peer.py): forwarding headers count only from the
trusted proxies; the client is the rightmost hop that is not one."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from realtime.core.peer import TrustedProxies, same_network

pytestmark = pytest.mark.unit

PROXIES = TrustedProxies(["10.0.0.0/8", "2001:db8:ffff::/48"])


@pytest.mark.parametrize(
    ("peer", "forwarded_for", "client"),
    [
        # From anyone else the headers are the client's own word: ignored.
        ("203.0.113.9", ["198.51.100.1"], "203.0.113.9"),
        ("203.0.113.9", [], "203.0.113.9"),
        # A trusted proxy: the rightmost hop it did not add itself is the client.
        ("10.0.0.2", ["198.51.100.1"], "198.51.100.1"),
        ("10.0.0.2", [], "10.0.0.2"),
        # The client forged hops on the left: the proxy appended the address it saw.
        ("10.0.0.2", ["1.1.1.1, 2.2.2.2, 198.51.100.1"], "198.51.100.1"),
        # Proxies in a chain (all trusted) are skipped; so are repeated headers.
        ("10.0.0.2", ["198.51.100.1, 10.1.1.1", "10.2.2.2"], "198.51.100.1"),
        # Everything trusted: the leftmost hop is as far as anyone vouches.
        ("10.0.0.2", ["10.3.3.3, 10.1.1.1"], "10.3.3.3"),
        # Junk stops the walk: nothing left of it can be read.
        ("10.0.0.2", ["198.51.100.1, junk"], "10.0.0.2"),
        ("10.0.0.2", ["junk, 10.1.1.1"], "10.1.1.1"),
        # Ports, brackets, IPv6 and IPv4-mapped peers.
        ("10.0.0.2", ["198.51.100.1:4711"], "198.51.100.1"),
        ("10.0.0.2", ["[2001:db8::1]:443"], "2001:db8::1"),
        ("::ffff:10.0.0.2", ["198.51.100.1"], "198.51.100.1"),
        ("2001:db8:ffff::5", ["2001:db8:1::7"], "2001:db8:1::7"),
        # A unix socket: nobody vouches for it.
        ("/run/realtime.sock", ["198.51.100.1"], "/run/realtime.sock"),
    ],
)
def test_the_client_address(peer: str, forwarded_for: list[str], client: str) -> None:
    assert PROXIES.client_address(peer, forwarded_for) == client


def test_no_trusted_proxies_means_the_socket_peer() -> None:
    assert TrustedProxies().client_address("10.0.0.2", ["198.51.100.1"]) == "10.0.0.2"
    assert not TrustedProxies()
    assert PROXIES


@pytest.mark.parametrize(
    ("peer", "scheme", "forwarded", "expected"),
    [
        ("203.0.113.9", "http", "https", "http"),  # forged: ignored
        ("10.0.0.2", "http", "https", "https"),
        ("10.0.0.2", "http", "HTTPS, http", "https"),  # the outermost proxy's
        ("10.0.0.2", "http", "gopher", "http"),  # not a scheme: ignored
        ("10.0.0.2", "https", None, "https"),
        (None, "http", "https", "http"),
    ],
)
def test_the_client_scheme(peer: str | None, scheme: str, forwarded: str, expected: str) -> None:
    assert PROXIES.client_scheme(peer, scheme, forwarded) == expected


def test_peer_of_an_aiohttp_request() -> None:
    headers = CIMultiDict([("X-Forwarded-For", "1.1.1.1"), ("X-Forwarded-For", "198.51.100.1")])
    headers["X-Forwarded-Proto"] = "https"
    request = make_mocked_request("GET", "/", headers=headers)
    trusted = PROXIES.peer_of(request.clone(remote="10.9.9.9"))
    assert (trusted.address, trusted.scheme) == ("198.51.100.1", "https")
    forged = PROXIES.peer_of(request.clone(remote="203.0.113.9"))
    assert (forged.address, forged.scheme) == ("203.0.113.9", "http")
    direct = TrustedProxies().peer_of(request.clone(remote="::ffff:192.0.2.1"))
    assert (direct.address, direct.scheme) == ("192.0.2.1", "http")


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("192.0.2.1", "192.0.2.1", True),
        ("192.0.2.1", "192.0.2.2", False),
        ("2001:db8:1:2::a", "2001:db8:1:2:ffff::1", True),  # a privacy address, same /64
        ("2001:db8:1:2::a", "2001:db8:1:3::a", False),
        ("192.0.2.1", "::ffff:192.0.2.1", True),
        ("192.0.2.1", "2001:db8::1", False),
        ("", "192.0.2.1", False),
    ],
)
def test_same_network(a: str, b: str, same: bool) -> None:
    assert same_network(a, b) is same
