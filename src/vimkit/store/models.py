"""SQLAlchemy 2 table models.

Resources are stored as a JSON document (``body``, the API representation) plus the scalar
columns the store needs to index, isolate tenants and page: ``seq`` gives a stable keyset order,
``resource_group_id`` is the tenant, ``version`` drives the ETag.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    UniqueConstraint,
)
from sqlalchemy.types import TypeDecorator
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

JsonDocument = JSON().with_variant(JSONB(), "postgresql")
SeqInteger = BigInteger().with_variant(Integer(), "sqlite")


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite returns naive values otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class DocumentMixin:
    """Columns every tenant-owned resource document has."""

    seq: Mapped[int] = mapped_column(SeqInteger, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    resource_group_id: Mapped[str] = mapped_column(String(64), index=True, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    body: Mapped[dict[str, Any]] = mapped_column(JsonDocument, nullable=False)


class FlavourRow(DocumentMixin, Base):
    __tablename__ = "flavours"

    is_public: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True, index=True)


class IdempotencyRecord(Base):
    """A POST seen with an ``Idempotency-Key``: in flight, or finished with its stored response."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("consumer_id", "key", name="uq_idempotency_consumer_key"),)

    seq: Mapped[int] = mapped_column(SeqInteger, primary_key=True, autoincrement=True)
    consumer_id: Mapped[str] = mapped_column(String(64), nullable=False)
    key: Mapped[str] = mapped_column(String(255), nullable=False)
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    in_flight: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    status_code: Mapped[int | None] = mapped_column(Integer)
    headers: Mapped[list[list[str]] | None] = mapped_column(JsonDocument)
    response_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False, index=True)


class ConsumerRow(Base):
    """An OAuth client of the VIM: a CCM (or an operator) in one resource group."""

    __tablename__ = "consumers"

    seq: Mapped[int] = mapped_column(SeqInteger, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    client_id: Mapped[str] = mapped_column(String(128), unique=True, nullable=False)
    consumer_name: Mapped[str] = mapped_column(String(255), nullable=False)
    resource_group_id: Mapped[str] = mapped_column(String(64), index=True, nullable=False)
    scopes: Mapped[list[str]] = mapped_column(JsonDocument, nullable=False)
    secret_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    # Bumped when the secret rotates: tokens carry it, so older tokens stop working at once.
    generation: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)


class AuditRow(Base):
    """One mutating call (or CLI action): who, what, when, outcome. Never bodies or secrets."""

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(SeqInteger, primary_key=True, autoincrement=True)
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False, index=True)
    consumer_id: Mapped[str | None] = mapped_column(String(64), index=True)
    resource_group_id: Mapped[str | None] = mapped_column(String(64))
    client_ip: Mapped[str | None] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(16), nullable=False)
    path: Mapped[str] = mapped_column(String(512), nullable=False)
    status: Mapped[int] = mapped_column(Integer, nullable=False)
    request_id: Mapped[str | None] = mapped_column(String(128))
    duration_us: Mapped[int | None] = mapped_column(Integer)


class SubscriptionRow(DocumentMixin, Base):
    """A consumer's subscription on one API; ``body`` is its public representation."""

    __tablename__ = "subscriptions"

    api: Mapped[str] = mapped_column(String(32), nullable=False, index=True)
    consumer_id: Mapped[str] = mapped_column(String(64), nullable=False)
    # An admin's subscription receives the notifications of every resource group.
    all_groups: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    callback_uri: Mapped[str] = mapped_column(String(2048), nullable=False)
    # The authentication block with its secrets encrypted (see vimkit.notify.secrets).
    authentication: Mapped[str | None] = mapped_column(String(8192))
    state: Mapped[str] = mapped_column(String(16), nullable=False, default="ACTIVE")
    next_sequence: Mapped[int] = mapped_column(BigInteger, nullable=False, default=1)
    # Delivery progress without a row per delivery: the last acknowledged sequence and the log
    # position of that notification. Position None: nothing pending since the subscription
    # was last matched (fan-out anchors it when it next matches).
    acked_sequence: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0)
    acked_position: Mapped[int | None] = mapped_column(BigInteger)
    last_success_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str | None] = mapped_column(String(1024))
    last_error_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    failing_since: Mapped[datetime | None] = mapped_column(UtcDateTime)
    consecutive_failures: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    # A replica delivering for this subscription holds it until lease_until.
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)


class OutboxRow(Base):
    """A notification written in the same transaction as the change that caused it, and then
    the shared notification log: fan-out gives it a ``position`` (the order every subscription
    sees it in) instead of copying it once per subscriber. A subscription's ``sequence`` numbers
    are recomputed from its acknowledged anchor by matching its filter along the log."""

    __tablename__ = "notification_outbox"

    seq: Mapped[int] = mapped_column(SeqInteger, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    api: Mapped[str] = mapped_column(String(32), nullable=False)
    notification_type: Mapped[str] = mapped_column(String(64), nullable=False)
    # Resource groups that may see it; None means every group (e.g. a public flavour).
    audience: Mapped[list[str] | None] = mapped_column(JsonDocument)
    facets: Mapped[dict[str, Any]] = mapped_column(JsonDocument, nullable=False)
    payload: Mapped[dict[str, Any]] = mapped_column(JsonDocument, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    fanned_out: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False, index=True)
    position: Mapped[int | None] = mapped_column(BigInteger, index=True, unique=True)
    # Deliveries pending when migration 0015 replaced per-delivery rows: meant for one
    # subscription only, with the body it was going to receive.
    subscription_id: Mapped[str | None] = mapped_column(String(64))
    body: Mapped[bytes | None] = mapped_column(LargeBinary)


class HostStateRow(Base):
    """Operator changes to an inventory host (the inventory file itself is not rewritten)."""

    __tablename__ = "host_states"

    host_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    admin_state: Mapped[str] = mapped_column(String(16), nullable=False)
    version: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)


class PlacementClaimRow(Base):
    """A placement claim (compute on a host, volume in a pool), persisted with its resource.

    Written in the same transaction as the resource, so that a restart rebuilds exactly the
    capacity that is in use (``PlacementState.load``).
    """

    __tablename__ = "placement_claims"

    resource_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False, index=True)  # "compute" | "storage"
    claim: Mapped[dict[str, Any]] = mapped_column(JsonDocument, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)


class PlacementJournalRow(Base):
    """Every change of a placement claim, in commit order (PostgreSQL only).

    Each replica keeps placement in memory; before it decides, it replays the changes the other
    replicas journalled since it last looked. Journal writers hold one cluster-wide advisory
    lock until they commit, so ``seq`` order is commit order and no change is skipped.
    ``claim`` None is a release.
    """

    __tablename__ = "placement_journal"

    seq: Mapped[int] = mapped_column(SeqInteger, primary_key=True, autoincrement=True)
    resource_id: Mapped[str] = mapped_column(String(64), nullable=False)
    kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    claim: Mapped[dict[str, Any] | None] = mapped_column(JsonDocument, nullable=True)
    replica_id: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False, index=True)


class FaultRow(Base):
    """A fault injected through the admin API (simulated infrastructure only)."""

    __tablename__ = "injected_faults"

    seq: Mapped[int] = mapped_column(SeqInteger, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    kind: Mapped[str] = mapped_column(String(32), nullable=False)
    target_id: Mapped[str] = mapped_column(String(64), nullable=False)
    params: Mapped[dict[str, Any]] = mapped_column(JsonDocument, nullable=False)
    driver_fault_id: Mapped[str] = mapped_column(String(64), nullable=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, nullable=False)
    repaired_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
