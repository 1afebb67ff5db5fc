"""Attribute selectors (ETSI GS NFV-SOL 013 clause 5.3): ``all_fields``, ``fields``,
``exclude_fields`` and ``exclude_default`` on collection GETs.

What SOL 013 5.3 says, and how it is applied here:

* Only *complex* attributes (structures, arrays, maps) whose lower cardinality bound is 0 and
  that are not conditionally mandatory can be left out; simple attributes and mandatory ones
  (identifiers, ``_links``) are always returned. Those are the only valid names in ``fields``
  and ``exclude_fields`` (anything else is a 400); with a :class:`SelectorResolver` such as
  ``FilterSchema`` they are the optional non-scalar attributes of the pydantic model.
* Valid combinations (table 5.3.2-2) and the response body each produces:

  ====================================  ===========================================================
  (none)                                same as ``exclude_default``
  ``all_fields``                        all attributes
  ``fields=<list>``                     all attributes except the optional complex ones not in
                                        <list>
  ``exclude_fields=<list>``             all attributes except the optional complex ones in <list>
  ``exclude_default``                   all attributes except the resource's "default exclude set"
  ``exclude_default`` + ``fields``      as ``exclude_default``, but keeping those in <list>
  ====================================  ===========================================================

  Every other combination is refused (``all_fields`` stands alone; ``exclude_fields`` goes with
  neither ``fields`` nor ``exclude_default``).
* Defaults: "if none of the attribute selector parameters is specified, ``exclude_default``
  shall be assumed" — for collections. SOL 002/003/005 define no attribute selectors on an
  individual resource, whose GET returns the full representation, so ``individual=True`` makes
  the default ``all_fields``.
* Names are paths with ``/``; a path through an array applies to every element. With
  ``fields`` alone, naming ``a/b`` keeps ``a`` (with its simple and mandatory attributes) but,
  inside it, only the optional complex attributes on a named path. With ``exclude_default``,
  only the default exclude set is left out, and an attribute of that set on the way to a named
  path (``a`` for ``a/b``) is kept whole.
* ``all_fields`` and ``exclude_default`` are flags: present with an empty value (``true`` is
  tolerated).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

SelectorMode = Literal["all_fields", "fields", "exclude_fields", "exclude_default"]
_FLAG_VALUES = frozenset({"", "true"})
MAX_SELECTOR_PATHS = 100


class SelectorError(ValueError):
    """An invalid attribute selector: ``param`` is the query parameter, ``reason`` the text."""

    def __init__(self, param: str, reason: str) -> None:
        super().__init__(f"{param}: {reason}")
        self.param = param
        self.reason = reason


class SelectorResolver(Protocol):
    """The attribute knowledge selectors need (``FilterSchema`` implements it)."""

    def has_attribute(self, path: tuple[str, ...]) -> bool: ...

    def selectable_attributes(self) -> frozenset[str]: ...


@dataclass
class Selector:
    """A parsed, combination-checked attribute selection.

    ``mode`` is the base behaviour; ``fields`` given with mode ``exclude_default`` is the
    ``exclude_default`` + ``fields`` combination. :meth:`validate` checks the named attributes against the resource and records which of its
    attributes are optional complex ones; ``fields`` needs that to know what to leave out.
    """

    mode: SelectorMode
    fields: tuple[tuple[str, ...], ...] = ()
    exclude_fields: tuple[tuple[str, ...], ...] = ()
    _selectable: frozenset[str] | None = field(default=None, compare=False, repr=False)

    def validate(self, resolver: SelectorResolver) -> None:
        """SelectorError unless every named path is an optional complex attribute."""
        selectable = resolver.selectable_attributes()
        for param, paths in (("fields", self.fields), ("exclude_fields", self.exclude_fields)):
            for path in paths:
                shown = "/".join(path)
                if not resolver.has_attribute(path):
                    raise SelectorError(param, f"unknown attribute '{shown}'")
                if shown not in selectable:
                    raise SelectorError(
                        param,
                        f"attribute '{shown}' cannot be selected: only complex attributes that "
                        "may be absent (lower cardinality 0) can be",
                    )
        self._selectable = selectable

    def keeps_everything(self, default_excluded: frozenset[str]) -> bool:
        """Whether :meth:`apply` returns every document whole (the default selection of a
        resource without a default exclude set)."""
        return self.mode == "all_fields" or (
            self.mode == "exclude_default" and not self.fields and not default_excluded)

    def apply(self, doc: dict[str, Any], default_excluded: frozenset[str]) -> dict[str, Any]:
        """A copy of ``doc`` reduced as selected; ``default_excluded`` is the resource's
        "default exclude set" (paths with ``/``)."""
        if self.mode == "all_fields":
            return copy.deepcopy(doc)
        if self.mode == "exclude_fields":
            removed: list[tuple[str, ...]] = list(self.exclude_fields)
        elif self.mode == "exclude_default":
            removed = list(_unkept((_split(path) for path in default_excluded), self.fields))
        else:
            if self._selectable is None:
                raise RuntimeError("call Selector.validate() before apply() with 'fields'")
            removed = list(_unkept((_split(path) for path in self._selectable), self.fields))
        # Copying is the costly part of a large page: skip it when nothing is present to remove.
        if not any(path[0] in doc for path in removed):
            return dict(doc)
        result = copy.deepcopy(doc)
        # parents first, so that nothing is walked twice
        for path in sorted(removed, key=len):
            _remove(result, path)
        return result


def parse_selectors(
    all_fields: str | None,
    fields: str | None,
    exclude_fields: str | None,
    exclude_default: str | None,
    *,
    individual: bool = False,
) -> Selector:
    """Check the combination (SOL 013 table 5.3.2-2) and parse the attribute lists."""
    given = {
        name
        for name, value in (
            ("all_fields", all_fields),
            ("fields", fields),
            ("exclude_fields", exclude_fields),
            ("exclude_default", exclude_default),
        )
        if value is not None
    }
    if "all_fields" in given and len(given) > 1:
        other = sorted(given - {"all_fields"})[0]
        raise SelectorError("all_fields", f"'all_fields' cannot be combined with '{other}'")
    if "exclude_fields" in given and len(given) > 1:
        other = sorted(given - {"exclude_fields"})[0]
        raise SelectorError("exclude_fields", f"'exclude_fields' cannot be combined with '{other}'")
    for name, value in (("all_fields", all_fields), ("exclude_default", exclude_default)):
        if value is not None and value.lower() not in _FLAG_VALUES:
            raise SelectorError(name, f"'{name}' is a flag and takes no value")
    if all_fields is not None:
        return Selector("all_fields")
    if exclude_fields is not None:
        excluded = _parse_list("exclude_fields", exclude_fields)
        return Selector("exclude_fields", exclude_fields=excluded)
    if fields is not None:
        mode: SelectorMode = "exclude_default" if exclude_default is not None else "fields"
        return Selector(mode, fields=_parse_list("fields", fields))
    if exclude_default is not None or not individual:
        return Selector("exclude_default")
    return Selector("all_fields")


def _parse_list(param: str, text: str) -> tuple[tuple[str, ...], ...]:
    if not text:
        raise SelectorError(param, f"'{param}' needs at least one attribute name")
    entries = text.split(",")
    if len(entries) > MAX_SELECTOR_PATHS:
        raise SelectorError(param, f"at most {MAX_SELECTOR_PATHS} attribute names")
    paths = []
    for entry in entries:
        path = _split(entry)
        if not all(path):
            raise SelectorError(param, f"empty attribute name in '{entry}'")
        paths.append(path)
    return tuple(paths)


def _split(path: str) -> tuple[str, ...]:
    return tuple(path.split("/"))


def _unkept(
    candidates: Iterable[tuple[str, ...]], kept: tuple[tuple[str, ...], ...]
) -> list[tuple[str, ...]]:
    """The candidates that are neither a named path, below one, nor on the way to one."""
    return [
        path
        for path in candidates
        if not any(path[: len(name)] == name or name[: len(path)] == path for name in kept)
    ]


def _remove(node: Any, path: tuple[str, ...]) -> None:
    if isinstance(node, list):
        for element in node:
            _remove(element, path)
    elif isinstance(node, dict) and path:
        if len(path) == 1:
            node.pop(path[0], None)
        else:
            _remove(node.get(path[0]), path[1:])
