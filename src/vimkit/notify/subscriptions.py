"""Subscriptions: creation (with the callback test), queries, deletion and delivery status."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from enum import Enum
from typing import Annotated, Any

import httpx
from pydantic import BaseModel, Field, StringConstraints, model_validator
from sqlalchemy import ColumnElement, func, select

from vimkit.api.problems import ApiError, Cause, invalid, not_found
from vimkit.auth.principal import Principal
from vimkit.models.common import Link, RequestModel
from vimkit.notify.callbacks import AddressPolicy, CallbackRefused, TokenCache, auth_headers
from vimkit.notify.filters import SubscriptionFilter, validate_filter
from vimkit.notify.secrets import SecretBox
from vimkit.store.db import Database
from vimkit.store.filter_sql import FilterSchema
from vimkit.store.models import SubscriptionRow
from vimkit.store.repository import (
    Page,
    PageRequest,
    get_document,
    list_documents,
    utcnow,
    visibility_of,
)

Text255 = Annotated[str, StringConstraints(min_length=1, max_length=255)]


class AuthType(str, Enum):
    BASIC = "BASIC"
    OAUTH2_CLIENT_CREDENTIALS = "OAUTH2_CLIENT_CREDENTIALS"


class ParamsBasic(RequestModel):
    userName: Text255
    password: Text255


class ParamsOauth2ClientCredentials(RequestModel):
    clientId: Text255
    clientPassword: Text255
    tokenEndpoint: Annotated[str, StringConstraints(min_length=1, max_length=2048)]


class SubscriptionAuthentication(RequestModel):
    """SOL 013 SubscriptionAuthentication: how the VIM authenticates towards the callback."""

    authType: list[AuthType] = Field(min_length=1, max_length=2)
    paramsBasic: ParamsBasic | None = None
    paramsOauth2ClientCredentials: ParamsOauth2ClientCredentials | None = None

    @model_validator(mode="after")
    def _params_for_each_type(self) -> SubscriptionAuthentication:
        if AuthType.BASIC in self.authType and self.paramsBasic is None:
            raise ValueError("paramsBasic is required when authType contains BASIC")
        if AuthType.OAUTH2_CLIENT_CREDENTIALS in self.authType and self.paramsOauth2ClientCredentials is None:
            raise ValueError(
                "paramsOauth2ClientCredentials is required when authType contains OAUTH2_CLIENT_CREDENTIALS"
            )
        return self


class SubscriptionRequest(RequestModel):
    callbackUri: Annotated[str, StringConstraints(min_length=1, max_length=2048)]
    filter: SubscriptionFilter | None = None
    authentication: SubscriptionAuthentication | None = Field(
        None, description="Credentials for calling back; never returned."
    )


class DeliveryStatus(BaseModel):
    """Extension: how delivery to this subscriber is going."""

    state: str = Field(description="ACTIVE, or FAILING once deliveries kept failing past the give-up horizon.")
    pendingCount: int
    lastSuccessAt: datetime | None = None
    lastError: str | None = None
    lastErrorAt: datetime | None = None
    consecutiveFailures: int
    failingSince: datetime | None = None


class SubscriptionLinks(BaseModel):
    self: Link


class Subscription(BaseModel):
    id: str
    callbackUri: str
    filter: SubscriptionFilter | None = None
    links: SubscriptionLinks | None = Field(None, alias="_links")
    deliveryStatus: DeliveryStatus | None = None


# Sequences are handed out without gaps and acknowledged in order: what is pending is the difference.
_PENDING = SubscriptionRow.next_sequence - 1 - SubscriptionRow.acked_sequence

SUBSCRIPTION_SCHEMA = FilterSchema.from_model(
    Subscription, SubscriptionRow.body, columns={"id": SubscriptionRow.id, "callbackUri": SubscriptionRow.callback_uri}
)


class SubscriptionService:
    def __init__(
        self,
        database: Database,
        box: SecretBox,
        policy: AddressPolicy,
        callback_timeout: float = 5.0,
        max_per_group: int = 1000,
        tokens: TokenCache | None = None,
    ) -> None:
        self.database = database
        self.box = box
        self.policy = policy
        self.callback_timeout = callback_timeout
        self.max_per_group = max_per_group
        # Shared with the dispatcher: the token fetched for the test GET serves the deliveries.
        self.tokens = tokens or TokenCache()
        self.changed: list[Any] = []  # hooks told when subscriptions change (dispatcher cache)

    async def create(self, principal: Principal, api: str, request: SubscriptionRequest) -> SubscriptionRow:
        if request.filter is not None:
            problems = validate_filter(api, request.filter)
            if problems:
                raise ApiError(400, "; ".join(f"{n}: {r}" for n, r in problems), invalid_params=problems)
        try:
            await self.policy.check(request.callbackUri)
        except CallbackRefused as exc:
            raise invalid("callbackUri", exc.reason) from exc
        authentication = request.authentication.model_dump(mode="json", exclude_none=True) if request.authentication else None
        await self._test_callback(request.callbackUri, authentication)
        subscription_id = str(uuid.uuid4())
        body = {
            "id": subscription_id,
            "callbackUri": request.callbackUri,
            "filter": request.filter.model_dump(mode="json", exclude_none=True) if request.filter else None,
        }
        now = utcnow()
        row = SubscriptionRow(
            id=subscription_id,
            resource_group_id=principal.resource_group_id,
            created_at=now,
            updated_at=now,
            version=1,
            body=body,
            api=api,
            consumer_id=principal.consumer_id,
            all_groups=principal.is_admin,
            callback_uri=request.callbackUri,
            authentication=self.box.seal(authentication) if authentication else None,
            state="ACTIVE",
            next_sequence=1,
            consecutive_failures=0,
        )
        await asyncio.to_thread(self._insert, row)
        self._changed()
        return row

    def _insert(self, row: SubscriptionRow) -> None:
        with self.database.write() as session:
            count = session.scalar(
                select(func.count()).select_from(SubscriptionRow).where(
                    SubscriptionRow.resource_group_id == row.resource_group_id
                )
            )
            if (count or 0) >= self.max_per_group:
                raise ApiError(409, f"at most {self.max_per_group} subscriptions per resource group",
                               cause=Cause.QUOTA_EXCEEDED)
            session.add(row)

    async def _test_callback(self, uri: str, authentication: dict[str, Any] | None) -> None:
        """SOL 013: GET the callback before subscribing; anything but 204 refuses the subscription."""
        try:
            async with httpx.AsyncClient(timeout=self.callback_timeout, follow_redirects=False) as client:
                headers = await auth_headers(client, self.tokens, authentication)
                response = await client.get(uri, headers=headers)
        except httpx.HTTPStatusError as exc:
            raise self._test_failed(f"the callback's token endpoint refused the credentials ({exc})") from exc
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise self._test_failed(f"the callback could not be reached: {type(exc).__name__}") from exc
        if response.status_code != 204:
            raise self._test_failed(f"GET on the callback answered {response.status_code}, expected 204")

    @staticmethod
    def _test_failed(reason: str) -> ApiError:
        return ApiError(422, reason, cause=Cause.INVALID_INPUT, invalid_params=[("callbackUri", reason)])

    def get(self, principal: Principal, api: str, subscription_id: str) -> SubscriptionRow:
        with self.database.read() as session:
            row = get_document(session, SubscriptionRow, subscription_id, visibility_of(principal))
        if row is None or row.api != api:
            raise not_found("subscription", subscription_id)
        return row

    def get_with_pending(self, principal: Principal, api: str, subscription_id: str) -> tuple[SubscriptionRow, int]:
        """The subscription and its pending count read by one statement, so that the delivery
        status never mixes two moments (e.g. nothing pending but the failures not yet reset)."""
        pending = _PENDING
        visibility = visibility_of(principal)
        with self.database.read() as session:
            found = session.execute(
                select(SubscriptionRow, pending).where(
                    SubscriptionRow.id == subscription_id, SubscriptionRow.api == api, visibility.clause(SubscriptionRow)
                )
            ).first()
        if found is None:
            raise not_found("subscription", subscription_id)
        return found[0], int(found[1] or 0)

    def list(
        self, principal: Principal, api: str, page: PageRequest, where: ColumnElement[bool] | None
    ) -> Page[SubscriptionRow]:
        condition = SubscriptionRow.api == api
        if where is not None:
            condition = condition & where
        with self.database.read() as session:
            return list_documents(session, SubscriptionRow, visibility_of(principal), page, condition)

    def delete(self, principal: Principal, api: str, subscription_id: str) -> None:
        with self.database.write() as session:
            row = get_document(session, SubscriptionRow, subscription_id, visibility_of(principal), for_update=True)
            if row is None or row.api != api:
                raise not_found("subscription", subscription_id)
            # Its notifications are log entries shared with the other subscriptions: pruning
            # removes them once nobody needs them.
            session.delete(row)
        self._changed()

    def pending_counts(self, subscription_ids: list[str]) -> dict[str, int]:
        if not subscription_ids:
            return {}
        with self.database.read() as session:
            rows = session.execute(
                select(SubscriptionRow.id, _PENDING).where(SubscriptionRow.id.in_(subscription_ids))
            )
            return {subscription_id: int(count) for subscription_id, count in rows if count}

    def _changed(self) -> None:
        for hook in self.changed:
            hook()


def representation(row: SubscriptionRow, pending: int, base_url: str, prefix: str) -> dict[str, Any]:
    document = dict(row.body)
    if document.get("filter") is None:
        document.pop("filter", None)
    document["_links"] = {"self": {"href": f"{base_url}{prefix}/subscriptions/{row.id}"}}
    document["deliveryStatus"] = DeliveryStatus(
        state=row.state,
        pendingCount=pending,
        lastSuccessAt=row.last_success_at,
        lastError=row.last_error,
        lastErrorAt=row.last_error_at,
        consecutiveFailures=row.consecutive_failures,
        failingSince=row.failing_since,
    ).model_dump(mode="json", exclude_none=True)
    return document
