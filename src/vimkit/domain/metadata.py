"""Merge-patch of consumer metadata, shared by the resources that carry it."""

from __future__ import annotations

from collections.abc import Mapping

from vimkit.api.problems import invalid
from vimkit.models.common import MAX_METADATA_ENTRIES


def merge_metadata(current: Mapping[str, str] | None, patch: Mapping[str, str | None], name: str = "metadata"
                   ) -> dict[str, str]:
    """RFC 7396 on a flat object: a key set to null is removed, any other value set."""
    merged = dict(current or {})
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    if len(merged) > MAX_METADATA_ENTRIES:
        raise invalid(name, f"at most {MAX_METADATA_ENTRIES} entries")
    return merged
