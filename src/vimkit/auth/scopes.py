"""The OAuth scopes of each API (rest-binding.md §1.1)."""

from __future__ import annotations

API_SCOPES: dict[str, tuple[str, ...]] = {
    "compute": ("compute:read", "compute:write", "compute:subscribe"),
    "network": ("network:read", "network:write", "network:subscribe"),
    "storage": ("storage:read", "storage:write", "storage:subscribe"),
    "compute-info": ("compute-info:read", "compute-info:subscribe"),
    "network-info": ("network-info:read", "network-info:subscribe"),
    "storage-info": ("storage-info:read", "storage-info:subscribe"),
    "faults": ("faults:read", "faults:write", "faults:subscribe"),
    "performance": ("performance:read", "performance:write", "performance:subscribe"),
    "admin": ("admin",),
}

ADMIN_SCOPE = "admin"
ALL_SCOPES: tuple[str, ...] = tuple(s for scopes in API_SCOPES.values() for s in scopes)
CONSUMER_SCOPES: tuple[str, ...] = tuple(s for s in ALL_SCOPES if s != ADMIN_SCOPE)
