"""Subscription filters (rest-binding.md §6) and which notifications each API carries.

A filter's members are AND-ed; each list member matches when the notification's value is in it.
Matching happens at fan-out time against the *facets* an emitted notification carries.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StringConstraints, model_validator

from vimkit.models.common import Metadata, RequestModel

RESOURCE_CHANGE = "VirtualisedResourceChangeNotification"
INFORMATION_CHANGE = "InformationChangeNotification"
ALARM = "AlarmNotification"
ALARM_CLEARED = "AlarmClearedNotification"
ALARM_LIST_REBUILT = "AlarmListRebuiltNotification"
PERFORMANCE_AVAILABLE = "PerformanceInformationAvailableNotification"
THRESHOLD_CROSSED = "ThresholdCrossedNotification"

RESOURCE_CHANGE_TYPES = ("ADDED", "MODIFIED", "REMOVED", "FAILED")
INFORMATION_CHANGE_TYPES = ("ADDITION", "REMOVAL", "UPDATE")
SEVERITIES = ("CRITICAL", "MAJOR", "MINOR", "WARNING", "INDETERMINATE", "CLEARED")

NOTIFICATION_TYPES: dict[str, tuple[str, ...]] = {
    "compute": (RESOURCE_CHANGE,),
    "network": (RESOURCE_CHANGE,),
    "storage": (RESOURCE_CHANGE,),
    "compute-info": (INFORMATION_CHANGE,),
    "network-info": (INFORMATION_CHANGE,),
    "storage-info": (INFORMATION_CHANGE,),
    "faults": (ALARM, ALARM_CLEARED, ALARM_LIST_REBUILT),
    "performance": (PERFORMANCE_AVAILABLE, THRESHOLD_CROSSED),
}

CHANGE_TYPES: dict[str, tuple[str, ...]] = {
    "compute": RESOURCE_CHANGE_TYPES,
    "network": RESOURCE_CHANGE_TYPES,
    "storage": RESOURCE_CHANGE_TYPES,
    "compute-info": INFORMATION_CHANGE_TYPES,
    "network-info": INFORMATION_CHANGE_TYPES,
    "storage-info": INFORMATION_CHANGE_TYPES,
}

Id = Annotated[str, StringConstraints(min_length=1, max_length=128)]
IdList = Annotated[list[Id], Field(min_length=1, max_length=1000)]
ShortList = Annotated[list[Annotated[str, StringConstraints(min_length=1, max_length=64)]], Field(min_length=1, max_length=32)]


class SubscriptionFilter(RequestModel):
    """The union of every API's filter members; :func:`validate_filter` checks which apply."""

    notificationTypes: ShortList | None = None
    resourceIds: IdList | None = None
    changeTypes: ShortList | None = None
    metadata: Metadata | None = Field(None, description="Every pair must be present on the resource.")
    perceivedSeverities: ShortList | None = Field(None, description="Fault management only.")
    managedObjectIds: IdList | None = Field(None, description="Fault management only.")
    pmJobIds: IdList | None = Field(None, description="Performance management only.")
    thresholdIds: IdList | None = Field(None, description="Performance management only.")
    objectInstanceIds: IdList | None = Field(None, description="Performance management only.")

    @model_validator(mode="after")
    def _no_empty_metadata(self) -> SubscriptionFilter:
        if self.metadata is not None and not self.metadata:
            raise ValueError("metadata must have at least one pair when given")
        return self


_API_SPECIFIC = {
    "perceivedSeverities": ("faults",),
    "managedObjectIds": ("faults",),
    "pmJobIds": ("performance",),
    "thresholdIds": ("performance",),
    "objectInstanceIds": ("performance",),
}


def validate_filter(api: str, flt: SubscriptionFilter) -> list[tuple[str, str]]:
    """Problems as (field, reason) pairs: members this API does not have, unknown values."""
    problems: list[tuple[str, str]] = []
    for member, apis in _API_SPECIFIC.items():
        if getattr(flt, member) is not None and api not in apis:
            problems.append((f"filter/{member}", f"not a filter of the {api} API"))
    allowed_types = NOTIFICATION_TYPES[api]
    for index, value in enumerate(flt.notificationTypes or ()):
        if value not in allowed_types:
            problems.append((f"filter/notificationTypes/{index}", f"must be one of {', '.join(allowed_types)}"))
    if flt.changeTypes is not None:
        allowed_changes = CHANGE_TYPES.get(api)
        if allowed_changes is None:
            problems.append(("filter/changeTypes", f"not a filter of the {api} API"))
        else:
            for index, value in enumerate(flt.changeTypes):
                if value not in allowed_changes:
                    problems.append((f"filter/changeTypes/{index}", f"must be one of {', '.join(allowed_changes)}"))
    for index, value in enumerate(flt.perceivedSeverities or ()):
        if value not in SEVERITIES:
            problems.append((f"filter/perceivedSeverities/{index}", f"must be one of {', '.join(SEVERITIES)}"))
    if api in ("compute-info", "network-info", "storage-info", "faults", "performance") and flt.metadata:
        problems.append(("filter/metadata", f"not a filter of the {api} API"))
    return problems


def matches(flt: dict[str, Any], facets: dict[str, Any]) -> bool:
    """Whether a stored filter (JSON form) selects a notification with these facets."""
    for member, wanted in flt.items():
        if wanted is None:
            continue
        if member == "notificationTypes":
            if facets.get("notificationType") not in wanted:
                return False
        elif member == "resourceIds":
            if facets.get("resourceId") not in wanted:
                return False
        elif member == "changeTypes":
            if facets.get("changeType") not in wanted:
                return False
        elif member == "metadata":
            have = facets.get("metadata") or {}
            if any(have.get(key) != value for key, value in wanted.items()):
                return False
        elif member == "perceivedSeverities":
            if facets.get("perceivedSeverity") not in wanted:
                return False
        elif member == "managedObjectIds":
            if facets.get("managedObjectId") not in wanted:
                return False
        elif member == "pmJobIds":
            if facets.get("pmJobId") not in wanted:
                return False
        elif member == "thresholdIds":
            if facets.get("thresholdId") not in wanted:
                return False
        elif member == "objectInstanceIds":
            instances = set(facets.get("objectInstanceIds") or ())
            if not instances.intersection(wanted):
                return False
    return True
