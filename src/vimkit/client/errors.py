"""Typed exceptions of the SDK: one class per problem ``cause`` of rest-binding.md §1.3.

Code that handles a failure usually cares about the cause (no capacity, a conflict, not found),
not the status code, so the class is chosen by ``cause`` and every instance keeps the whole
RFC 9457 problem for the rest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class VimError(Exception):
    """Base of every error the SDK raises."""


class TransportError(VimError):
    """The VIM could not be reached (connection refused, reset, timed out) after the retries."""


class WaitTimeout(VimError):
    """A ``wait_until`` condition did not hold within its timeout; ``last`` is the last value seen."""

    def __init__(self, message: str, last: Any = None) -> None:
        super().__init__(message)
        self.last = last


@dataclass
class InvalidParam:
    name: str
    reason: str


class ApiError(VimError):
    """The VIM answered with a problem (RFC 9457). ``problem`` is the whole document."""

    def __init__(self, status: int, problem: dict[str, Any], method: str = "", url: str = "") -> None:
        self.status = status
        self.problem = problem
        self.cause: str = str(problem.get("cause") or problem.get("error") or "UNKNOWN")
        self.detail: str = str(problem.get("detail") or problem.get("error_description") or problem.get("title") or "")
        self.retryable: bool = bool(problem.get("retryable", False))
        self.invalid_params: list[InvalidParam] = [
            InvalidParam(str(item.get("name", "")), str(item.get("reason", "")))
            for item in problem.get("invalidParams") or [] if isinstance(item, dict)
        ]
        self.method = method
        self.url = url
        super().__init__(self.summary())

    @property
    def invalidParams(self) -> list[InvalidParam]:  # noqa: N802 - the wire name, for symmetry
        return self.invalid_params

    def summary(self) -> str:
        """One line: cause, status, detail and the named parameters."""
        text = f"{self.cause} ({self.status}): {self.detail}"
        named = [f"{item.name}: {item.reason}" for item in self.invalid_params if item.name]
        if named and not all(item.name in self.detail for item in self.invalid_params):
            text += " [" + "; ".join(named) + "]"
        return text


class InvalidInput(ApiError):
    pass


class Unauthorized(ApiError):
    pass


class Forbidden(ApiError):
    pass


class NotFound(ApiError):
    pass


class Conflict(ApiError):
    """409: the resource's state does not allow the request (and the base of the capacity causes)."""


class NoCapacity(Conflict):
    pass


class QuotaExceeded(Conflict):
    pass


class AffinityUnsatisfiable(Conflict):
    pass


class PreconditionFailed(ApiError):
    pass


class RateLimited(ApiError):
    pass


class BackendUnavailable(ApiError):
    pass


class InternalError(ApiError):
    pass


_BY_CAUSE: dict[str, type[ApiError]] = {
    "INVALID_INPUT": InvalidInput,
    "UNAUTHORIZED": Unauthorized,
    "invalid_client": Unauthorized,
    "FORBIDDEN": Forbidden,
    "NOT_FOUND": NotFound,
    "CONFLICT": Conflict,
    "NO_CAPACITY": NoCapacity,
    "QUOTA_EXCEEDED": QuotaExceeded,
    "AFFINITY_UNSATISFIABLE": AffinityUnsatisfiable,
    "PRECONDITION_FAILED": PreconditionFailed,
    "RATE_LIMITED": RateLimited,
    "BACKEND_UNAVAILABLE": BackendUnavailable,
    "INTERNAL": InternalError,
}
# A problem without a known cause (a proxy's error page, say) still gets a useful class.
_BY_STATUS: dict[int, type[ApiError]] = {
    400: InvalidInput, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 412: PreconditionFailed,
    422: InvalidInput, 429: RateLimited, 503: BackendUnavailable, 500: InternalError,
}


def error_for(status: int, problem: dict[str, Any], method: str = "", url: str = "") -> ApiError:
    cls = _BY_CAUSE.get(str(problem.get("cause") or problem.get("error") or "")) or _BY_STATUS.get(status, ApiError)
    return cls(status, problem, method, url)


@dataclass
class Problem:
    """A problem document built from a non-JSON error answer."""

    status: int
    text: str
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"status": self.status, "detail": self.text[:500] or f"HTTP {self.status}", **self.extra}
