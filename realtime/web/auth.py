"""Connection auth, before the first step of delivery: the JWT a Socket.IO client presents
on connect (`auth: {"token": JWT}`), and the topics it allows.

HS256 with `REALTIME_JWT_SECRET`, or RS256/ES256 with `REALTIME_JWT_PUBLIC_KEY`; `exp` is
required, `nbf`, `aud` (`REALTIME_JWT_AUDIENCE`) and `iss` (`REALTIME_JWT_ISSUER`) are
checked. The claim `topics` lists the glob patterns the token may subscribe to.
Pure apart from the clock PyJWT reads.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

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
        return orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (ValueError, binascii.Error):  # orjson's and UTF-8 errors are ValueErrors
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
