"""Emit a notification inside the transaction of the change that causes it.

Domain services call :func:`emit` with the session they are writing with. The outbox row
commits or rolls back with the change, so a crash can neither lose a notification nor announce
a change that never happened. After the commit the dispatcher is woken (see ``Database.write``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from vimkit.notify import filters
from vimkit.store.db import NOTIFICATIONS_EMITTED_KEY
from vimkit.store.models import OutboxRow
from vimkit.store.prepared import Prepared
from vimkit.store.repository import connection_of, utcnow

_COLLECT_KEY = "vimkit_outbox_collect"  # see batched()
_INSERT = Prepared(insert(OutboxRow.__table__))


@contextmanager
def batched(session: Session) -> Iterator[None]:
    """The notifications emitted on ``session`` inside the block go in with one INSERT at its
    end, for a transaction that writes many changes at once."""
    rows: list[dict[str, Any]] = []
    session.info[_COLLECT_KEY] = rows
    try:
        yield
    finally:
        del session.info[_COLLECT_KEY]
    if rows:
        connection_of(session).execute(_INSERT.statement, rows)
        session.info[NOTIFICATIONS_EMITTED_KEY] = True


def emit(
    session: Session,
    *,
    api: str,
    notification_type: str,
    payload: dict[str, Any],
    audience: list[str] | None,
    resource_id: str | None = None,
    change_type: str | None = None,
    metadata: dict[str, str] | None = None,
    **facets: Any,
) -> None:
    """Add one notification to the outbox of ``session``'s transaction.

    ``audience`` lists the resource groups allowed to receive it (None: every group). The
    facets (resource id, change type, metadata, severity, …) are what subscription filters match.
    """
    if notification_type not in filters.NOTIFICATION_TYPES[api]:
        raise ValueError(f"{notification_type} is not a notification of the {api} API")
    values = {
        "id": str(uuid.uuid4()),
        "api": api,
        "notification_type": notification_type,
        "audience": audience,
        "facets": {
            "notificationType": notification_type,
            "resourceId": resource_id,
            "changeType": change_type,
            "metadata": metadata or {},
            **facets,
        },
        "payload": payload,
        "created_at": utcnow(),
        "fanned_out": False,
    }
    # An INSERT now rather than an ORM object flushed later: cheaper (a flush was a large part of
    # a small change's transaction), and the outbox order is the order of the emit calls.
    collected = session.info.get(_COLLECT_KEY)
    if collected is not None:
        collected.append(values)
    else:
        _INSERT.execute(connection_of(session), values)
    session.info[NOTIFICATIONS_EMITTED_KEY] = True


def resource_change(
    session: Session,
    *,
    api: str,
    resource_type: str,
    resource_id: str,
    change_type: str,
    resource_group_id: str,
    vim_id: str,
    changed_resource_data: dict[str, Any] | None,
    metadata: dict[str, str] | None = None,
    audience: list[str] | None = None,
) -> None:
    """A VirtualisedResourceChangeNotification (compute, network, storage)."""
    payload = {
        "changeId": str(uuid.uuid4()),
        "virtualisedResourceId": resource_id,
        "vimId": vim_id,
        "resourceType": resource_type,
        "changeType": change_type,
        "changedResourceData": changed_resource_data,
    }
    emit(
        session,
        api=api,
        notification_type=filters.RESOURCE_CHANGE,
        payload=payload,
        audience=audience if audience is not None else [resource_group_id],
        resource_id=resource_id,
        change_type=change_type,
        metadata=metadata,
    )


def information_change(
    session: Session,
    *,
    api: str,
    resource_type_id: str,
    change_type: str,
    vim_id: str,
    changed_resource_data: dict[str, Any] | None,
    audience: list[str] | None,
) -> None:
    """An InformationChangeNotification (compute-info, network-info, storage-info)."""
    payload = {
        "changeId": str(uuid.uuid4()),
        "resourceTypeId": resource_type_id,
        "vimId": vim_id,
        "changeType": change_type,
        "changedResourceData": changed_resource_data,
    }
    emit(
        session,
        api=api,
        notification_type=filters.INFORMATION_CHANGE,
        payload=payload,
        audience=audience,
        resource_id=resource_type_id,
        change_type=change_type,
    )
