"""Response and request models the SDK needs that do not live in :mod:`vimkit.models`.

The server declares these next to its routes or its notification machinery (which import the
database layer); the SDK must import quickly and without a database, so it mirrors them here.
``tests/client/test_models.py`` checks that the members stay the same as the server's.
Every other model is the server's own, imported from :mod:`vimkit.models`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from vimkit.models.common import Link, RequestModel


class SubscriptionFilter(RequestModel):
    notificationTypes: list[str] | None = None
    resourceIds: list[str] | None = None
    changeTypes: list[str] | None = None
    metadata: dict[str, str] | None = None
    perceivedSeverities: list[str] | None = None
    managedObjectIds: list[str] | None = None
    pmJobIds: list[str] | None = None
    thresholdIds: list[str] | None = None
    objectInstanceIds: list[str] | None = None


class ParamsBasic(RequestModel):
    userName: str
    password: str


class ParamsOauth2ClientCredentials(RequestModel):
    clientId: str
    clientPassword: str
    tokenEndpoint: str


class SubscriptionAuthentication(RequestModel):
    authType: list[str]
    paramsBasic: ParamsBasic | None = None
    paramsOauth2ClientCredentials: ParamsOauth2ClientCredentials | None = None


class SubscriptionRequest(RequestModel):
    callbackUri: str
    filter: SubscriptionFilter | None = None
    authentication: SubscriptionAuthentication | None = None


class DeliveryStatus(BaseModel):
    state: str
    pendingCount: int = 0
    lastSuccessAt: datetime | None = None
    lastError: str | None = None
    lastErrorAt: datetime | None = None
    consecutiveFailures: int = 0
    failingSince: datetime | None = None


class SubscriptionLinks(BaseModel):
    self: Link


class Subscription(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str
    callbackUri: str
    filter: SubscriptionFilter | None = None
    links: SubscriptionLinks | None = Field(None, alias="_links")
    deliveryStatus: DeliveryStatus | None = None


class Amount(BaseModel):
    total: int
    allocated: int
    reserved: int = 0
    available: int
    unavailable: int = 0
    largestAvailable: int = 0


class ComputeCapacity(BaseModel):
    zoneId: str | None = None
    resourceTypeId: str | None = None
    hosts: int
    schedulableHosts: int
    vcpus: Amount
    memoryMb: Amount
    diskGb: Amount
    availableInstances: int | None = None


class SegmentCapacity(BaseModel):
    resourceTypeId: str
    networkType: str
    total: int
    allocated: int
    available: int
    ranges: list[dict[str, Any]] = Field(default_factory=list)


class AddressCapacity(BaseModel):
    subnetId: str
    networkId: str
    ipVersion: str
    cidr: str
    total: int
    allocated: int
    available: int


class NetworkCapacity(BaseModel):
    zoneId: str | None = None
    resourceTypeId: str | None = None
    segments: list[SegmentCapacity]
    addresses: list[AddressCapacity] = Field(default_factory=list)


class ConsumerCreate(RequestModel):
    consumerName: str
    resourceGroupId: str | None = None
    scopes: list[str]


class Consumer(BaseModel):
    consumerId: str
    consumerName: str
    clientId: str
    resourceGroupId: str
    scopes: list[str]
    createdAt: datetime
    clientSecret: str | None = Field(None, description="Only in the answers of create and rotate_secret.")


class TokenResponse(BaseModel):
    access_token: str
    token_type: str
    expires_in: int
    scope: str = ""
