"""Network affinity / anti-affinity: groups, and the constraints networks and ports are allocated with.

A network occupies its provider network; that is the finest placement vimkit decides for it (it
has no per-node placement of networks). So a constraint compares provider networks, at the
constraint's scope:

- ``PHYSICAL_NETWORK``: the physical network (every VXLAN provider network is on the one overlay);
- ``ZONE`` (extension): the zones the provider network reaches (none listed = every zone);
  affinity needs a zone shared with every member, anti-affinity no zone shared with any;
- ``NFVI_NODE``, ``PHYSICAL_NIC``, ``VIRTUAL_SWITCH``, ``VIRTUAL_ROUTER``: the provider network
  itself (its NICs and switches are what two networks on it share).

A port sits on its network's provider network, and its NFVI node, NIC and switch are only known
once a compute plugs it; a port therefore takes ``PHYSICAL_NETWORK`` and ``ZONE`` constraints
(checked against its network), and the other scopes are refused with 400 rather than ignored.

Constraints are resolved inside the allocation's write transaction. A group's row is locked
there, so two allocations into one group are decided one after the other (on SQLite writers are
serialised anyway), and the allocated resource becomes a member in the same transaction.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from vimkit.api.problems import ApiError, Cause, conflict, invalid, not_found
from vimkit.auth.principal import Principal
from vimkit.domain.network_common import NetworkBase
from vimkit.infra.inventory import ProviderNetwork
from vimkit.models.network import NetworkAffinityConstraint, NetworkAffinityGroupCreate
from vimkit.store.network_tables import NetworkAffinityGroupRow, NetworkAffinityMemberRow, NetworkRow, PortRow
from vimkit.store.repository import check_if_match, get_document, utcnow, visibility_of

PORT_SCOPES = ("PHYSICAL_NETWORK", "ZONE")
_OVERLAY = "overlay"


@dataclass(frozen=True, slots=True)
class NetworkRule:
    index: int  # of the constraint in the request
    type: str  # AFFINITY or ANTI_AFFINITY
    scope: str
    hard: bool
    group_id: str | None
    members: tuple[str, ...]  # provider networks of the resources the rule is about

    @property
    def name(self) -> str:
        return f"affinityOrAntiAffinityConstraints/{self.index}"


class AffinityGroups(NetworkBase):
    # ------------------------------------------------------------------ groups

    def create_group(self, principal: Principal, data: NetworkAffinityGroupCreate) -> NetworkAffinityGroupRow:
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
            members = session.scalar(select(func.count()).select_from(NetworkAffinityMemberRow)
                                     .where(NetworkAffinityMemberRow.group_id == group_id)) or 0
            if members:
                raise conflict(f"network affinity group '{group_id}' still has {members} networks or ports")
            session.delete(row)

    # ------------------------------------------------------------------ constraints

    def _affinity_rules(self, session: Session, principal: Principal,
                        constraints: Sequence[NetworkAffinityConstraint], *, for_port: bool) -> list[NetworkRule]:
        """Resolve ``constraints`` in the allocation transaction (groups locked, members read)."""
        rules = []
        visibility = visibility_of(principal)
        for index, constraint in enumerate(constraints):
            name = f"affinityOrAntiAffinityConstraints/{index}"
            group_id = constraint.affinityOrAntiAffinityResourceGroupId
            if group_id is not None:
                group = get_document(session, NetworkAffinityGroupRow, group_id, visibility, for_update=True)
                if group is None:
                    raise invalid(f"{name}/affinityOrAntiAffinityResourceGroupId",
                                  f"network affinity group '{group_id}' does not exist")
                if group.body["type"] != constraint.type.value:
                    raise invalid(f"{name}/type", f"group '{group_id}' is an {group.body['type']} group")
                scope, hard = group.body["scope"], group.body.get("enforcement", "HARD") == "HARD"
                members = tuple(session.scalars(select(NetworkAffinityMemberRow.provider_network_id)
                                                .where(NetworkAffinityMemberRow.group_id == group_id)))
                where = f"{name}/affinityOrAntiAffinityResourceGroupId"
            else:
                assert constraint.affinityOrAntiAffinityResourceList is not None
                scope, hard = constraint.scope.value, constraint.enforcement.value == "HARD"
                members = self._placed(session, principal, constraint.affinityOrAntiAffinityResourceList.resource)
                where = f"{name}/scope"
            if for_port and scope not in PORT_SCOPES:
                raise invalid(where, f"scope {scope} is decided when a compute plugs the port; a port takes "
                                     f"{' or '.join(PORT_SCOPES)} constraints")
            rules.append(NetworkRule(index, constraint.type.value, scope, hard, group_id, members))
        return rules

    @staticmethod
    def _placed(session: Session, principal: Principal, resource_ids: Sequence[str]) -> tuple[str, ...]:
        """Provider networks of the listed networks and ports. Ids unknown or of another group
        constrain nothing (and the answer tells nothing about them), as for storage."""
        visibility = visibility_of(principal)
        ids = sorted(set(resource_ids))
        networks = session.scalars(select(NetworkRow.provider_network_id).where(
            NetworkRow.id.in_(ids), visibility.clause(NetworkRow)))
        ports = session.scalars(select(NetworkRow.provider_network_id)
                                .join(PortRow, PortRow.network_id == NetworkRow.id)
                                .where(PortRow.id.in_(ids), visibility.clause(PortRow)))
        return (*networks, *ports)

    def _provider(self, provider_id: str) -> ProviderNetwork | None:
        return next((p for p in self.providers if p.providerNetworkId == provider_id), None)

    def _keys(self, provider: ProviderNetwork, scope: str) -> frozenset[str]:
        if scope == "PHYSICAL_NETWORK":
            return frozenset({f"physical:{provider.physicalNetwork}" if provider.physicalNetwork else _OVERLAY})
        if scope == "ZONE":
            return frozenset(provider.zoneIds or [zone.zoneId for zone in self.infra.inventory.zones])
        return frozenset({provider.providerNetworkId})

    def _broken(self, rules: Sequence[NetworkRule], provider: ProviderNetwork) -> list[NetworkRule]:
        """The rules that placing a resource on ``provider`` would break."""
        broken = []
        for rule in rules:
            mine = self._keys(provider, rule.scope)
            theirs = [self._keys(member, rule.scope) for member in
                      (self._provider(pid) for pid in rule.members) if member is not None]
            if not theirs:
                continue
            if rule.type == "AFFINITY":
                ok = bool(mine.intersection(*theirs))
            else:
                ok = not any(mine & keys for keys in theirs)
            if not ok:
                broken.append(rule)
        return broken

    def _place(self, rules: Sequence[NetworkRule], candidates: Sequence[ProviderNetwork]) -> list[ProviderNetwork]:
        """The candidates that keep every hard rule, those breaking fewer soft rules first."""
        if not rules:
            return list(candidates)
        scored = []
        for order, provider in enumerate(candidates):
            broken = self._broken(rules, provider)
            if not any(rule.hard for rule in broken):
                scored.append((len(broken), order, provider))
        if not scored:
            hard = [rule for rule in rules if rule.hard]
            # Name the rules no candidate keeps; if each can be kept alone, it is their combination.
            blocking = [rule for rule in hard if all(self._broken([rule], provider) for provider in candidates)]
            raise unsatisfiable(blocking or hard, candidates)
        return [provider for _, _, provider in sorted(scored, key=lambda item: item[:2])]

    @staticmethod
    def _join_groups(session: Session, rules: Sequence[NetworkRule], resource_id: str, resource_type: str,
                     provider_id: str) -> None:
        for group_id in dict.fromkeys(rule.group_id for rule in rules if rule.group_id is not None):
            session.add(NetworkAffinityMemberRow(group_id=group_id, resource_id=resource_id,
                                                 resource_type=resource_type, provider_network_id=provider_id))

    @staticmethod
    def _leave_groups(session: Session, resource_ids: Sequence[str]) -> None:
        session.execute(delete(NetworkAffinityMemberRow).where(NetworkAffinityMemberRow.resource_id.in_(resource_ids)))


def unsatisfiable(rules: Sequence[NetworkRule], candidates: Sequence[ProviderNetwork]) -> ApiError:
    names = ", ".join(rule.name for rule in rules)
    where = ", ".join(p.providerNetworkId for p in candidates)
    return ApiError(409, f"no provider network ({where}) satisfies {names}", cause=Cause.AFFINITY_UNSATISFIABLE,
                    invalid_params=[(rule.name, f"{rule.type} at scope {rule.scope} cannot be kept") for rule in rules])
