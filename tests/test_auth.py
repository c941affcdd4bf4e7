"""Connection tokens and publish keys, as pure logic: what is accepted, what is refused
and with which message (realtime/web/auth.py, realtime/ingest/publish_keys.py, the settings)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

import jwt
import orjson
import pytest

from realtime.core.settings import Settings, SettingsError
from realtime.ingest.publish_keys import IngestKeys, Unauthorized
from realtime.web.auth import (
    AuthError,
    Grant,
    TokenVerifier,
    _hs256_key,
    _plain_hs256,
    _unverified_claims,
    load_public_key,
    unprotected,
)
from tests.helpers.tokens import (
    INGEST_KEY,
    INGEST_KEYS,
    METRICS_KEY,
    SECRET,
    hs256,
    keypair,
    signed,
)

pytestmark = pytest.mark.unit


def verifier(**env: str) -> TokenVerifier:
    return TokenVerifier(Settings.from_env({"REALTIME_JWT_SECRET": SECRET, **env}))


def refusal(v: TokenVerifier, auth: object) -> str:
    with pytest.raises(AuthError) as info:
        v.verify(auth)
    return str(info.value)


def test_a_valid_token_grants_its_topic_patterns() -> None:
    grant = verifier().verify({"token": hs256(["metrics.*", "events.orders"])})
    assert grant.allows("metrics.cpu")
    assert grant.allows("metrics.cpu:1s")
    assert grant.allows("events.orders")
    assert not grant.allows("billing.x")
    assert not grant.allows("events.orders2")
    assert grant.expires_at is not None
    assert grant.expires_at > time.time()


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        (None, "token is required"),
        ({}, "token is required"),
        ({"token": 42}, "token is required"),
        ({"token": "not-a-jwt"}, "malformed"),
        ({"token": hs256(ttl_s=-10)}, "expired"),
        ({"token": hs256(secret="another-secret-" + "x" * 32)}, "signature is invalid"),
        ({"token": hs256(nbf=int(time.time()) + 600)}, "not valid yet"),
        ({"token": hs256(topics=None)}, "'topics' claim"),
        ({"token": hs256(topics="metrics.*")}, "'topics' claim"),
        ({"token": jwt.encode({"topics": ["*"]}, SECRET, algorithm="HS256")}, "'exp' claim"),
        ({"token": jwt.encode({"exp": 2**40, "topics": ["*"]}, "", algorithm="none")}, "HS256"),
    ],
)
def test_bad_tokens_are_refused_with_a_message(auth: object, message: str) -> None:
    assert message in refusal(verifier(), auth)


def test_a_verified_token_is_taken_again_until_it_expires(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A reconnect brings a token verified before: its grant is kept, and still
    refused once the token's `exp` has passed (the clock moved, the cache did not)."""
    v = verifier()
    token = hs256(["metrics.*"], ttl_s=60)
    first = v.verify({"token": token})
    assert v.verify({"token": token}) is first
    header, payload, signature = token.split(".")
    other = "A" if signature[0] != "A" else "B"  # the same claims, a signature not theirs
    assert "signature is invalid" in refusal(
        v, {"token": f"{header}.{payload}.{other}{signature[1:]}"}
    )
    assert first.expires_at is not None
    later = first.expires_at + 1
    monkeypatch.setattr("realtime.web.auth.time.time", lambda: later)
    assert "expired" in refusal(v, {"token": token})


def test_audience_and_issuer_are_checked_when_configured() -> None:
    v = verifier(REALTIME_JWT_AUDIENCE="dashboards", REALTIME_JWT_ISSUER="https://id.example")
    good = hs256(aud="dashboards", iss="https://id.example")
    assert v.verify({"token": good}).allows("metrics.cpu")
    assert "audience" in refusal(v, {"token": hs256(aud="billing", iss="https://id.example")})
    assert "'aud' claim" in refusal(v, {"token": hs256(iss="https://id.example")})
    assert "issuer" in refusal(v, {"token": hs256(aud="dashboards", iss="https://evil")})


@pytest.mark.parametrize(("kind", "algorithm"), [("rsa", "RS256"), ("ec", "ES256")])
def test_public_key_tokens(kind: str, algorithm: str) -> None:
    private, pem = keypair(kind)
    v = TokenVerifier(Settings.from_env({"REALTIME_JWT_PUBLIC_KEY": pem.replace("\n", "\\n")}))
    assert v.verify({"token": signed(private, algorithm)}).allows("metrics.cpu")
    other, _ = keypair(kind)
    assert "signature" in refusal(v, {"token": signed(other, algorithm)})
    # A token cannot pick HS256 and sign with the public key as the secret.
    forged = jwt.encode({"exp": 2**40, "topics": ["*"]}, "x" * 64, algorithm="HS256")
    assert algorithm in refusal(v, {"token": forged})


def test_open_grant_and_unreadable_keys() -> None:
    assert Grant(("*",)).allows("billing.x")
    with pytest.raises(ValueError, match="cannot be read"):
        load_public_key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")


def test_publish_keys_in_constant_time_with_topic_patterns() -> None:
    keys = IngestKeys(Settings.from_env({"REALTIME_INGEST_KEYS": INGEST_KEYS}).ingest_keys)
    anything = keys.authenticate(f"Bearer {INGEST_KEY}")
    assert anything.allows("billing.x")
    metrics = keys.authenticate(f"bearer  {METRICS_KEY}")
    assert metrics.allows("metrics.cpu")
    assert metrics.allows("events.orders")
    assert not metrics.allows("billing.x")
    assert anything.name != metrics.name
    assert INGEST_KEY not in anything.name
    for header in (None, "", "Bearer", "Basic abc", f"Token {INGEST_KEY}"):
        with pytest.raises(Unauthorized, match="Authorization: Bearer"):
            keys.authenticate(header)
    with pytest.raises(Unauthorized, match="not valid"):
        keys.authenticate(f"Bearer {INGEST_KEY}x")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REALTIME_JWT_SECRET": "short"}, "at least 32"),
        ({"REALTIME_JWT_SECRET": SECRET, "REALTIME_JWT_PUBLIC_KEY": "-----BEGIN PUBLIC KEY-----"},
         "not both"),
        ({"REALTIME_JWT_PUBLIC_KEY": "abc"}, "PEM public key"),
        ({"REALTIME_INGEST_KEYS": "short"}, "key 1 must be at least 16"),
        ({"REALTIME_INGEST_KEYS": f"{INGEST_KEY},{METRICS_KEY}:Bad Topic"}, "key 2 has an invalid"),
        ({"REALTIME_INGEST_KEYS": f"{INGEST_KEY}:"}, "key 1 has an invalid"),
    ],
)  # fmt: skip
def test_bad_auth_settings_are_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message) as info:
        Settings.from_env(env)
    assert INGEST_KEY not in str(info.value)
    assert SECRET not in str(info.value)


def test_secrets_are_redacted_and_unprotected_parts_named() -> None:
    settings = Settings.from_env(
        {"REALTIME_JWT_SECRET": SECRET, "REALTIME_INGEST_KEYS": INGEST_KEYS}
    )
    assert {SECRET, INGEST_KEY, METRICS_KEY} <= set(settings.secret_values())
    assert SECRET not in repr(settings)
    assert INGEST_KEY not in repr(settings)
    assert unprotected(settings) == []
    parts = unprotected(Settings.from_env({}))
    assert any("REALTIME_JWT_SECRET" in p for p in parts)
    assert any("REALTIME_INGEST_KEYS" in p for p in parts)


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": str(2**40)},
        {"exp": 2**40, "nbf": "0"},
        {"exp": 2**40, "iat": "0"},
        {"exp": 2**40, "nbf": True},
    ],
)
def test_time_claims_must_be_numbers(claims: dict[str, object]) -> None:
    """A signed token whose `exp` was a string was accepted (PyJWT reads it with int())."""
    token = jwt.encode({**claims, "topics": ["*"]}, SECRET, algorithm="HS256")
    message = refusal(verifier(), {"token": token})
    assert "must be a number" in message


@pytest.mark.parametrize("exp", [True, [2**40], None, {"t": 1}, "soon"])
def test_other_non_numeric_expiries_are_refused(exp: object) -> None:
    token = jwt.encode({"exp": exp, "topics": ["*"]}, SECRET, algorithm="HS256")
    refusal(verifier(), {"token": token})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forged(header: object, payload: object, *, secret: str = SECRET) -> str:
    """A token signed with `secret` as written: any header, any payload."""
    head = _b64(orjson.dumps(header))
    body = _b64(orjson.dumps(payload))
    mac = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


def _variants() -> list[str]:
    now = int(time.time())
    plain = {"exp": now + 600, "topics": ["*"]}
    jwt_header = {"alg": "HS256", "typ": "JWT"}
    good = _forged(jwt_header, plain)
    head, body, sig = good.split(".")
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    stray = sig[:-1] + last[last.index(sig[-1]) ^ 1]  # the same bytes, other trailing bits
    out = [
        good,
        _forged({"alg": "HS256"}, plain),
        hs256(["metrics.*"], iss="https://id.example", jti="j-1"),
        _forged(jwt_header, {**plain, "exp": now - 5}),
        _forged(jwt_header, {**plain, "exp": float(now + 600)}),
        _forged(jwt_header, {**plain, "exp": 1e300}),
        _forged(jwt_header, {**plain, "nbf": now + 600}),
        _forged(jwt_header, {**plain, "nbf": now - 600.5}),
        _forged(jwt_header, {**plain, "iat": now + 600}),
        _forged(jwt_header, {**plain, "iat": now - 1.5}),
        _forged(jwt_header, {**plain, "sub": 7}),
        _forged(jwt_header, {**plain, "sub": "user-7"}),
        _forged(jwt_header, {**plain, "jti": ["x"]}),
        _forged(jwt_header, {**plain, "iss": 5}),
        _forged(jwt_header, {**plain, "aud": "anyone"}),
        _forged({"alg": "HS256", "typ": "JWT", "kid": 3}, plain),
        _forged({"alg": "HS256", "typ": "JWT", "kid": "k1"}, plain),
        _forged({"alg": "HS256", "crit": ["exp"]}, plain),
        _forged({"alg": "HS256", "b64": False, "crit": ["b64"]}, plain),
        _forged({"alg": "HS512"}, plain),
        _forged({"alg": "none"}, plain),
        _forged({"alg": "HS256", "typ": "at+jwt"}, plain),
        _forged(jwt_header, plain, secret="another-secret-" + "x" * 32),
        f"{head}.{body}.{stray}",
        f"{head}=.{body}.{sig}",
        f"{head}.{body}.{sig}=",
        f"{head}.{body}.{sig}.",
        f"{head}.{body[:-1]}é.{sig}",
        f"{head}.{body}.{sig[:-2]}",
    ]
    return out


@pytest.mark.parametrize("issuer", [None, "https://id.example"])
def test_plain_hs256_tokens_are_judged_as_pyjwt_judges_them(issuer: str | None) -> None:
    """The fast path (`_plain_hs256`) never accepts what PyJWT refuses, and returns the
    claims PyJWT returns; what it does not take, PyJWT decides. It must take the plain
    tokens, or it is no faster."""
    key = _hs256_key(SECRET)
    assert key is not None
    taken = 0
    for token in _variants():
        try:
            expected = jwt.decode(
                token,
                SECRET,
                algorithms=["HS256"],
                issuer=issuer,
                options={"require": ["exp"], "verify_aud": False},
            )
        except jwt.PyJWTError:
            expected = None
        claims = _unverified_claims(token)
        fast = None if claims is None else _plain_hs256(token, key, claims, issuer)
        if fast is not None:
            taken += 1
            assert fast == expected, token
        v = verifier(REALTIME_JWT_ISSUER=issuer) if issuer else verifier()
        if expected is None:
            with pytest.raises(AuthError):
                v.verify({"token": token})
        else:
            assert v.verify({"token": token}).claims == expected
    assert taken >= (3 if issuer is None else 1)


def test_a_secret_pyjwt_refuses_leaves_every_token_to_it() -> None:
    assert _hs256_key("-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----") is None
    assert _hs256_key(SECRET) == SECRET.encode()
