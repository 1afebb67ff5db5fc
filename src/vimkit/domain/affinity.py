"""Affinity constraints of a request, resolved against the caller's groups and resources."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from vimkit.api.problems import invalid
from vimkit.models.common import AffinityOrAntiAffinityConstraint
from vimkit.placement.model import AffinityRule
from vimkit.store.models import DocumentMixin
from vimkit.store.repository import Visibility, get_document


def resolve_rules(session: Session, visibility: Visibility, constraints: Sequence[AffinityOrAntiAffinityConstraint],
                  name: str, group_model: type[DocumentMixin], member_model: type[DocumentMixin], kind: str
                  ) -> tuple[AffinityRule, ...]:
    """Constraints as placement rules. A group must be one the caller can see and of the
    constraint's type (else 400 naming the field); a group's own scope and enforcement apply.
    Another resource group's members in a resource list are treated as unknown ids: they
    constrain nothing and the answer reveals nothing about them."""
    rules = []
    for index, constraint in enumerate(constraints):
        field_name = f"{name}/{index}"
        group_id = constraint.affinityOrAntiAffinityResourceGroupId
        if group_id is not None:
            group = get_document(session, group_model, group_id, visibility)
            if group is None:
                raise invalid(f"{field_name}/affinityOrAntiAffinityResourceGroupId",
                              f"{kind} affinity group '{group_id}' does not exist")
            if group.body["type"] != constraint.type.value:
                raise invalid(f"{field_name}/type", f"group '{group_id}' is an {group.body['type']} group")
            rules.append(AffinityRule(group.body["type"], group.body["scope"], group.body["enforcement"],
                                      group_id=group_id))
            continue
        assert constraint.affinityOrAntiAffinityResourceList is not None
        members = set(constraint.affinityOrAntiAffinityResourceList.resource)
        foreign = set(session.scalars(select(member_model.id).where(member_model.id.in_(members),
                                                                    ~visibility.clause(member_model))))
        rules.append(AffinityRule(constraint.type.value, constraint.scope.value, constraint.enforcement.value,
                                  members=frozenset(members - foreign)))
    return tuple(rules)
