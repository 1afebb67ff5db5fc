"""Building blocks shared by every information element model.

Field names are the IFA 005 names in lowerCamelCase exactly as they appear on the wire, so the
same model serves validation, the OpenAPI document, the filter schema and the SDK.
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    model_validator,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    Strict,
    StringConstraints,
)

# Request numbers and booleans are strict: JSON `false` is not a number and `"1"` is not an
# integer. (Model-wide strict mode would also refuse enum values, which FastAPI validates from
# already-parsed JSON.)
StrictInt = Annotated[int, Strict()]
# Whole numbers are written back as JSON integers (8192, not 8192.0).
StrictNumber = Annotated[
    float, Strict(), PlainSerializer(lambda value: int(value) if float(value).is_integer() else value)
]
StrictBool = Annotated[bool, Strict()]

Identifier = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]*$"),
]

MAX_METADATA_ENTRIES = 128


def _metadata_from_pairs(value: Any) -> Any:
    """Accept IFA's ``[{key, value}]`` list as well as a JSON object (rest-binding.md §3)."""
    if isinstance(value, list):
        result: dict[str, Any] = {}
        for index, item in enumerate(value):
            if not isinstance(item, dict) or set(item) != {"key", "value"}:
                raise ValueError(f"item {index} must be an object with exactly 'key' and 'value'")
            result[item["key"]] = item["value"]
        return result
    return value


MetadataKey = Annotated[str, StringConstraints(min_length=1, max_length=255)]
MetadataValue = Annotated[str, StringConstraints(max_length=1024)]
Metadata = Annotated[
    dict[MetadataKey, MetadataValue],
    BeforeValidator(_metadata_from_pairs),
    Field(
        max_length=MAX_METADATA_ENTRIES,
        description="Consumer key/value pairs, stored and returned unchanged. Also accepted as "
        "a list of {key, value} objects.",
    ),
]


class RequestModel(BaseModel):
    """A request body: unknown members are refused so that a typo never passes silently."""

    model_config = ConfigDict(extra="forbid")


class ResponseModel(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Link(BaseModel):
    href: str


class OperationalState(str, Enum):
    ENABLED = "ENABLED"
    DISABLED = "DISABLED"


class ProvisioningState(str, Enum):
    """Extension (rest-binding.md §1.5): where the VIM is in realising the resource."""

    ALLOCATING = "ALLOCATING"
    ALLOCATED = "ALLOCATED"
    UPDATING = "UPDATING"
    TERMINATING = "TERMINATING"
    FAILED = "FAILED"


class AffinityType(str, Enum):
    AFFINITY = "AFFINITY"
    ANTI_AFFINITY = "ANTI_AFFINITY"


class AffinityScope(str, Enum):
    NFVI_NODE = "NFVI_NODE"
    ZONE = "ZONE"
    NFVI_POP = "NFVI_POP"


class Enforcement(str, Enum):
    HARD = "HARD"
    SOFT = "SOFT"


class AffinityResourceList(RequestModel):
    resource: list[Identifier] = Field(min_length=1, max_length=256)


class AffinityOrAntiAffinityConstraint(RequestModel):
    """AffinityOrAntiAffinityConstraint (IFA 005 8.4.8.2). For a compute NFVI_NODE is the host; for a
    volume it is the storage pool (against a compute member: a pool in the compute's zone)."""

    type: AffinityType
    scope: AffinityScope = AffinityScope.NFVI_NODE
    affinityOrAntiAffinityResourceList: AffinityResourceList | None = None
    affinityOrAntiAffinityResourceGroupId: Identifier | None = None
    enforcement: Enforcement = Field(Enforcement.HARD, description="Extension: SOFT makes the rule best effort.")

    @model_validator(mode="after")
    def _exactly_one(self) -> AffinityOrAntiAffinityConstraint:
        given = (self.affinityOrAntiAffinityResourceList is not None) + (
            self.affinityOrAntiAffinityResourceGroupId is not None
        )
        if given != 1:
            raise ValueError(
                "exactly one of affinityOrAntiAffinityResourceList and "
                "affinityOrAntiAffinityResourceGroupId is required"
            )
        return self


class ErrorInfo(BaseModel):
    """The RFC 9457 problem of a failed resource or operation (extension ``error``)."""

    model_config = {"extra": "allow"}

    type: str
    title: str
    status: int
    detail: str
    cause: str
    retryable: bool
