"""Compute flavour management (IFA 005 Create / Query / Delete Compute Flavour)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy import ColumnElement, bindparam, delete, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from vimkit.api.problems import ApiError, Cause, not_found
from vimkit.auth.principal import Principal
from vimkit.notify.outbox import information_change
from vimkit.models.compute import ComputeFlavourCreate, VirtualComputeFlavour
from vimkit.store.db import Database
from vimkit.store.filter_sql import FilterSchema
from vimkit.store.group_commit import GroupCommit
from vimkit.store.models import FlavourRow
from vimkit.store.repository import (
    Page,
    PageRequest,
    check_if_match,
    list_documents,
    utcnow,
    visibility_of,
    read_document,
)

SYSTEM_GROUP = "system"

FLAVOUR_SCHEMA = FilterSchema.from_model(
    VirtualComputeFlavour,
    FlavourRow.body,
    columns={"flavourId": FlavourRow.id, "isPublic": FlavourRow.is_public},
)


@dataclass(frozen=True)
class SeedFlavour:
    flavour_id: str
    vcpus: int
    memory_mb: int
    disk_gb: int


DEFAULT_FLAVOURS = (
    SeedFlavour("m1.tiny", 1, 512, 1),
    SeedFlavour("m1.small", 1, 2048, 20),
    SeedFlavour("m1.medium", 2, 4096, 40),
    SeedFlavour("m1.large", 4, 8192, 80),
    SeedFlavour("m1.xlarge", 8, 16384, 160),
    SeedFlavour("c1.control-plane", 4, 16384, 100),
    SeedFlavour("w1.worker", 8, 32768, 200),
)


# Prebuilt Core statements: a flavour write is one row and one outbox row, for which the ORM's
# unit of work cost more than the rest of the transaction.
_FLAVOURS = FlavourRow.__table__
_EXISTS = select(_FLAVOURS.c.seq).where(_FLAVOURS.c.id == bindparam("b_id"))
_INSERT = insert(_FLAVOURS)
_CURRENT_LOCKED = select(_FLAVOURS.c.resource_group_id, _FLAVOURS.c.is_public, _FLAVOURS.c.created_at,
                         _FLAVOURS.c.updated_at, _FLAVOURS.c.version, _FLAVOURS.c.body,
                         ).where(_FLAVOURS.c.id == bindparam("b_id")).with_for_update()
_DELETE = delete(_FLAVOURS).where(_FLAVOURS.c.id == bindparam("b_id"))


def _in_use(flavour_id: str) -> ApiError:
    return ApiError(409, f"flavourId '{flavour_id}' is already in use", invalid_params=[("flavourId", "already in use")])


def _document(flavour_id: str, data: ComputeFlavourCreate) -> dict:
    body = data.model_dump(mode="json", exclude={"flavourId"}, exclude_none=True)
    body["flavourId"] = flavour_id
    return body


def _announce(session: Session, row: FlavourRow, change_type: str, vim_id: str) -> None:
    """A flavour added or removed changes the compute resource types a consumer can use."""
    information_change(
        session,
        api="compute-info",
        resource_type_id=row.id,
        change_type=change_type,
        vim_id=vim_id,
        changed_resource_data={"flavour": row.body} if change_type != "REMOVAL" else None,
        audience=None if row.is_public else [row.resource_group_id],
    )


class FlavourService:
    def __init__(self, database: Database, vim_id: str = "vimkit") -> None:
        self.database = database
        self.vim_id = vim_id
        self.commits = GroupCommit(database)

    async def create(self, principal: Principal, data: ComputeFlavourCreate) -> FlavourRow:
        flavour_id = data.flavourId or str(uuid.uuid4())
        now = utcnow()
        values = dict(id=flavour_id, resource_group_id=principal.resource_group_id, is_public=data.isPublic,
                      created_at=now, updated_at=now, version=1, body=_document(flavour_id, data))
        try:
            # Concurrent creations share a transaction (each in its own savepoint).
            return await self.commits.run(lambda session: self._insert(session, values))
        except IntegrityError as exc:  # another replica inserted the same id meanwhile
            raise _in_use(flavour_id) from exc

    def _insert(self, session: Session, values: dict) -> FlavourRow:
        connection = session.connection()
        if connection.execute(_EXISTS, {"b_id": values["id"]}).first() is not None:
            raise _in_use(values["id"])
        connection.execute(_INSERT, [values])
        row = FlavourRow(**values)
        _announce(session, row, "ADDITION", self.vim_id)
        return row

    def get(self, principal: Principal, flavour_id: str) -> FlavourRow:
        row = read_document(self.database, FlavourRow, flavour_id, visibility_of(principal))
        if row is None:
            raise not_found("flavour", flavour_id)
        return row

    def list(
        self, principal: Principal, page: PageRequest, where: ColumnElement[bool] | None
    ) -> Page[FlavourRow]:
        with self.database.read() as session:
            return list_documents(session, FlavourRow, visibility_of(principal), page, where)

    async def delete(self, principal: Principal, flavour_id: str, if_match: str | None) -> FlavourRow:
        return await self.commits.run(lambda session: self._delete(session, principal, flavour_id, if_match))

    def _delete(self, session: Session, principal: Principal, flavour_id: str, if_match: str | None) -> FlavourRow:
        connection = session.connection()
        found = connection.execute(_CURRENT_LOCKED, {"b_id": flavour_id}).first()
        if found is None or not visibility_of(principal).sees(found.resource_group_id, found.is_public):
            raise not_found("flavour", flavour_id)
        row = FlavourRow(id=flavour_id, **found._asdict())
        if not principal.is_admin and row.resource_group_id != principal.resource_group_id:
            raise ApiError(
                403,
                f"flavour '{flavour_id}' is public but belongs to another resource group",
                cause=Cause.FORBIDDEN,
            )
        check_if_match(if_match, row)
        connection.execute(_DELETE, {"b_id": flavour_id})
        _announce(session, row, "REMOVAL", self.vim_id)
        return row

    def seed_defaults(self) -> int:
        """Create the default public flavours on a database that has no flavour yet."""
        with self.database.write() as session:
            if session.scalar(select(FlavourRow.seq).limit(1)) is not None:
                return 0
            now = utcnow()
            for seed in DEFAULT_FLAVOURS:
                data = ComputeFlavourCreate(
                    flavourId=seed.flavour_id,
                    virtualCpu={"numVirtualCpu": seed.vcpus},
                    virtualMemory={"virtualMemSize": seed.memory_mb},
                    storageAttributes=[{"typeOfStorage": "root", "sizeOfStorage": seed.disk_gb}],
                )
                session.add(
                    FlavourRow(
                        id=seed.flavour_id,
                        resource_group_id=SYSTEM_GROUP,
                        is_public=True,
                        created_at=now,
                        updated_at=now,
                        version=1,
                        body=_document(seed.flavour_id, data),
                    )
                )
        return len(DEFAULT_FLAVOURS)
