"""Issuing and verifying the VIM's signed JWT access tokens (and, optionally, external ones).

Own tokens are ES256 JWTs with ``kid``, ``iss``, ``aud``, ``sub`` (consumer id), ``rg`` (resource
group), ``scope``, ``gen`` (the consumer's secret generation, for revocation), ``iat``, ``nbf``,
``exp`` and ``jti``. Verified tokens are cached by their exact text until they expire, so the
steady-state cost of verification is one dictionary lookup; revocation is checked separately
(``ConsumerService.token_generation_is_current``) on every request.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

import jwt

from vimkit.auth.keys import KeyStore
from vimkit.auth.principal import Principal

if TYPE_CHECKING:
    from vimkit.auth.external import ExternalIssuer

ALGORITHM = "ES256"
_CLOCK_SKEW = 5.0
_REQUIRED_CLAIMS = ["exp", "iat", "sub", "aud", "iss", "rg", "gen"]


class TokenError(Exception):
    """The bearer token is missing, malformed, expired, revoked or not ours."""


class KeySourceUnavailable(TokenError):
    """The keys needed to verify the token cannot be fetched right now (external issuer down)."""


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    principal: Principal
    generation: int
    expires_at: float
    # True for tokens of the external identity provider: no consumer row, no generation check.
    external: bool = False


class TokenService:
    def __init__(
        self,
        keys: KeyStore,
        issuer: str,
        audience: str,
        lifetime_seconds: int,
        external: ExternalIssuer | None = None,
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.lifetime_seconds = lifetime_seconds
        self.external = external
        self._cache: OrderedDict[str, VerifiedToken] = OrderedDict()
        self._cache_limit = 10_000
        self._lock = threading.Lock()
        self._last_reload = 0.0

    def close(self) -> None:
        """Stop the external issuer's background JWKS refresh, if any."""
        if self.external is not None:
            self.external.close()

    def issue(
        self, consumer_id: str, resource_group_id: str, scopes: list[str], generation: int
    ) -> tuple[str, int]:
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": consumer_id,
            "rg": resource_group_id,
            "scope": " ".join(sorted(scopes)),
            "gen": generation,
            "iat": now,
            "nbf": now,
            "exp": now + self.lifetime_seconds,
            "jti": secrets.token_hex(12),
        }
        self._reload_if_rotated()
        key = self.keys.current
        signer = key.private_key if key.private_key is not None else key.private_pem
        token = jwt.encode(claims, signer, algorithm=ALGORITHM, headers={"kid": key.kid})
        return token, self.lifetime_seconds

    def _reload_if_rotated(self) -> None:
        # `vimkit keys rotate` runs in another process: pick its key up within a second.
        now = time.monotonic()
        if now - self._last_reload > 1.0:
            self._last_reload = now
            with self._lock:
                self.keys.reload()

    def verify(self, token: str) -> VerifiedToken:
        cached = self._cache.get(token)
        if cached is not None:
            if cached.expires_at + _CLOCK_SKEW < time.time():
                with self._lock:
                    self._cache.pop(token, None)
                raise TokenError("the access token has expired")
            return cached
        verified = self._decode(token)
        with self._lock:
            self._cache[token] = verified
            if len(self._cache) > self._cache_limit:
                self._cache.popitem(last=False)
        return verified

    def _decode(self, token: str) -> VerifiedToken:
        if len(token) > 8192:
            raise TokenError("the access token is too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenError("the access token is malformed") from exc
        kid = header.get("kid")
        key = self.keys.verification_key(kid) if isinstance(kid, str) else None
        if key is None and isinstance(kid, str):
            self._reload_if_rotated()
            key = self.keys.verification_key(kid)
        if key is None and self.external is not None and self.external.claims_token(token):
            return self.external.verify(token, header)
        if header.get("alg") != ALGORITHM:
            raise TokenError("the access token uses an unexpected algorithm")
        if key is None:
            raise TokenError("the access token was signed by an unknown key")
        try:
            claims = jwt.decode(
                token,
                key.public_key if key.public_key is not None else key.public_pem,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=_CLOCK_SKEW,
                options={"require": _REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("the access token has expired") from exc
        except jwt.PyJWTError as exc:
            raise TokenError(f"the access token is invalid: {exc}") from exc
        scopes = claims.get("scope", "")
        if not isinstance(scopes, str) or not isinstance(claims["rg"], str) or not isinstance(claims["gen"], int):
            raise TokenError("the access token is invalid: malformed claims")
        principal = Principal(
            consumer_id=str(claims["sub"]),
            resource_group_id=claims["rg"],
            scopes=frozenset(scopes.split()),
        )
        return VerifiedToken(principal, claims["gen"], float(claims["exp"]))
