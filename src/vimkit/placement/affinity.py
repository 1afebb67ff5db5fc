"""Affinity rules resolved for one decision: HARD rules become filters, SOFT rules weights.

NFVI_NODE rules are about hosts; ZONE and NFVI_POP rules about zones (a PoP being the set of its
zones), so that the engine applies them to whole buckets rather than to hosts one by one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from vimkit.placement.model import AffinityScope, AffinityType, AffinityUnsatisfiable, Claim, PlacementRequest


class Plan:
    """What a request's rules mean for this decision.

    ``allowed_zones`` / ``excluded_zones`` and ``required_no`` / ``excluded_nos`` (host numbers)
    come from HARD rules; ``host_terms`` and ``zone_terms`` are the SOFT rules' weight terms
    (members on the same host / zone: positive for AFFINITY, negative for ANTI_AFFINITY).
    """

    __slots__ = ("allowed_zones", "excluded_zones", "required_no", "excluded_nos", "host_terms", "zone_terms")

    def __init__(self) -> None:
        self.allowed_zones: set[str] | None = None
        self.excluded_zones: set[str] = set()
        self.required_no: int | None = None
        self.excluded_nos: set[int] = set()
        self.host_terms: dict[int, int] = {}
        self.zone_terms: dict[str, int] = {}

    def zone_ok(self, zone_id: str) -> bool:
        if self.allowed_zones is not None and zone_id not in self.allowed_zones:
            return False
        return zone_id not in self.excluded_zones


class Resolver:
    """Turns rules into a :class:`Plan` against the engine's claims, group memberships and hosts."""

    def __init__(self, claims: Mapping[str, Claim], groups: Mapping[str, set[str]], host_no: Mapping[str, int],
                 pop_zones: Mapping[str, set[str]]) -> None:
        self._claims = claims
        self._groups = groups
        self._host_no = host_no
        self._pop_zones = pop_zones

    def plan(self, request: PlacementRequest, self_id: str | None, hard: bool = True) -> Plan:
        """The plan for ``request``; ``hard=False`` ignores HARD rules (to tell "no capacity" from
        "affinity unsatisfiable"). ``self_id`` is left out of member sets (a move of a member)."""
        plan = Plan()
        claims = self._claims
        for rule in request.affinity_rules:
            if rule.hard and not hard:
                continue
            members: Iterable[str] = rule.members
            if rule.group_id is not None and rule.group_id in self._groups:
                members = rule.members | self._groups[rule.group_id]
            hosts: dict[int, int] = {}
            places: dict[str, int] = {}
            for member in members:
                claim = claims.get(member) if member != self_id else None
                if claim is None:
                    continue
                if rule.scope is AffinityScope.NFVI_NODE:
                    no = self._host_no[claim.host_id]
                    hosts[no] = hosts.get(no, 0) + 1
                else:
                    place = claim.zone_id if rule.scope is AffinityScope.ZONE else claim.nfvi_pop_id
                    places[place] = places.get(place, 0) + 1
            if not hosts and not places:
                continue
            if rule.hard:
                self._hard(plan, rule.type, rule.scope, hosts, places)
                continue
            sign = 1 if rule.type is AffinityType.AFFINITY else -1
            for no, count in hosts.items():
                plan.host_terms[no] = plan.host_terms.get(no, 0) + sign * count
            for place, count in places.items():
                for zone_id in self._zones_of(rule.scope, place):
                    plan.zone_terms[zone_id] = plan.zone_terms.get(zone_id, 0) + sign * count
        return plan

    def _zones_of(self, scope: AffinityScope, place: str) -> set[str]:
        return {place} if scope is AffinityScope.ZONE else self._pop_zones.get(place, set())

    def _hard(self, plan: Plan, kind: AffinityType, scope: AffinityScope, hosts: dict[int, int],
              places: dict[str, int]) -> None:
        if kind is AffinityType.AFFINITY:
            count = len(hosts) + len(places)
            if count > 1:
                label = {AffinityScope.NFVI_NODE: "hosts", AffinityScope.ZONE: "zones",
                         AffinityScope.NFVI_POP: "NFVI-PoPs"}[scope]
                raise AffinityUnsatisfiable(
                    f"the members of a HARD {scope.value} affinity rule are already on {count} different {label}"
                )
            if hosts:
                (no,) = hosts
                if plan.required_no is not None and plan.required_no != no:
                    raise AffinityUnsatisfiable("two HARD NFVI_NODE affinity rules require different hosts")
                plan.required_no = no
                return
            (place,) = places
            zones = self._zones_of(scope, place)
            plan.allowed_zones = zones if plan.allowed_zones is None else plan.allowed_zones & zones
            return
        plan.excluded_nos.update(hosts)
        for place in places:
            plan.excluded_zones.update(self._zones_of(scope, place))
