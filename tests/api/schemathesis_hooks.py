"""Schemathesis hooks loaded by tests/api/test_schemathesis.py (``SCHEMATHESIS_HOOKS``)."""

from __future__ import annotations

import schemathesis


@schemathesis.check
def errors_are_problem_details(ctx, response, case) -> None:  # type: ignore[no-untyped-def]
    """Every 4xx/5xx is RFC 9457 problem details (the token endpoint speaks RFC 6749 too)."""
    if response.status_code < 400:
        return
    content_type = response.headers.get("content-type", [""])[0]
    if case.path == "/oauth2/token" and response.status_code in (400, 401):
        assert content_type.startswith("application/json"), content_type
        assert response.json()["error"], response.text
    else:
        assert content_type.startswith("application/problem+json"), (
            f"{case.method} {case.path} answered {response.status_code} with {content_type}"
        )
    body = response.json()
    assert body["status"] == response.status_code and body["detail"] and body["cause"], body
