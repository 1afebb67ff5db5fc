"""Tenant-aware access to resource documents: every query takes a :class:`Visibility`.

There is no way to read or list a document without saying on whose behalf, so a handler cannot
forget tenant isolation: another group's resource simply is not found.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import orjson
from sqlalchemy import ColumnElement, Connection, Select, Text, bindparam, cast, func, or_, select, true
from sqlalchemy.orm import Session

from vimkit.auth.principal import Principal
from vimkit.api.problems import ApiError, Cause, invalid
from vimkit.store.models import DocumentMixin, FlavourRow

Row = TypeVar("Row", bound=DocumentMixin)


@dataclass(frozen=True, slots=True)
class Visibility:
    """On whose behalf a query runs: one resource group, or every group for an admin."""

    resource_group_id: str
    all_groups: bool = False

    def clause(self, model: type[DocumentMixin]) -> ColumnElement[bool]:
        if self.all_groups:
            return true()
        own = model.resource_group_id == self.resource_group_id
        shared = shared_column(model)
        return own if shared is None else or_(own, getattr(model, shared).is_(True))

    def sees(self, resource_group_id: str, shared: bool = False) -> bool:
        """:meth:`clause` for a row already read: its group, and whether it is public/shared."""
        return self.all_groups or shared or resource_group_id == self.resource_group_id


def shared_column(model: type[DocumentMixin]) -> str | None:
    """The column that makes a row visible to every group: public flavours, shared networks and
    images; None for the models only their own group sees."""
    if model is FlavourRow:
        return "is_public"
    return "is_shared" if hasattr(model, "is_shared") else None

if TYPE_CHECKING:
    from vimkit.store.db import Database


def visibility_of(principal: Principal) -> Visibility:
    """What a caller may see: its own resource group, or every group for an admin."""
    return Visibility(principal.resource_group_id, all_groups=principal.is_admin)


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; vimkit only ever stores UTC, so naive means UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def etag_of(row: DocumentMixin) -> str:
    # created_at tells apart a resource deleted and re-created under the same id.
    stamp = f"{row.id}:{row.version}:{as_utc(row.created_at).timestamp():.6f}"
    digest = hashlib.sha256(stamp.encode())
    return f'"{digest.hexdigest()[:24]}"'


_POINT_QUERIES: dict[type, Any] = {}


def detached(model: type[Row], values: dict[str, Any]) -> Row:
    """An instance of ``model`` holding ``values`` and belonging to no session, built as
    SQLAlchemy's loader builds one (state set directly, no attribute events): calling the
    constructor cost several times more, once or twice per allocation."""
    instance = model.__mapper__.class_manager.new_instance()  # type: ignore[attr-defined]
    instance.__dict__.update(values)
    return instance


def connection_of(session: Session) -> Connection:
    """``session.connection()``, looked up once per session: each call walks the session's
    transaction state, and an allocation's statements asked for it a dozen times."""
    connection = session.info.get(_CONNECTION_KEY)
    if connection is None or connection.closed:
        connection = session.info[_CONNECTION_KEY] = session.connection()
    return connection


_CONNECTION_KEY = "vimkit_connection"


def read_document(database: Database, model: type[Row], resource_id: str, visibility: Visibility) -> Row | None:
    """:func:`get_document` for a read-only answer: one SELECT on a point connection, and a
    detached row built from it (no session, no identity map)."""
    query = _POINT_QUERIES.get(model)
    if query is None:
        table = model.__table__  # type: ignore[attr-defined]
        query = _POINT_QUERIES[model] = select(table).where(table.c.id == bindparam("resource_id"))
    with database.point_connection() as connection:
        found = connection.execute(query, {"resource_id": resource_id}).first()
    if found is None:
        return None
    values = found._asdict()
    shared = shared_column(model)
    if not visibility.sees(values["resource_group_id"], bool(shared and values[shared])):
        return None
    return detached(model, values)


def get_document(
    session: Session, model: type[Row], resource_id: str, visibility: Visibility, *, for_update: bool = False
) -> Row | None:
    query = select(model).where(model.id == resource_id, visibility.clause(model))
    if for_update:
        query = query.with_for_update()
    return session.scalar(query)


@dataclass(frozen=True, slots=True)
class PageRequest:
    size: int
    marker: str | None = None
    sort: Sequence[ColumnElement[Any]] = ()


@dataclass(frozen=True, slots=True)
class Page(Generic[Row]):
    items: list[Row]
    next_marker: str | None


def _encode_marker(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).decode().rstrip("=")


def _decode_marker(marker: str) -> dict[str, Any]:
    try:
        padded = marker + "=" * (-len(marker) % 4)
        data = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
    except (binascii.Error, ValueError, orjson.JSONDecodeError) as exc:
        raise invalid("nextpage_opaque_marker", "not a marker this server issued") from exc
    if not isinstance(data, dict) or not (
        isinstance(data.get("after"), int) or isinstance(data.get("offset"), int)
    ):
        raise invalid("nextpage_opaque_marker", "not a marker this server issued")
    return data


def list_documents(
    session: Session,
    model: type[Row],
    visibility: Visibility,
    page: PageRequest,
    where: ColumnElement[bool] | None = None,
    *,
    plain: bool = False,
    body_text: bool = False,
) -> Page[Row]:
    """One page of documents, filtered and ordered by the database.

    The default order is insertion order (``seq``) with keyset paging, which stays correct while
    documents are added or removed between pages. With an explicit sort the marker carries an
    offset into that order.

    ``plain``: the items are read-only rows of the table's columns (``row.body``, ``row.id`` …)
    instead of ORM objects — for a page that is only rendered, where building and tracking
    ORM objects cost as much as the query. ``body_text``: plain rows whose ``body`` is the
    document's JSON text as stored, for a page sent as it is (decoding and re-encoding each
    document cost most of a page of 100).
    """
    if body_text:  # plain rows whose ``body`` is the stored JSON text, not decoded
        table = model.__table__  # type: ignore[attr-defined]
        columns = [column for column in table.c if column.key != "body"]
        query: Select[Any] = select(*columns, cast(table.c.body, Text).label("body"))
    else:
        query = select(model.__table__ if plain else model)
    query = query.where(visibility.clause(model))
    if where is not None:
        query = query.where(where)
    data = _decode_marker(page.marker) if page.marker else {}
    if page.sort:
        offset = int(data.get("offset", 0))
        if offset < 0:
            raise invalid("nextpage_opaque_marker", "not a marker this server issued")
        query = query.order_by(*page.sort, model.seq).offset(offset).limit(page.size + 1)
        rows = _fetch(session, query, plain or body_text)
        more = len(rows) > page.size
        next_marker = _encode_marker({"offset": offset + page.size}) if more else None
    else:
        after = int(data.get("after", 0))
        query = query.where(model.seq > after).order_by(model.seq).limit(page.size + 1)
        rows = _fetch(session, query, plain or body_text)
        more = len(rows) > page.size
        next_marker = _encode_marker({"after": rows[page.size - 1].seq}) if more else None
    return Page(rows[: page.size], next_marker)


def _fetch(session: Session, query: Select[Any], plain: bool) -> list[Any]:
    return list(session.connection().execute(query).all() if plain else session.scalars(query))


def count_documents(session: Session, model: type[Row], visibility: Visibility) -> int:
    return int(session.scalar(select(func.count()).select_from(model).where(visibility.clause(model))) or 0)


def check_if_match(if_match: str | None, row: DocumentMixin) -> None:
    """RFC 9110 If-Match with strong comparison: absent or ``*`` passes, a stale ETag is 412."""
    if if_match is None or if_match.strip() == "*":
        return
    current = etag_of(row)
    candidates = [tag.strip() for tag in if_match.split(",")]
    if current not in candidates:
        raise ApiError(
            412,
            f"If-Match {if_match} does not match the current ETag {current}",
            cause=Cause.PRECONDITION_FAILED,
        )


def group_of(database: "Database", model: type[DocumentMixin], resource_id: str) -> str | None:
    """The resource group owning a document (for alarms raised by the infrastructure)."""
    with database.read() as session:
        return session.scalar(select(model.resource_group_id).where(model.id == resource_id))
