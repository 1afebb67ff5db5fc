"""Placement: which host (and storage pool) a resource goes to, with capacity claimed atomically.

Pure and in-memory: the engines know nothing about HTTP, the database or drivers. The VIM builds
them from the inventory at start, replays the persisted claims with ``load``, and then calls
``claim`` / ``release`` / ``resize`` / ``move`` as resources come and go.
"""

from vimkit.placement.engine import PlacementState
from vimkit.placement.model import (
    AffinityRule,
    AffinityScope,
    AffinityType,
    AffinityUnsatisfiable,
    CapacityView,
    Claim,
    ClaimConflict,
    ClaimNotFound,
    Enforcement,
    Funnel,
    HostHold,
    HostSpec,
    HostUsage,
    LoadReport,
    Location,
    MoveTarget,
    NoValidHost,
    Placement,
    PlacementConfig,
    PlacementError,
    PlacementRequest,
    ResourceCapacity,
    Strategy,
    UnknownHost,
    UnknownZone,
)
from vimkit.placement.storage import (
    PoolUsage,
    StorageCapacity,
    StorageClaim,
    StoragePlacementState,
    StorageRequest,
)

__all__ = [
    "AffinityRule",
    "AffinityScope",
    "AffinityType",
    "AffinityUnsatisfiable",
    "CapacityView",
    "Claim",
    "ClaimConflict",
    "ClaimNotFound",
    "Enforcement",
    "Funnel",
    "HostHold",
    "HostSpec",
    "HostUsage",
    "LoadReport",
    "Location",
    "MoveTarget",
    "NoValidHost",
    "Placement",
    "PlacementConfig",
    "PlacementError",
    "PlacementRequest",
    "PlacementState",
    "PoolUsage",
    "ResourceCapacity",
    "StorageCapacity",
    "StorageClaim",
    "StoragePlacementState",
    "StorageRequest",
    "Strategy",
    "UnknownHost",
    "UnknownZone",
]
