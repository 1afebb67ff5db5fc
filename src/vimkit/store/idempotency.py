"""Stored ``Idempotency-Key`` records: claim a key, finish it with the response, or release it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vimkit.api.problems import ApiError, Cause
from vimkit.store.db import Database
from vimkit.store.group_commit import GroupCommit
from vimkit.store.models import IdempotencyRecord
from vimkit.store.repository import utcnow

# A claim older than this is from a process that died mid-request: the next retry takes it over.
STALE_CLAIM = timedelta(minutes=10)


@dataclass(frozen=True)
class StoredResponse:
    status_code: int
    headers: list[list[str]]
    body: bytes


_KEYS = IdempotencyRecord.__table__
_MATCH = (_KEYS.c.consumer_id == bindparam("for_consumer")) & (_KEYS.c.key == bindparam("for_key"))
_FIND = select(_KEYS.c.request_hash, _KEYS.c.in_flight, _KEYS.c.created_at, _KEYS.c.status_code, _KEYS.c.headers,
               _KEYS.c.response_body).where(_MATCH)
_FIND_LOCKED = _FIND.with_for_update()
_FINISH = update(_KEYS).where(_MATCH).values(in_flight=False, status_code=bindparam("new_status"),
                                             headers=bindparam("new_headers"), response_body=bindparam("new_body"))


class IdempotencyStore:
    """Plain statements, and from the request path (``claim_soon``/``finish_soon``) through a
    group commit: an SDK sends every POST with a key, so these two writes come with every
    creation a CCM makes and should cost a share of a transaction, not one each."""

    def __init__(self, database: Database, ttl: timedelta) -> None:
        self.database = database
        self.ttl = ttl
        self._claims_since_purge = 0
        self.commits = GroupCommit(database)

    def claim(self, consumer_id: str, key: str, request_hash: str) -> StoredResponse | None:
        """Claim ``key`` for this request; return the stored response when it is a replay."""
        self._maybe_purge()
        with self.database.write() as session:
            return self.claim_in(session, consumer_id, key, request_hash)

    async def claim_soon(self, consumer_id: str, key: str, request_hash: str) -> StoredResponse | None:
        if self._purge_due():
            await asyncio.to_thread(self.purge)
        return await self.commits.run(lambda session: self.claim_in(session, consumer_id, key, request_hash))

    def claim_in(self, session: Session, consumer_id: str, key: str, request_hash: str) -> StoredResponse | None:
        now = utcnow()
        which = {"for_consumer": consumer_id, "for_key": key}
        find = _FIND if self.database.dialect == "sqlite" else _FIND_LOCKED
        record = session.execute(find, which).first()
        if record is None:
            try:
                with session.begin_nested():
                    session.execute(insert(_KEYS), [{"consumer_id": consumer_id, "key": key,
                                                     "request_hash": request_hash, "in_flight": True,
                                                     "created_at": now}])
                return None
            except IntegrityError:
                # A concurrent claim (another replica) won the insert: answer as to a retry of it.
                record = session.execute(find, which).first()
                if record is None:
                    raise ApiError(409, "concurrent requests with this Idempotency-Key", retryable=True) from None
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
            session.execute(update(_KEYS).where(_MATCH).values(created_at=bindparam("new_created_at")),
                            {**which, "new_created_at": now})
            return None
        return StoredResponse(record.status_code or 500, record.headers or [], record.response_body or b"")

    def finish(self, consumer_id: str, key: str, response: StoredResponse) -> None:
        with self.database.write() as session:
            self.finish_in(session, consumer_id, key, response)

    async def finish_soon(self, consumer_id: str, key: str, response: StoredResponse) -> None:
        await self.commits.run(lambda session: self.finish_in(session, consumer_id, key, response))

    @staticmethod
    def finish_in(session: Session, consumer_id: str, key: str, response: StoredResponse) -> None:
        session.execute(_FINISH, {"for_consumer": consumer_id, "for_key": key, "new_status": response.status_code,
                                  "new_headers": response.headers, "new_body": response.body})

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
        if self._purge_due():
            self.purge()

    def _purge_due(self) -> bool:
        self._claims_since_purge += 1
        if self._claims_since_purge < 500:
            return False
        self._claims_since_purge = 0
        return True

    def purge(self) -> int:
        cutoff = utcnow() - self.ttl
        with self.database.write() as session:
            result = session.execute(
                delete(IdempotencyRecord).where(IdempotencyRecord.created_at < cutoff)
            )
        return int(result.rowcount or 0)
