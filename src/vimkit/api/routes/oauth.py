"""``POST /oauth2/token``: the OAuth 2.0 client-credentials grant (RFC 6749 §4.4).

Errors follow RFC 6749 §5.2 (``error``, ``error_description``); the body also carries the
problem-details members so a client that only knows RFC 9457 still reads it. Every call is in the
audit log with its outcome (and the consumer when it succeeded), never with the form or the secret.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.responses import Response

from vimkit.api.auth import CALLER_STATE_KEY
from vimkit.api.json import dumps
from vimkit.api.problems import Cause, problem_type
from vimkit.auth.principal import Principal

# A plain APIRoute, not VimRoute: the token endpoint is public, RFC 6749 §3.2 says unknown
# parameters are ignored, and a token response must never be stored for Idempotency-Key replays
# (VimRoute's idempotency also expects a bearer token, which this endpoint never has).
router = APIRouter(route_class=APIRoute, tags=["oauth2"])


class TokenResponse(BaseModel):
    access_token: str
    token_type: str
    expires_in: int
    scope: str


class OAuthError(BaseModel):
    error: str
    error_description: str
    type: str
    title: str
    status: int
    detail: str
    cause: str
    retryable: bool


def _oauth_error(status: int, error: str, description: str, basic: bool = False) -> Response:
    cause = Cause.UNAUTHORIZED if status == 401 else Cause.INVALID_INPUT
    body: dict[str, Any] = {
        "error": error,
        "error_description": description,
        "type": problem_type(cause),
        "title": "Unauthorized" if status == 401 else "Bad Request",
        "status": status,
        "detail": description,
        "cause": cause.value,
        "retryable": False,
    }
    headers = {"Cache-Control": "no-store", "Pragma": "no-cache"}
    if status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="vimkit"' if basic else 'Bearer realm="vimkit"'
    return Response(dumps(body), status_code=status, media_type="application/json", headers=headers)


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return ("", "")
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        return ("", "")
    # RFC 6749 §2.3.1: both parts are form-url-encoded before Basic encoding.
    return unquote(client_id), unquote(secret)


@router.post(
    "/oauth2/token",
    summary="Obtain an access token (client-credentials grant)",
    response_model=TokenResponse,
    responses={400: {"model": OAuthError}, 401: {"model": OAuthError}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "required": ["grant_type"],
                        "properties": {
                            "grant_type": {"type": "string", "enum": ["client_credentials"]},
                            "scope": {"type": "string"},
                            "client_id": {"type": "string"},
                            "client_secret": {"type": "string"},
                        },
                    }
                }
            },
        }
    },
)
async def token(request: Request) -> Response:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("application/x-www-form-urlencoded"):
        return _oauth_error(400, "invalid_request", "the body must be application/x-www-form-urlencoded")
    try:
        form = await request.form()
    except Exception:  # a malformed form body is the client's error
        return _oauth_error(400, "invalid_request", "the form body could not be parsed")
    grant_type = form.get("grant_type")
    if grant_type != "client_credentials":
        if not grant_type:
            return _oauth_error(400, "invalid_request", "grant_type is required")
        return _oauth_error(400, "unsupported_grant_type", "only client_credentials is supported")
    basic = _basic_credentials(request.headers.get("authorization"))
    form_id, form_secret = form.get("client_id"), form.get("client_secret")
    if basic is not None and (form_id or form_secret):
        return _oauth_error(400, "invalid_request", "use one client authentication method, not two")
    client_id, client_secret = basic if basic is not None else (str(form_id or ""), str(form_secret or ""))
    if not client_id or not client_secret:
        return _oauth_error(401, "invalid_client", "client authentication failed", basic is not None)
    services = request.app.state.services
    consumer = await run_in_threadpool(services.consumers.authenticate, client_id, client_secret)
    if consumer is None:
        return _oauth_error(401, "invalid_client", "client authentication failed", basic is not None)
    granted = list(consumer.scopes)
    requested = form.get("scope")
    if requested is not None:
        wanted = str(requested).split()
        unknown = [scope for scope in wanted if scope not in consumer.scopes]
        if unknown or not wanted:
            reason = f"scope '{unknown[0]}' is not granted to this client" if unknown else "empty scope"
            return _oauth_error(400, "invalid_scope", reason)
        granted = wanted
    access_token, expires_in = services.tokens.issue(
        consumer.id, consumer.resource_group_id, granted, consumer.generation
    )
    # The audit log records who obtained a token (never the secret, the form or the token).
    setattr(
        request.state,
        CALLER_STATE_KEY,
        Principal(consumer.id, consumer.resource_group_id, frozenset(granted)),
    )
    body = TokenResponse(
        access_token=access_token, token_type="Bearer", expires_in=expires_in, scope=" ".join(sorted(granted))
    )
    return Response(
        dumps(body.model_dump()),
        media_type="application/json",
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )
