"""Fault management information elements (ifa005-reference.md §4.8, rest-binding.md §7)."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

from pydantic import BaseModel, Field

from vimkit.models.common import Link, RequestModel


class PerceivedSeverity(str, Enum):
    CRITICAL = "CRITICAL"
    MAJOR = "MAJOR"
    MINOR = "MINOR"
    WARNING = "WARNING"
    INDETERMINATE = "INDETERMINATE"
    CLEARED = "CLEARED"


class EventType(str, Enum):
    COMMUNICATIONS_ALARM = "COMMUNICATIONS_ALARM"
    PROCESSING_ERROR_ALARM = "PROCESSING_ERROR_ALARM"
    ENVIRONMENTAL_ALARM = "ENVIRONMENTAL_ALARM"
    QOS_ALARM = "QOS_ALARM"
    EQUIPMENT_ALARM = "EQUIPMENT_ALARM"


class AckState(str, Enum):
    ACKNOWLEDGED = "ACKNOWLEDGED"
    UNACKNOWLEDGED = "UNACKNOWLEDGED"


class AlarmLinks(BaseModel):
    self: Link


class Alarm(BaseModel):
    """Alarm (IFA 005 8.6.4) with the extensions ``managedObjectType`` and ``ackState``."""

    alarmId: str
    managedObjectId: str
    managedObjectType: str = Field(description="Extension: Host, VirtualCompute, VirtualStorage, Zone, …")
    alarmRaisedTime: datetime
    alarmChangedTime: datetime | None = None
    alarmClearedTime: datetime | None = None
    alarmAcknowledgedTime: datetime | None = None
    ackState: AckState
    perceivedSeverity: PerceivedSeverity
    eventTime: datetime
    eventType: EventType
    faultType: str | None = None
    probableCause: str
    isRootCause: bool
    correlatedAlarmId: list[str] = Field(default_factory=list)
    faultDetails: list[str] = Field(default_factory=list)
    links: AlarmLinks | None = Field(None, alias="_links")


class AlarmModifications(RequestModel):
    ackState: AckState
