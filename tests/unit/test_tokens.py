"""Token issuing and verification, key rotation and retention, and external-issuer tokens."""

from __future__ import annotations

import os
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.conftest import JwksServer
from vimkit.auth.external import ExternalIssuer
from vimkit.auth.keys import KeyStore
from vimkit.auth.tokens import KeySourceUnavailable, TokenError, TokenService


def service(data_dir: Path, lifetime: int = 600, **kwargs: object) -> TokenService:
    return TokenService(KeyStore(data_dir, lifetime + 60), "vimkit", "vimkit", lifetime, **kwargs)  # type: ignore[arg-type]


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def test_issued_token_carries_every_claim_and_verifies(tmp_path: Path) -> None:
    tokens = service(tmp_path)
    token, expires_in = tokens.issue("c-1", "rg-1", ["compute:write", "compute:read"], 3)
    assert expires_in == 600
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256" and header["kid"] == tokens.keys.current.kid
    claims = claims_of(token)
    assert claims["iss"] == "vimkit" and claims["aud"] == "vimkit" and claims["sub"] == "c-1"
    assert claims["rg"] == "rg-1" and claims["scope"] == "compute:read compute:write" and claims["gen"] == 3
    assert claims["exp"] - claims["iat"] == 600 and claims["jti"]
    verified = service(tmp_path).verify(token)  # a fresh service: no cache, keys from the directory
    assert verified.principal.consumer_id == "c-1" and verified.principal.resource_group_id == "rg-1"
    assert verified.principal.scopes == {"compute:read", "compute:write"}
    assert verified.generation == 3 and not verified.external


def _sign(tokens: TokenService, key: object = None, kid: str | None = None, alg: str = "ES256", **claims: object) -> str:
    now = int(time.time())
    body = {"iss": "vimkit", "aud": "vimkit", "sub": "c-1", "rg": "rg-1", "scope": "compute:read", "gen": 1,
            "iat": now, "nbf": now, "exp": now + 60, **claims}
    body = {name: value for name, value in body.items() if value is not None}
    current = tokens.keys.current
    return jwt.encode(body, key if key is not None else current.private_pem, algorithm=alg,
                      headers={"kid": kid or current.kid})


def test_bad_tokens_are_refused(tmp_path: Path) -> None:
    tokens = service(tmp_path)
    assert tokens.verify(_sign(tokens)).principal.consumer_id == "c-1"  # the control
    other_key = ec.generate_private_key(ec.SECP256R1())
    good = _sign(tokens)
    head, payload, signature = good.split(".")
    tampered_payload = jwt.utils.base64url_encode(
        jwt.utils.base64url_decode(payload).replace(b'"compute:read"', b'"admin"')
    ).decode()
    bad = {
        "expired": _sign(tokens, exp=int(time.time()) - 60, iat=int(time.time()) - 120),
        "wrong audience": _sign(tokens, aud="someone-else"),
        "wrong issuer": _sign(tokens, iss="someone-else"),
        "wrong key, known kid": _sign(tokens, key=other_key),
        "unknown kid": _sign(tokens, key=other_key, kid="0123456789abcdef"),
        "tampered": f"{head}.{tampered_payload}.{signature}",
        "no resource group": _sign(tokens, rg=None),
        "no generation": _sign(tokens, gen=None),
        "not yet valid": _sign(tokens, nbf=int(time.time()) + 600),
        "alg none": jwt.encode({**claims_of(good)}, None, algorithm="none", headers={"kid": tokens.keys.current.kid}),
        "hs256 with the public key": _hs256_with_public_key(tokens, claims_of(good)),
        "garbage": "not.a.token",
        "empty": "",
    }
    for name, token in bad.items():
        with pytest.raises(TokenError):
            tokens.verify(token)
            pytest.fail(f"{name} token was accepted")


def _hs256_with_public_key(tokens: TokenService, claims: dict) -> str:
    import base64
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": tokens.keys.current.kid}).encode())
    body = b64(json.dumps(claims).encode())
    mac = hmac.new(tokens.keys.current.public_pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"


def test_expiry_is_checked_on_cached_tokens(tmp_path: Path) -> None:
    tokens = service(tmp_path)
    token = _sign(tokens, exp=int(time.time()) + 60)
    verified = tokens.verify(token)
    tokens._cache[token] = type(verified)(verified.principal, verified.generation, time.time() - 60)
    with pytest.raises(TokenError, match="expired"):
        tokens.verify(token)


def test_rotation_keeps_tokens_of_the_previous_key_valid(tmp_path: Path) -> None:
    tokens = service(tmp_path)
    old_token, _ = tokens.issue("c-1", "rg-1", ["compute:read"], 1)
    old_kid = tokens.keys.current.kid
    # Another process (the CLI) rotates; this service notices within a second.
    new_key = KeyStore(tmp_path, 660).rotate()
    tokens._last_reload = -10.0
    new_token, _ = tokens.issue("c-1", "rg-1", ["compute:read"], 1)
    assert jwt.get_unverified_header(new_token)["kid"] == new_key.kid != old_kid
    fresh = service(tmp_path)
    assert fresh.verify(old_token).principal.consumer_id == "c-1"
    assert fresh.verify(new_token).principal.consumer_id == "c-1"


def _age_key_file(store: KeyStore, kid: str, created: float) -> None:
    path = next(store.directory.glob(f"*-{kid}.pem"))
    path.rename(store.directory / f"{created:.6f}-{kid}.pem")


def test_a_long_lived_key_stays_after_rotation_until_its_tokens_expire(tmp_path: Path) -> None:
    store = KeyStore(tmp_path, retain_seconds=100)
    first = store.current
    _age_key_file(store, first.kid, time.time() - 86_400)  # signing for a day already
    store._names = None
    store.reload()
    second = store.rotate()
    assert {key.kid for key in store.keys} == {first.kid, second.kid}, "the previous key must survive"
    # Once the successor is older than the retention, the previous key goes on the next rotation.
    _age_key_file(store, second.kid, time.time() - 200)
    store._names = None
    store.reload()
    third = store.rotate()
    assert [key.kid for key in store.keys] == [second.kid, third.kid]


def test_key_files_are_private_and_damaged_files_are_ignored(tmp_path: Path) -> None:
    store = KeyStore(tmp_path, 100)
    path = next(store.directory.glob("*.pem"))
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.stat(store.directory).st_mode & 0o777 == 0o700
    (store.directory / "123.000000-broken.pem").write_text("not a key")
    store._names = None
    store.reload()
    assert [key.kid for key in store.keys] == [path.stem.split("-", 1)[1]]


# --- external issuer --------------------------------------------------------------------------

ISSUER = "https://idp.example.test/"
AUDIENCE = "vimkit-api"


def _external_token(key: object, kid: str, alg: str = "RS256", **claims: object) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "ccm-7", "iat": now, "exp": now + 60,
            "scope": "compute:read compute:write", **claims}
    body = {name: value for name, value in body.items() if value is not None}
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


@pytest.fixture
def idp(jwks: JwksServer) -> tuple[JwksServer, object, object]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    jwks.add_key(rsa_key, "rsa-1", "RS256")
    jwks.add_key(ec_key, "ec-1", "ES256")
    return jwks, rsa_key, ec_key


def test_external_tokens_are_verified_with_the_jwks(tmp_path: Path, idp: tuple) -> None:
    jwks, rsa_key, ec_key = idp
    external = ExternalIssuer(jwks.url, ISSUER, AUDIENCE)
    tokens = service(tmp_path, external=external)
    verified = tokens.verify(_external_token(rsa_key, "rsa-1", rg="tenant-a"))
    assert verified.external and verified.principal.consumer_id == "ccm-7"
    assert verified.principal.resource_group_id == "tenant-a"
    assert verified.principal.scopes == {"compute:read", "compute:write"}
    by_ec = tokens.verify(_external_token(ec_key, "ec-1", "ES256", scope=None, scp=["network:read", "bogus"]))
    assert by_ec.principal.scopes == {"network:read"}
    # Without the group claim, each subject gets a group of its own, stable across tokens.
    derived = tokens.verify(_external_token(rsa_key, "rsa-1", sub="other", jti="1")).principal.resource_group_id
    assert derived.startswith("ext-") and derived == tokens.verify(
        _external_token(rsa_key, "rsa-1", sub="other", jti="2")).principal.resource_group_id
    assert jwks.requests == 1  # the key set is cached


def test_external_scope_mapping_and_admin(tmp_path: Path, idp: tuple) -> None:
    jwks, rsa_key, _ = idp
    mapped = ExternalIssuer(jwks.url, ISSUER, AUDIENCE, scope_map={"vim.read": "compute:read"})
    principal = mapped.verify(_external_token(rsa_key, "rsa-1", scope="vim.read admin"),
                              {"alg": "RS256", "kid": "rsa-1"}).principal
    assert principal.scopes == {"compute:read"}, "admin is dropped unless allowed"
    trusted = ExternalIssuer(jwks.url, ISSUER, AUDIENCE, allow_admin=True, resource_group_claim="tenant")
    principal = trusted.verify(_external_token(rsa_key, "rsa-1", scope="admin", tenant="t-1"),
                               {"alg": "RS256", "kid": "rsa-1"}).principal
    assert principal.is_admin and principal.resource_group_id == "t-1"


def test_bad_external_tokens_are_refused(tmp_path: Path, idp: tuple) -> None:
    jwks, rsa_key, _ = idp
    tokens = service(tmp_path, external=ExternalIssuer(jwks.url, ISSUER, AUDIENCE, refresh_cooldown=60))
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    bad = {
        "wrong audience": _external_token(rsa_key, "rsa-1", aud="other"),
        "expired": _external_token(rsa_key, "rsa-1", exp=int(time.time()) - 60),
        "wrong key, published kid": _external_token(stranger, "rsa-1"),
        "unknown kid": _external_token(stranger, "rsa-9"),
        "hs256": jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": int(time.time()) + 60},
                            "secret-secret-secret-secret-1234", algorithm="HS256", headers={"kid": "rsa-1"}),
        "bad group": _external_token(rsa_key, "rsa-1", rg="has spaces"),
        "no subject": _external_token(rsa_key, "rsa-1", sub=None),
    }
    for name, token in bad.items():
        with pytest.raises(TokenError):
            tokens.verify(token)
            pytest.fail(f"{name} token was accepted")
    # Another issuer's token is not sent to the JWKS at all.
    with pytest.raises(TokenError):
        tokens.verify(_external_token(rsa_key, "rsa-1", iss="https://evil.example.test/"))
    # Unknown kids force one refetch, then the cooldown protects the issuer.
    before = jwks.requests
    for kid in ("rsa-10", "rsa-11", "rsa-12"):
        with pytest.raises(TokenError):
            tokens.verify(_external_token(stranger, kid))
    assert jwks.requests - before <= 1


def test_unreachable_jwks_is_a_key_source_error(tmp_path: Path, idp: tuple) -> None:
    jwks, rsa_key, _ = idp
    url = jwks.url
    jwks.stop()
    tokens = service(tmp_path, external=ExternalIssuer(url, ISSUER, AUDIENCE, timeout=2))
    with pytest.raises(KeySourceUnavailable):
        tokens.verify(_external_token(rsa_key, "rsa-1"))
