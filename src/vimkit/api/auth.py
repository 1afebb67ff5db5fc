"""Authentication, revocation, rate limiting and scope checks: one shared mechanism for every route
(Ccm-Vim.012).

Routers declare ``dependencies=[Depends(require_scope("compute:read"))]``; :class:`VimRoute`
finds that scope and calls :func:`authenticate` before anything else runs, so a route cannot
forget it. Handlers that need the caller take ``principal: Principal = Depends(current_principal)``.

:func:`authenticate` runs once per request (the result is kept on ``request.state``):

1. ``Authorization: Bearer <token>`` present and well formed, else 401;
2. the token verifies (signature, ``kid``, ``iss``, ``aud``, expiry), else 401 — our own ES256
   tokens, or an external issuer's when one is configured (503 when its keys cannot be fetched);
3. for our own tokens, the consumer still exists with the same secret generation, else 401;
4. the consumer's rate-limit bucket has a token, else 429.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request
from fastapi.security import HTTPBearer

from vimkit.api.problems import ApiError, Cause
from vimkit.api.ratelimit import STATE_KEY as RATELIMIT_STATE_KEY
from vimkit.auth.principal import Principal
from vimkit.auth.tokens import KeySourceUnavailable, TokenError

# Declared so that the OpenAPI document names the scheme; the check itself is below.
bearer_scheme = HTTPBearer(auto_error=False, bearerFormat="JWT", description="OAuth 2.0 access token")

# Who called, set as soon as the token is verified (also for 403/429 answers): the audit log reads it.
CALLER_STATE_KEY = "caller"


def _unauthorized(detail: str, error: str | None = None) -> ApiError:
    challenge = 'Bearer realm="vimkit"'
    if error:
        # RFC 6750 §3: error_description is printable ASCII without '"' or '\\'.
        description = "".join(c if " " <= c <= "~" and c not in '"\\' else "'" for c in detail)
        challenge += f', error="{error}", error_description="{description}"'
    return ApiError(401, detail, cause=Cause.UNAUTHORIZED, headers={"WWW-Authenticate": challenge})


def authenticate(request: Request) -> Principal:
    """The caller of this request, verified once and remembered on the request."""
    state = request.state
    cached = getattr(state, "principal", None)
    if cached is not None:
        return cached
    header = request.headers.get("authorization")
    if not header:
        raise _unauthorized("an access token is required")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise _unauthorized("the Authorization header must be 'Bearer <token>'", "invalid_request")
    services = request.app.state.services
    try:
        verified = services.tokens.verify(token)
    except KeySourceUnavailable as exc:
        raise ApiError(
            503, str(exc), cause=Cause.BACKEND_UNAVAILABLE, headers={"Retry-After": "10"}
        ) from exc
    except TokenError as exc:
        raise _unauthorized(str(exc), "invalid_token") from exc
    principal = verified.principal
    if not verified.external and not services.consumers.token_generation_is_current(
        principal.consumer_id, verified.generation
    ):
        raise _unauthorized("the access token has been revoked", "invalid_token")
    setattr(state, CALLER_STATE_KEY, principal)
    limiter = services.rate_limiter
    if limiter.enabled:
        decision = limiter.check(principal.consumer_id)
        setattr(state, RATELIMIT_STATE_KEY, decision)
        if not decision.allowed:
            raise decision.error()
    state.principal = principal
    return principal


async def current_principal(request: Request) -> Principal:
    # async on purpose: a sync dependency costs a thread-pool round trip on every request.
    return authenticate(request)


def check_scope(principal: Principal, scope: str) -> Principal:
    if not principal.has_scope(scope):
        raise ApiError(
            403,
            f"the access token lacks the scope '{scope}'",
            cause=Cause.FORBIDDEN,
            headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
        )
    return principal


def require_scope(scope: str) -> Callable[[Request], Awaitable[Principal]]:
    async def _check(request: Request) -> Principal:
        return check_scope(authenticate(request), scope)

    _check.__name__ = f"require_{scope.replace(':', '_').replace('-', '_')}"
    _check.required_scope = scope  # type: ignore[attr-defined]
    return _check
