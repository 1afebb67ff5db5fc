"""Placement shared by several replicas on one PostgreSQL database.

Each replica decides placement in memory (fast, and atomic within the process). Alone, that would
let two replicas both place into the last free capacity. So on PostgreSQL every decision runs in
a transaction that first takes one cluster-wide advisory lock and replays the placement changes
the other replicas journalled since this replica last looked (``placement_journal``); the claim
and its journal entry are committed before the lock is released. Journal writers all hold the
lock until they commit, so journal order is commit order and a reader never skips an entry.

On SQLite (one replica per database file) all of this is a no-op.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from vimkit.placement import Claim, PlacementState, StorageClaim, StoragePlacementState
from vimkit.store.db import Database
from vimkit.store.models import PlacementJournalRow
from vimkit.store.repository import utcnow

# An arbitrary constant naming the placement lock among the database's advisory locks.
PLACEMENT_LOCK = 0x76696D6B6974  # "vimkit"


class PlacementSync:
    def __init__(self, database: Database, placement: PlacementState, storage: StoragePlacementState) -> None:
        self.database = database
        self.placement = placement
        self.storage = storage
        self.replica_id = "replica"
        self.enabled = database.dialect == "postgresql"
        self._last_seq = 0
        self._replay_lock = threading.Lock()

    def start_from(self, session: Session) -> None:
        """At start the claims table is the state; the journal matters from its current end on."""
        if self.enabled:
            self._last_seq = int(session.scalar(select(func.coalesce(func.max(PlacementJournalRow.seq), 0))) or 0)

    def guard(self, session: Session) -> None:
        """Take the placement lock for the rest of ``session``'s transaction and catch up."""
        if not self.enabled:
            return
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PLACEMENT_LOCK})
        with self._replay_lock:
            rows = session.execute(
                select(PlacementJournalRow.seq, PlacementJournalRow.resource_id, PlacementJournalRow.kind,
                       PlacementJournalRow.claim, PlacementJournalRow.replica_id)
                .where(PlacementJournalRow.seq > self._last_seq).order_by(PlacementJournalRow.seq)
            ).all()
            for seq, resource_id, kind, claim, replica in rows:
                if replica != self.replica_id:
                    self._apply(resource_id, kind, claim)
                self._last_seq = seq

    def _apply(self, resource_id: str, kind: str | None, claim: dict[str, Any] | None) -> None:
        if kind in (None, "compute"):
            self.placement.release(resource_id)
        if kind in (None, "storage"):
            self.storage.release(resource_id)
        if claim is None:
            return
        if kind == "compute":
            self.placement.load([Claim.from_dict(claim)])
        elif kind == "storage":
            self.storage.load([StorageClaim.from_dict(claim)])

    def journal(self, session: Session, kind: str | None, resource_id: str, claim: dict[str, Any] | None) -> None:
        if not self.enabled:
            return
        self.guard(session)
        session.add(PlacementJournalRow(resource_id=resource_id, kind=kind, claim=claim, replica_id=self.replica_id,
                                        created_at=utcnow()))
