"""Consumers (OAuth clients): creation, secrets, revocation and the bootstrap admin."""

from __future__ import annotations

import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select

from vimkit.api.problems import ApiError, Cause, invalid, not_found
from vimkit.auth.scopes import ADMIN_SCOPE, ALL_SCOPES
from vimkit.store.db import Database
from vimkit.store.models import ConsumerRow

# OWASP's argon2id baseline: slow enough to make a stolen hash expensive, fast enough for logins.
_HASHER = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)
# A hash of a random secret: verifying unknown client ids costs the same as known ones.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))


@dataclass(frozen=True)
class NewConsumer:
    row: ConsumerRow
    client_secret: str


def new_secret() -> str:
    return secrets.token_urlsafe(32)


_CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9._~@+-]{1,128}$")
_GROUP_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


def _check_identity(consumer_name: str, resource_group_id: str | None, client_id: str | None) -> None:
    if not 1 <= len(consumer_name) <= 255:
        raise invalid("consumerName", "must be 1 to 255 characters")
    if resource_group_id is not None and not _GROUP_RE.match(resource_group_id):
        raise invalid("resourceGroupId", "must be 1 to 64 characters of A-Z a-z 0-9 . _ : -")
    if client_id is not None and not _CLIENT_ID_RE.match(client_id):
        raise invalid("clientId", "must be 1 to 128 characters of A-Z a-z 0-9 . _ ~ @ + -")


def _check_scopes(scopes: list[str]) -> list[str]:
    unknown = [scope for scope in scopes if scope not in ALL_SCOPES]
    if unknown:
        raise invalid("scopes", f"unknown scope '{unknown[0]}'")
    if not scopes:
        raise invalid("scopes", "at least one scope is required")
    return sorted(set(scopes))


class ConsumerService:
    """Owns the consumers table and a short-lived cache used to revoke tokens."""

    def __init__(self, database: Database, revocation_ttl: float = 1.0) -> None:
        self.database = database
        self.revocation_ttl = revocation_ttl
        self._generations: dict[str, tuple[int | None, float]] = {}
        self._lock = threading.Lock()

    def create(
        self,
        consumer_name: str,
        scopes: list[str],
        resource_group_id: str | None = None,
        client_id: str | None = None,
        client_secret: str | None = None,
    ) -> NewConsumer:
        scopes = _check_scopes(scopes)
        _check_identity(consumer_name, resource_group_id, client_id)
        secret = client_secret or new_secret()
        row = ConsumerRow(
            id=str(uuid.uuid4()),
            client_id=client_id or f"vk-{secrets.token_hex(8)}",
            consumer_name=consumer_name,
            resource_group_id=resource_group_id or f"rg-{uuid.uuid4().hex[:12]}",
            scopes=scopes,
            secret_hash=_HASHER.hash(secret),
            generation=1,
            created_at=datetime.now(UTC),
            version=1,
        )
        with self.database.write() as session:
            taken = session.scalar(select(ConsumerRow.id).where(ConsumerRow.client_id == row.client_id))
            if taken:
                raise ApiError(409, f"client id '{row.client_id}' is already in use")
            session.add(row)
        return NewConsumer(row, secret)

    def authenticate(self, client_id: str, client_secret: str) -> ConsumerRow | None:
        with self.database.read() as session:
            row = session.scalar(select(ConsumerRow).where(ConsumerRow.client_id == client_id))
        try:
            _HASHER.verify(row.secret_hash if row else _DUMMY_HASH, client_secret)
        except (VerificationError, InvalidHashError):
            return None
        return row

    def find(self, reference: str) -> ConsumerRow:
        """A consumer by its consumer id or its client id (the CLI accepts either)."""
        with self.database.read() as session:
            row = session.scalar(
                select(ConsumerRow).where(
                    (ConsumerRow.id == reference) | (ConsumerRow.client_id == reference)
                )
            )
        if row is None:
            raise not_found("consumer", reference)
        return row

    def get(self, consumer_id: str) -> ConsumerRow:
        with self.database.read() as session:
            row = session.scalar(select(ConsumerRow).where(ConsumerRow.id == consumer_id))
        if row is None:
            raise not_found("consumer", consumer_id)
        return row

    def list(self) -> list[ConsumerRow]:
        with self.database.read() as session:
            return list(session.scalars(select(ConsumerRow).order_by(ConsumerRow.seq)))

    def delete(self, consumer_id: str, *, allow_last_admin: bool = False) -> ConsumerRow:
        """Delete a consumer; its tokens stop working at once (within ``revocation_ttl`` elsewhere).

        Deleting the last consumer with the ``admin`` scope would lock every operator out of the
        API, so it is refused (409) unless ``allow_last_admin`` (the local CLI may do it).
        """
        with self.database.write() as session:
            row = session.scalar(select(ConsumerRow).where(ConsumerRow.id == consumer_id).with_for_update())
            if row is None:
                raise not_found("consumer", consumer_id)
            if ADMIN_SCOPE in row.scopes and not allow_last_admin:
                others = session.scalars(select(ConsumerRow.scopes).where(ConsumerRow.id != consumer_id))
                if not any(ADMIN_SCOPE in scopes for scopes in others):
                    raise ApiError(
                        409,
                        f"consumer '{consumer_id}' is the last one with the admin scope",
                        cause=Cause.CONFLICT,
                    )
            session.delete(row)
        self._remember(consumer_id, None)
        return row

    def rotate_secret(self, consumer_id: str) -> NewConsumer:
        secret = new_secret()
        secret_hash = _HASHER.hash(secret)
        with self.database.write() as session:
            row = session.scalar(select(ConsumerRow).where(ConsumerRow.id == consumer_id).with_for_update())
            if row is None:
                raise not_found("consumer", consumer_id)
            row.secret_hash = secret_hash
            row.generation += 1
            row.version += 1
        self._remember(consumer_id, row.generation)
        return NewConsumer(row, secret)

    def _remember(self, consumer_id: str, generation: int | None) -> None:
        with self._lock:
            self._generations[consumer_id] = (generation, time.monotonic())

    def token_generation_is_current(self, consumer_id: str, generation: int) -> bool:
        """False once the consumer is deleted or its secret rotated after the token was issued.

        The answer is cached for ``revocation_ttl`` seconds so that verifying a token costs no
        database round trip; this replica's own deletes and rotations take effect at once.
        """
        cached = self._generations.get(consumer_id)
        now = time.monotonic()
        if cached is None or now - cached[1] > self.revocation_ttl:
            with self.database.read() as session:
                current = session.scalar(
                    select(ConsumerRow.generation).where(ConsumerRow.id == consumer_id)
                )
            self._remember(consumer_id, current)
            cached = (current, now)
        return cached[0] is not None and cached[0] == generation

    def bootstrap_admin(self, client_id: str | None, client_secret: str | None) -> NewConsumer | None:
        """Create the admin from the environment, or demo credentials on an empty database.

        Returns the consumer with its secret only when demo credentials were just created,
        so that the caller prints them exactly once.
        """
        if client_id and client_secret:
            with self.database.read() as session:
                existing = session.scalar(select(ConsumerRow).where(ConsumerRow.client_id == client_id))
            if existing is None:
                self.create("bootstrap-admin", list(ALL_SCOPES), None, client_id, client_secret)
            elif self.authenticate(client_id, client_secret) is None or ADMIN_SCOPE not in existing.scopes:
                with self.database.write() as session:
                    row = session.scalar(select(ConsumerRow).where(ConsumerRow.client_id == client_id))
                    assert row is not None
                    row.secret_hash = _HASHER.hash(client_secret)
                    row.scopes = list(ALL_SCOPES)
                    row.generation += 1
            return None
        with self.database.read() as session:
            if session.scalar(select(ConsumerRow.id).limit(1)) is not None:
                return None
        return self.create("demo-admin", list(ALL_SCOPES), None, "demo-admin", None)
