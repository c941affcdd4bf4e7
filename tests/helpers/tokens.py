"""JWTs and keys for auth tests, made with PyJWT and cryptography as an issuer would."""

from __future__ import annotations

import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

SECRET = "test-secret-" + "s" * 32
INGEST_KEY = "ingest-key-0123456789abcdef"
METRICS_KEY = "metrics-key-0123456789abcdef"
INGEST_KEYS = f"{INGEST_KEY},{METRICS_KEY}:metrics.*|events.orders"


def hs256(topics: Any = ("metrics.*",), *, secret: str = SECRET, ttl_s: float = 300,
          **claims: Any) -> str:  # fmt: skip
    payload: dict[str, Any] = {"sub": "test", "exp": int(time.time() + ttl_s)}
    if topics is not None:
        payload["topics"] = topics if isinstance(topics, str) else list(topics)
    payload.update(claims)
    return jwt.encode(payload, secret, algorithm="HS256")


def keypair(kind: str) -> tuple[Any, str]:
    """A private key (to sign) and its public key as PEM (for REALTIME_JWT_PUBLIC_KEY)."""
    private: Any = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if kind == "rsa"
        else ec.generate_private_key(ec.SECP256R1())
    )
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, pem.decode()


def signed(private: Any, algorithm: str, topics: Any = ("metrics.*",), **claims: Any) -> str:
    payload = {"exp": int(time.time() + 300), "topics": list(topics), **claims}
    return jwt.encode(payload, private, algorithm=algorithm)
