"""Stored ``Idempotency-Key`` records: claim a key, finish it with the response, or release it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from vimkit.api.problems import ApiError, Cause
from vimkit.store.db import Database
from vimkit.store.models import IdempotencyRecord
from vimkit.store.repository import utcnow

# A claim older than this is from a process that died mid-request: the next retry takes it over.
STALE_CLAIM = timedelta(minutes=10)


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    headers: list[list[str]]
    body: bytes


class IdempotencyStore:
    def __init__(self, database: Database, ttl: timedelta) -> None:
        self.database = database
        self.ttl = ttl
        self._claims_since_purge = 0

    def claim(self, consumer_id: str, key: str, request_hash: str) -> StoredResponse | None:
        """Claim ``key`` for this request; return the stored response when it is a replay."""
        self._maybe_purge()
        now = utcnow()
        for _attempt in range(2):
            with self.database.write() as session:
                record = session.scalar(
                    select(IdempotencyRecord)
                    .where(IdempotencyRecord.consumer_id == consumer_id, IdempotencyRecord.key == key)
                    .with_for_update()
                )
                if record is None:
                    session.add(
                        IdempotencyRecord(
                            consumer_id=consumer_id,
                            key=key,
                            request_hash=request_hash,
                            in_flight=True,
                            created_at=now,
                        )
                    )
                    try:
                        session.flush()
                    except IntegrityError:
                        session.rollback()
                        continue  # a concurrent claim won the insert: look again
                    return None
                if record.request_hash != request_hash:
                    raise ApiError(
                        422,
                        "this Idempotency-Key was used with a different request",
                        cause=Cause.INVALID_INPUT,
                        invalid_params=[("Idempotency-Key", "reused with a different request")],
                    )
                if record.in_flight:
                    created = record.created_at
                    if created.tzinfo is None:
                        created = created.replace(tzinfo=now.tzinfo)
                    if now - created < STALE_CLAIM:
                        raise ApiError(
                            409,
                            "a request with this Idempotency-Key is still being processed",
                            cause=Cause.CONFLICT,
                            retryable=True,
                            headers={"Retry-After": "1"},
                        )
                    record.created_at = now
                    return None
                return StoredResponse(
                    record.status_code or 500, record.headers or [], record.response_body or b""
                )
        raise ApiError(409, "concurrent requests with this Idempotency-Key", retryable=True)

    def finish(self, consumer_id: str, key: str, response: StoredResponse) -> None:
        with self.database.write() as session:
            record = session.scalar(
                select(IdempotencyRecord).where(
                    IdempotencyRecord.consumer_id == consumer_id, IdempotencyRecord.key == key
                )
            )
            if record is not None:
                record.in_flight = False
                record.status_code = response.status_code
                record.headers = response.headers
                record.response_body = response.body

    def release(self, consumer_id: str, key: str) -> None:
        """Forget a claim whose request failed unexpectedly, so that a retry runs it again."""
        with self.database.write() as session:
            session.execute(
                delete(IdempotencyRecord).where(
                    IdempotencyRecord.consumer_id == consumer_id,
                    IdempotencyRecord.key == key,
                    IdempotencyRecord.in_flight.is_(True),
                )
            )

    def _maybe_purge(self) -> None:
        self._claims_since_purge += 1
        if self._claims_since_purge < 500:
            return
        self._claims_since_purge = 0
        self.purge()

    def purge(self) -> int:
        cutoff = utcnow() - self.ttl
        with self.database.write() as session:
            result = session.execute(
                delete(IdempotencyRecord).where(IdempotencyRecord.created_at < cutoff)
            )
        return int(result.rowcount or 0)
