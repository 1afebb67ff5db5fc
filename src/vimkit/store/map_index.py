"""An index of a string map kept inside JSON documents (a compute's ``metadata``).

A filter ``(eq,metadata/cluster,c17)`` evaluated on the documents reads every document's map
(``json_each`` / ``jsonb_each_text``): seconds over 100,000 computes. A side table holding one row
per (document, key) with the value answers it from an index instead.

The side table has the owner's ``seq`` (deleted with the owner by ``ON DELETE CASCADE``), ``key``,
``value`` and ``value_digest``, and an index on ``(key, value_digest, owner seq)``. The index holds
a short digest rather than the value because PostgreSQL's btree refuses entries over about 2.7 kB
and a 1024-character value can take 4 kB in UTF-8. Every lookup compares the digest *and* the
full value, so two values sharing a digest never make a wrong match.

Only ``str`` keys and values are indexed: the filter semantics (``vimkit.api.filters``) never
let a string condition match any other JSON type, and an entry that is not indexed reads, to
``eq``/``in``, the same as an absent key — exactly what the reference evaluator says.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy import ColumnElement, Connection


def value_digest(value: str) -> str:
    """The first 8 bytes of the BLAKE2b digest of ``value`` in UTF-8, in hex (16 characters)."""
    return hashlib.blake2b(value.encode("utf-8", "surrogatepass")).digest()[:8].hex()


def indexed_entries(entries: Mapping[Any, Any] | None) -> dict[str, str]:
    """The entries of a map that the index holds: string keys with string values."""
    if not isinstance(entries, Mapping):
        return {}
    return {key: value for key, value in entries.items() if isinstance(key, str) and isinstance(value, str)}


class MapIndex:
    """A side table indexing one string map of an owner table's documents.

    ``side_seq`` is the side table's column holding the owner's ``seq`` (``owner_seq``);
    ``owner_id`` is the owner's public id column, by which writes name the document.
    """

    def __init__(self, side: sa.Table, side_seq: str, owner_seq: sa.Column[Any], owner_id: sa.Column[Any]) -> None:
        self.side = side
        self.side_seq = side.c[side_seq]
        self.owner_seq = owner_seq
        self.owner_id = owner_id
        self._seq_name = side_seq
        owner_seq_of_id = sa.select(owner_seq).where(owner_id == sa.bindparam("m_owner")).scalar_subquery()
        self._delete = sa.delete(side).where(self.side_seq == owner_seq_of_id,
                                             side.c.key.in_(sa.bindparam("m_keys", expanding=True)))
        entry = sa.select(owner_seq, sa.bindparam("m_key", type_=sa.String), sa.bindparam("m_value", type_=sa.String),
                          sa.bindparam("m_digest", type_=sa.String)).where(owner_id == sa.bindparam("m_owner"))
        self._insert = sa.insert(side).from_select([side_seq, "key", "value", "value_digest"], entry)

    value_digest = staticmethod(value_digest)

    def condition(self, key: str, values: Sequence[str], negated: bool = False) -> ColumnElement[bool]:
        """The owners whose map has ``key`` with one of ``values`` (a filter's ``eq`` or ``in``), or
        with ``negated`` the others (``neq``, ``nin``: an owner without the key is one of them).
        Never NULL.

        Positive: the owners whose entry for ``key`` has one of the values' digests, read from the
        index alone (no table row per entry), and whose entry has one of the values, checked
        by primary key for those owners only. The planner can drive the query from the digest
        list, so a selective value costs what it matches; checking the values inside that list
        instead cost a table row per entry and tripled the time of a value most owners have.
        Negated: per owner, one primary-key probe: a ``NOT IN`` list would hold every owner with
        the value (80 ms for 90,000 of 100,000 computes, against 2 ms for the probes of a page).
        """
        wanted = list(dict.fromkeys(values))
        side = self.side
        value_matches = side.c.value == wanted[0] if len(wanted) == 1 else side.c.value.in_(wanted)
        entry = sa.select(sa.literal(1)).where(self.side_seq == self.owner_seq, side.c.key == key, value_matches)
        if negated:
            return ~entry.exists()
        digests = list(dict.fromkeys(value_digest(value) for value in wanted))
        digest_matches = side.c.value_digest == digests[0] if len(digests) == 1 else side.c.value_digest.in_(digests)
        candidates = sa.select(self.side_seq).where(side.c.key == key, digest_matches)
        return sa.and_(self.owner_seq.in_(candidates), entry.exists())

    def replace(self, connection: Connection, owner_id: str, old: Mapping[str, Any] | None,
                new: Mapping[str, Any] | None) -> None:
        """Bring the owner's rows from ``old`` to ``new``: only the keys that changed are written,
        nothing at all when the maps are equal. Runs on ``connection``, in its transaction."""
        if old == new:
            return
        before, after = indexed_entries(old), indexed_entries(new)
        if before == after:
            return
        removed = [key for key, value in before.items() if after.get(key) != value]
        added = [(key, value) for key, value in after.items() if before.get(key) != value]
        if removed:
            connection.execute(self._delete, {"m_owner": owner_id, "m_keys": removed})
        if added:
            connection.execute(self._insert, [
                {"m_owner": owner_id, "m_key": key, "m_value": value, "m_digest": value_digest(value)}
                for key, value in added])

    def rows(self, owners: Iterable[tuple[int, Mapping[str, Any] | None]]) -> list[dict[str, Any]]:
        """Side-table rows for ``(owner seq, map)`` pairs, for a bulk ``INSERT`` (seeding)."""
        return [{self._seq_name: seq, "key": key, "value": value, "value_digest": value_digest(value)}
                for seq, entries in owners for key, value in indexed_entries(entries).items()]
