"""Documented, range-checked dataclass fields for oniray's config schema.

Every config field is declared with :func:`param`, which keeps its one-line doc and its
bounds next to its default, so the loader can validate and ``oniray config --help`` can
print the documentation from the same place.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def param(
    default: Any = dataclasses.MISSING,
    doc: str = "",
    *,
    factory: Any = dataclasses.MISSING,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A dataclass field with a doc line and optional numeric bounds (checked at load)."""
    metadata = {"doc": doc, "ge": ge, "gt": gt, "le": le, "lt": lt}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def section(cls: type) -> Any:
    """A nested config section (a dataclass) with its defaults."""
    return dataclasses.field(default_factory=cls, metadata={"doc": (cls.__doc__ or "").strip()})


def bounds_error(value: Any, meta: dict[str, Any]) -> str | None:
    """Why ``value`` breaks the field's bounds, or None if it is within them."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    checks = (
        ("ge", lambda b: value >= b, ">="),
        ("gt", lambda b: value > b, ">"),
        ("le", lambda b: value <= b, "<="),
        ("lt", lambda b: value < b, "<"),
    )
    for key, ok, sign in checks:
        bound = meta.get(key)
        if bound is not None and not ok(bound):
            return f"must be {sign} {bound}"
    return None
