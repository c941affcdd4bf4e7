"""Connection auth, before the first step of delivery: the JWT a Socket.IO client presents
on connect (`auth: {"token": JWT}`), and the topics it allows.

HS256 with `REALTIME_JWT_SECRET`, or RS256/ES256 with `REALTIME_JWT_PUBLIC_KEY`; `exp` is
required, `nbf`, `aud` (`REALTIME_JWT_AUDIENCE`) and `iss` (`REALTIME_JWT_ISSUER`) are
checked. The claim `topics` lists the glob patterns the token may subscribe to.
Pure apart from the clock PyJWT reads.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from jwt.algorithms import HMACAlgorithm

from realtime.core import b64url
from realtime.core.settings import Settings

TOPICS_CLAIM = "topics"
# `true`: the token may see who watches its topics (their `sub`s), not only how many.
PRESENCE_MEMBERS_CLAIM = "presence_members"
TIME_CLAIMS = ("exp", "nbf", "iat")
# Tokens verified lately, kept for their clients' reconnects (`TokenVerifier.verify`).
VERIFIED_CACHE = 16_384


class AuthError(Exception):
    """A token was refused; the message is for the client (it never echoes the token)."""


@dataclass(frozen=True)
class Grant:
    """What one connection may do: subscribe to topics matching `topics` (globs) until
    `expires_at` (epoch seconds; None: no expiry). `claims`: the verified token's claims
    (empty with auth off), for extensions (realtime/web/extensions.py)."""

    topics: tuple[str, ...]
    expires_at: float | None = None
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def allows(self, topic: str) -> bool:
        return any(fnmatchcase(topic, pattern) for pattern in self.topics)

    @property
    def sub(self) -> str | None:
        """The viewer's name in presence member lists: the token's `sub`."""
        sub = self.claims.get("sub")
        return sub if isinstance(sub, str) and sub else None

    @property
    def members(self) -> bool:
        """It may see presence member lists (the claim `presence_members: true`)."""
        return self.claims.get(PRESENCE_MEMBERS_CLAIM) is True

    @classmethod
    def of(cls, claims: Mapping[str, Any]) -> Grant:
        """The grant of a verified token's claims; AuthError without a `topics` claim."""
        topics = claims.get(TOPICS_CLAIM)
        if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
            raise AuthError(f"The token has no '{TOPICS_CLAIM}' claim (a list of topic patterns).")
        exp = claims.get("exp")
        return cls(tuple(topics), float(exp) if isinstance(exp, int | float) else None, claims)


OPEN = Grant(("*",))  # auth off (REALTIME_INSECURE=1 without a JWT key): every topic


def load_public_key(pem: str) -> rsa.RSAPublicKey | ec.EllipticCurvePublicKey:
    """The RSA or EC key of a PEM; raises ValueError (for `realtime serve` to report)."""
    try:
        key = load_pem_public_key(pem.encode())
    except (ValueError, TypeError) as exc:
        raise ValueError(f"REALTIME_JWT_PUBLIC_KEY cannot be read: {exc}") from None
    if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
        raise ValueError("REALTIME_JWT_PUBLIC_KEY must be an RSA (RS256) or EC (ES256) key")
    return key


class TokenVerifier:
    def __init__(self, settings: Settings) -> None:
        if settings.jwt_public_key:
            self.key: Any = load_public_key(settings.jwt_public_key)
            # One algorithm, fixed by the key: a token cannot pick another one.
            self.algorithms = ["RS256" if isinstance(self.key, rsa.RSAPublicKey) else "ES256"]
        else:
            self.key = settings.jwt_secret
            self.algorithms = ["HS256"]
        self.audience = settings.jwt_audience or None
        self.issuer = settings.jwt_issuer or None
        self._hs256_key = _hs256_key(self.key) if self.algorithms == ["HS256"] else None
        # digest of a token -> its grant: a reconnect storm brings the same tokens back
        # at once, and a signature check was a tenth of a connect's CPU. Only `exp` can
        # turn a verified token invalid later (nbf and iat only become more valid), so
        # a grant found here is checked against it again. Digests, not the tokens: a
        # token is some 200 bytes, and its claims are held by its connection anyway.
        self._verified: dict[bytes, Grant] = {}

    def verify(self, auth: Any) -> Grant:
        """The grant of a connect's `auth` object; raises AuthError."""
        token = auth.get("token") if isinstance(auth, Mapping) else None
        if not isinstance(token, str) or not token:
            raise AuthError('A token is required: connect with auth {"token": "<JWT>"}.')
        digest = hashlib.blake2b(token.encode(), digest_size=16).digest()
        grant = self._verified.get(digest)
        if grant is not None:
            # PyJWT's test: expired once `exp` <= now, in whole seconds.
            if grant.expires_at is not None and grant.expires_at <= int(time.time()):
                del self._verified[digest]
                raise AuthError("The token has expired.")
            return grant
        grant = Grant.of(self._decode(token))
        if len(self._verified) >= VERIFIED_CACHE:
            del self._verified[next(iter(self._verified))]  # the oldest
        self._verified[digest] = grant
        return grant

    def _decode(self, token: str) -> dict[str, Any]:
        # The time claims' types first, before PyJWT reads them with int(): a string
        # "1700003600" would pass (RFC 7519 says NumericDate, a JSON number), and PyJWT
        # before 2.9 raises TypeError on a list or an object. Nothing is trusted yet here.
        unverified = _unverified_claims(token)
        if unverified is None:
            raise AuthError("The token is malformed.")
        for name in TIME_CLAIMS:
            value = unverified.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise AuthError(f"The token's '{name}' claim must be a number (epoch seconds).")
        if self._hs256_key is not None and self.audience is None:
            plain = _plain_hs256(token, self._hs256_key, unverified, self.issuer)
            if plain is not None:
                return plain
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                self.key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                options={"require": ["exp"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("The token has expired.") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("The token is not valid yet (nbf).") from None
        except jwt.InvalidAudienceError:
            raise AuthError("The token's audience (aud) is not accepted.") from None
        except jwt.InvalidIssuerError:
            raise AuthError("The token's issuer (iss) is not accepted.") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError(f"The token has no '{exc.claim}' claim.") from None
        except jwt.InvalidSignatureError:
            raise AuthError("The token's signature is invalid.") from None
        except jwt.InvalidAlgorithmError:
            raise AuthError(f"The token must be signed with {'/'.join(self.algorithms)}.") from None
        except jwt.InvalidTokenError:
            raise AuthError("The token is malformed.") from None
        return claims


def _segment(text: str) -> Any:
    """One base64url JSON segment of a JWS compact token; None when it is not that."""
    try:
        return orjson.loads(b64url.decode(text))
    except ValueError:  # base64's, orjson's and UTF-8 errors are all ValueErrors
        return None


def _unverified_claims(token: str) -> dict[str, Any] | None:
    """The claims of a token's payload, read without checking anything; None when the
    token is not three segments with a JSON object header and payload. What PyJWT's
    unverified decode did here, at a third of its cost: it is a part of every connect
    (`python -m bench.storm`), and PyJWT checks it all again with the signature."""
    parts = token.split(".")
    if len(parts) != 3 or not isinstance(_segment(parts[0]), dict):
        return None
    claims = _segment(parts[1])
    return claims if isinstance(claims, dict) else None


# The headers `_plain_hs256` takes; any other goes to PyJWT (kid, crit, b64, ...).
_PLAIN_HEADERS = ({"alg": "HS256", "typ": "JWT"}, {"alg": "HS256"})


def _hs256_key(secret: str) -> bytes | None:
    """The HMAC key PyJWT would verify with, or None where PyJWT refuses the secret
    (one that looks like a PEM or SSH key): then every token goes to PyJWT."""
    try:
        key: bytes = HMACAlgorithm(HMACAlgorithm.SHA256).prepare_key(secret)
    except jwt.InvalidKeyError:
        return None
    return key


def _canonical(segment: str) -> bytes | None:
    """A base64url segment's bytes, if it is written as PyJWT accepts it and the
    encoder writes it (alphabet, no padding, no stray bits); else None."""
    try:
        data = b64url.decode(segment)
    except ValueError:
        return None
    if b64url.encode(data) != segment:
        return None
    return data


def _whole(value: Any) -> int | None:
    try:
        return int(value)
    except (ValueError, TypeError, OverflowError):
        return None


def _plain_hs256(
    token: str, key: bytes, claims: dict[str, Any], issuer: str | None
) -> dict[str, Any] | None:
    """The claims of a plain HS256 token that PyJWT 2.x (`jwt.decode` as `_decode`
    calls it, no audience) would accept, checked as it checks them; None for anything
    else, which PyJWT then decides and words. PyJWT took ~140 us a token, a tenth of a
    connect's CPU (`python -m bench.storm`); this takes ~20. `claims`: the payload
    as `_unverified_claims` read it. tests/test_auth.py holds the two side by side."""
    header, payload, signature = token.split(".")
    head = _canonical(header)
    sig = _canonical(signature)
    if head is None or sig is None or _canonical(payload) is None:
        return None
    try:
        if orjson.loads(head) not in _PLAIN_HEADERS:
            return None
    except ValueError:
        return None
    mac = hmac.new(key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    if not hmac.compare_digest(mac, sig):
        return None
    now = time.time()
    exp = _whole(claims.get("exp"))
    if exp is None or exp <= now:
        return None
    for name in ("nbf", "iat"):
        if name in claims:
            at = _whole(claims[name])
            if at is None or at > now:
                return None
    for name in ("sub", "jti"):
        if name in claims and not isinstance(claims[name], str):
            return None
    if issuer is not None and claims.get("iss") != issuer:
        return None
    return claims


def verifier(settings: Settings) -> TokenVerifier | None:
    """The verifier for these settings, or None when connections are not authenticated."""
    return TokenVerifier(settings) if settings.client_auth else None


def unprotected(settings: Settings) -> list[str]:
    """What these settings leave open to anyone, each with the variable that closes it."""
    open_parts = []
    if not settings.client_auth:
        open_parts.append(
            "Socket.IO connections are not authenticated "
            "(set REALTIME_JWT_SECRET or REALTIME_JWT_PUBLIC_KEY)"
        )
    if not settings.ingest_auth:
        open_parts.append("ingest is not authenticated (set REALTIME_INGEST_KEYS)")
    return open_parts
