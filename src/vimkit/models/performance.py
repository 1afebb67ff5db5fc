"""Performance management information elements (ifa005-reference.md §2.11, rest-binding.md §8).

Members IFA 005 does not define are extensions and say so in their descriptions.
"""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from vimkit.models.common import Link, RequestModel, StrictInt, StrictNumber

ObjectId = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=64)]
MAX_OBJECTS = 10_000


class PmObjectType(str, Enum):
    VirtualCompute = "VirtualCompute"
    VirtualStorage = "VirtualStorage"


class PmJobState(str, Enum):
    ACTIVE = "ACTIVE"
    FINISHED = "FINISHED"


class ThresholdType(str, Enum):
    SINGLE_VALUE = "SINGLE_VALUE"


class PmJobCreate(RequestModel):
    """Create PM Job. Without ``objectInstanceIds`` and ``objectFilter`` every object of the type
    the caller can see is measured, including those allocated later."""

    objectType: PmObjectType
    objectInstanceIds: list[ObjectId] | None = Field(
        None, min_length=1, max_length=MAX_OBJECTS, description="The objects to measure (each must exist)."
    )
    objectFilter: Annotated[str, StringConstraints(min_length=1, max_length=4096)] | None = Field(
        None,
        description="SOL 013 attribute filter over the objects' representations, e.g. "
        "`(eq,metadata/cluster,c1)`; objects allocated later that match join the job at its next "
        "collection period. With `objectInstanceIds` both must hold.",
    )
    performanceMetric: list[Name] | None = Field(None, min_length=1, max_length=64)
    performanceMetricGroup: list[Name] | None = Field(None, min_length=1, max_length=16)
    collectionPeriod: StrictInt = Field(
        ge=1, le=86_400, description="Seconds; at least the configured minimum and a multiple of the sample interval."
    )
    reportingPeriod: StrictInt = Field(ge=1, le=86_400 * 7, description="Seconds; a multiple of collectionPeriod.")
    reportingBoundary: datetime | None = Field(None, description="No collection or reporting after this time.")


class PmJobLinks(BaseModel):
    self: Link
    reports: Link | None = Field(None, description="Extension: the job's reports.")


class PmJob(BaseModel):
    pmJobId: str
    objectType: PmObjectType
    objectInstanceIds: list[str] | None = None
    objectFilter: str | None = None
    performanceMetric: list[str] | None = None
    performanceMetricGroup: list[str] | None = None
    collectionPeriod: int
    reportingPeriod: int
    reportingBoundary: datetime | None = None
    state: PmJobState = Field(description="Extension: FINISHED once reportingBoundary has passed.")
    resourceGroupId: str = Field(description="Extension: the resource group owning the job.")
    createdAt: datetime = Field(description="Extension.")
    links: PmJobLinks | None = Field(None, alias="_links")


class PerformanceValue(BaseModel):
    timeStamp: datetime = Field(description="End of the collection period the value is about.")
    value: float


class PerformanceReportEntry(BaseModel):
    objectType: PmObjectType
    objectInstanceId: str
    subObjectInstanceId: str | None = Field(None, description="The port of a vNIC measurement.")
    performanceMetric: str
    performanceValues: list[PerformanceValue]


class ReportLinks(BaseModel):
    self: Link
    pmJob: Link


class PerformanceReport(BaseModel):
    reportId: str = Field(description="Extension.")
    pmJobId: str = Field(description="Extension.")
    periodStart: datetime = Field(description="Extension: start of the first collection period reported.")
    periodEnd: datetime = Field(description="Extension: end of the last collection period reported.")
    readyTime: datetime = Field(description="Extension: when the report was stored.")
    entries: list[PerformanceReportEntry]
    links: ReportLinks | None = Field(None, alias="_links")


class PerformanceReportSummary(BaseModel):
    """Extension: an item of ``GET …/pm_jobs/{pmJobId}/reports`` (without the entries)."""

    reportId: str
    pmJobId: str
    periodStart: datetime
    periodEnd: datetime
    readyTime: datetime
    objectCount: int
    expiryTime: datetime
    links: ReportLinks | None = Field(None, alias="_links")


class ThresholdDetails(RequestModel):
    thresholdValue: StrictNumber = Field(allow_inf_nan=False)
    hysteresis: StrictNumber = Field(
        0.0, ge=0, allow_inf_nan=False,
        description="UP above thresholdValue + hysteresis, DOWN below thresholdValue − hysteresis.",
    )


class ThresholdCreate(RequestModel):
    objectType: PmObjectType
    objectInstanceIds: list[ObjectId] = Field(min_length=1, max_length=MAX_OBJECTS)
    performanceMetric: Name
    thresholdType: ThresholdType
    thresholdDetails: ThresholdDetails
    collectionPeriod: StrictInt | None = Field(
        None, ge=1, le=86_400,
        description="Extension: seconds over which the measurement is computed before it is compared; "
        "default the minimum collection period.",
    )


class ThresholdLinks(BaseModel):
    self: Link


class Threshold(BaseModel):
    thresholdId: str
    objectType: PmObjectType
    objectInstanceIds: list[str]
    performanceMetric: str
    thresholdType: ThresholdType
    thresholdDetails: ThresholdDetails
    collectionPeriod: int = Field(description="Extension.")
    resourceGroupId: str = Field(description="Extension.")
    createdAt: datetime = Field(description="Extension.")
    links: ThresholdLinks | None = Field(None, alias="_links")


class MetricsCatalogueEntry(BaseModel):
    """Extension: one measurement the VIM offers (``GET /performance/v1/metrics_catalogue``)."""

    performanceMetric: str
    performanceMetricGroup: str
    objectType: PmObjectType
    subObjectType: str | None = None
    unit: str
    collectionMethod: str = Field(description="SI (sampled: mean or peak) or CC (cumulative counter delta).")
    aggregation: str = Field(description="mean, max or delta over a collection period.")
    prometheusName: str = Field(description="The metric family of the same values on /metrics.")
    description: str
