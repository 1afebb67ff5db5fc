"""Who is calling: the authenticated consumer as every layer below the API sees it."""

from __future__ import annotations

from dataclasses import dataclass

from vimkit.auth.scopes import ADMIN_SCOPE


@dataclass(frozen=True, slots=True)
class Principal:
    consumer_id: str
    resource_group_id: str
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return ADMIN_SCOPE in self.scopes

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes
