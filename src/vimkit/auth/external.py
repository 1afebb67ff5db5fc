"""Tokens of an external OAuth 2.0 / OpenID Connect issuer, verified with its JWKS.

Configured by ``external_jwks_url``, ``external_issuer`` and ``external_audience``. A token is
accepted when it is RS256 or ES256, signed by a key of the JWKS (matched by ``kid``), unexpired,
and its ``iss`` and ``aud`` are the configured ones. It maps to a :class:`Principal`:

- consumer id = ``sub`` (hashed into ``ext-…`` when longer than 64 characters);
- resource group = the claim ``external_resource_group_claim`` (default ``rg``), or, when the
  token has none, a group derived from issuer and ``sub`` (``ext-<hash>``), so that every external
  subject is isolated by default;
- scopes = ``scope`` (space separated) or ``scp`` (string or list), renamed through
  ``external_scope_map``; names that are not vimkit scopes are dropped, and so is ``admin`` unless
  ``external_allow_admin`` is set.

External tokens have no consumer row, so deleting a consumer or rotating a secret does not
apply to them: they stay valid until they expire (revocation is the issuer's business).

The JWKS is fetched with :class:`jwt.PyJWKClient` and cached for ``external_jwks_cache_seconds``;
an unknown ``kid`` forces at most one refetch per ``refresh_cooldown`` seconds, so forged tokens
cannot make the VIM hammer the issuer. Verification runs on the event loop, so the server
(``background_refresh``) fetches the JWKS at start-up and again before the cache expires in a
thread of its own: requests then only fetch for a ``kid`` the issuer has just introduced.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

import jwt

from vimkit.auth.principal import Principal
from vimkit.auth.scopes import ADMIN_SCOPE, ALL_SCOPES
from vimkit.auth.tokens import KeySourceUnavailable, TokenError, VerifiedToken

log = logging.getLogger("vimkit.auth")

ALGORITHMS = ("RS256", "ES256")
_CLOCK_SKEW = 5.0
_GROUP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


class ExternalIssuer:
    def __init__(
        self,
        jwks_url: str,
        issuer: str,
        audience: str,
        *,
        resource_group_claim: str = "rg",
        scope_claim: str | None = None,
        scope_map: Mapping[str, str] | None = None,
        allow_admin: bool = False,
        cache_seconds: float = 300.0,
        refresh_cooldown: float = 10.0,
        timeout: float = 5.0,
        background_refresh: bool = False,
    ) -> None:
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.audience = audience
        self.resource_group_claim = resource_group_claim
        self.scope_claim = scope_claim
        self.scope_map = dict(scope_map or {})
        self.allow_admin = allow_admin
        self.refresh_cooldown = refresh_cooldown
        self._client = jwt.PyJWKClient(jwks_url, cache_jwk_set=True, lifespan=cache_seconds, timeout=timeout)
        self._lock = threading.Lock()
        self._last_forced_refresh = -float("inf")
        self.cache_seconds = cache_seconds
        self._stopped = threading.Event()
        if background_refresh:
            threading.Thread(target=self._refresh_loop, name="vimkit-jwks", daemon=True).start()

    def _refresh_loop(self) -> None:
        delay = 0.0
        while not self._stopped.wait(delay):
            try:
                self._client.get_jwk_set(refresh=True)
                delay = self.cache_seconds * 0.8
            except jwt.PyJWTError as exc:
                log.warning("cannot fetch the external issuer's JWKS: %s", type(exc).__name__)
                delay = min(30.0, self.cache_seconds / 4)

    def close(self) -> None:
        self._stopped.set()

    @classmethod
    def from_settings(cls, settings: Any) -> ExternalIssuer | None:
        if not settings.external_jwks_url:
            return None
        return cls(
            settings.external_jwks_url,
            settings.external_issuer,
            settings.external_audience,
            resource_group_claim=settings.external_resource_group_claim,
            scope_claim=settings.external_scope_claim,
            scope_map=settings.external_scope_map,
            allow_admin=settings.external_allow_admin,
            cache_seconds=settings.external_jwks_cache_seconds,
            background_refresh=True,
        )

    def claims_token(self, token: str) -> bool:
        """Whether the (unverified) token names this issuer; the signature is checked in verify."""
        try:
            claims = jwt.decode(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return False
        return isinstance(claims, dict) and claims.get("iss") == self.issuer

    def _signing_key(self, kid: str) -> jwt.PyJWK:
        try:
            key = self._client.match_kid(self._client.get_signing_keys(), kid)
            if key is None:
                with self._lock:
                    now = time.monotonic()
                    refresh = now - self._last_forced_refresh >= self.refresh_cooldown
                    if refresh:
                        self._last_forced_refresh = now
                if refresh:
                    key = self._client.match_kid(self._client.get_signing_keys(refresh=True), kid)
        except jwt.PyJWKClientConnectionError as exc:
            raise KeySourceUnavailable("the external issuer's signing keys cannot be fetched") from exc
        except jwt.PyJWTError as exc:
            raise TokenError("the external issuer's key set is unusable") from exc
        if key is None:
            raise TokenError("the access token was signed by an unknown key")
        return key

    def verify(self, token: str, header: Mapping[str, Any]) -> VerifiedToken:
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise TokenError("the access token uses an unexpected algorithm")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenError("the access token has no key id")
        key = self._signing_key(kid)
        if key.algorithm_name != algorithm:
            raise TokenError("the access token's algorithm does not match its key")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=_CLOCK_SKEW,
                options={"require": ["exp", "sub", "aud", "iss"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("the access token has expired") from exc
        except jwt.PyJWTError as exc:
            raise TokenError(f"the access token is invalid: {exc}") from exc
        subject = claims["sub"]
        if not isinstance(subject, str) or not subject:
            raise TokenError("the access token is invalid: malformed 'sub'")
        principal = Principal(
            consumer_id=subject if len(subject) <= 64 else "ext-" + _digest(subject)[:40],
            resource_group_id=self._resource_group(claims, subject),
            scopes=self._scopes(claims),
        )
        return VerifiedToken(principal, 0, float(claims["exp"]), external=True)

    def _resource_group(self, claims: Mapping[str, Any], subject: str) -> str:
        group = claims.get(self.resource_group_claim)
        if group is None:
            return "ext-" + _digest(f"{self.issuer}\0{subject}")[:24]
        if not isinstance(group, str) or not _GROUP_RE.match(group):
            raise TokenError(f"the access token is invalid: malformed '{self.resource_group_claim}'")
        return group

    def _scopes(self, claims: Mapping[str, Any]) -> frozenset[str]:
        names = [self.scope_claim] if self.scope_claim else ["scope", "scp"]
        raw: Any = None
        for name in names:
            if claims.get(name) is not None:
                raw = claims[name]
                break
        if isinstance(raw, str):
            values = raw.split()
        elif isinstance(raw, list) and all(isinstance(item, str) for item in raw):
            values = raw
        else:
            values = []
        granted = set()
        for value in values:
            scope = self.scope_map.get(value, value)
            if scope in ALL_SCOPES and (scope != ADMIN_SCOPE or self.allow_admin):
                granted.add(scope)
        return frozenset(granted)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()
