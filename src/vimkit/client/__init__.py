"""vimkit.client: a typed Python SDK for the vimkit REST binding (docs/sdk.md).

    from vimkit.client import Client

    with Client("http://127.0.0.1:8700", "ccm-1", "secret") as vim:
        compute = vim.computes.allocate({"computeFlavourId": "m1.small"}, wait=30)
        for alarm in vim.alarms.list("(neq,perceivedSeverity,CLEARED)"):
            ...
"""

from vimkit.client.aio import AsyncClient
from vimkit.client.errors import (
    AffinityUnsatisfiable,
    ApiError,
    BackendUnavailable,
    Conflict,
    Forbidden,
    InternalError,
    InvalidInput,
    InvalidParam,
    NoCapacity,
    NotFound,
    PreconditionFailed,
    QuotaExceeded,
    RateLimited,
    TransportError,
    Unauthorized,
    VimError,
    WaitTimeout,
)
from vimkit.client.receiver import NotificationReceiver
from vimkit.client.sync import Client

__all__ = [
    "AffinityUnsatisfiable", "ApiError", "AsyncClient", "BackendUnavailable", "Client", "Conflict", "Forbidden",
    "InternalError", "InvalidInput", "InvalidParam", "NoCapacity", "NotFound", "NotificationReceiver",
    "PreconditionFailed", "QuotaExceeded", "RateLimited", "TransportError", "Unauthorized", "VimError",
    "WaitTimeout",
]
