"""Network affinity / anti-affinity groups."""

from __future__ import annotations

import uuid

from vimkit.api.problems import not_found
from vimkit.auth.principal import Principal
from vimkit.domain.network_common import NetworkBase
from vimkit.models.network import NetworkAffinityGroupCreate
from vimkit.store.network_tables import NetworkAffinityGroupRow
from vimkit.store.repository import (
    check_if_match,
    get_document,
    utcnow,
    visibility_of,
)


class AffinityGroups(NetworkBase):
    def create_group(self, principal: Principal, data: NetworkAffinityGroupCreate) -> NetworkAffinityGroupRow:
        """Groups are recorded and queryable; see docs/network.md for what they do (not yet enforced)."""
        group_id = str(uuid.uuid4())
        body = data.model_dump(mode="json", exclude_none=True)
        body.update(groupId=group_id, metadata=data.metadata or {}, resourceGroupId=principal.resource_group_id)
        now = utcnow()
        row = NetworkAffinityGroupRow(id=group_id, resource_group_id=principal.resource_group_id,
                                      created_at=now, updated_at=now, version=1, body=body)
        with self.database.write() as session:
            session.add(row)
        return row

    def delete_group(self, principal: Principal, group_id: str, if_match: str | None) -> None:
        with self.database.write() as session:
            row = get_document(session, NetworkAffinityGroupRow, group_id, visibility_of(principal), for_update=True)
            if row is None:
                raise not_found("network affinity group", group_id)
            check_if_match(if_match, row)
            session.delete(row)
