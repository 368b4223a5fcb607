"""Documented, range-checked dataclass fields for oniray's config schema.

Every config field is declared with :func:`param`, which keeps its one-line doc and its
bounds next to its default, so the loader can validate and ``oniray config`` can print
the documentation from the same place. The default written here is the key's only one:
configs/default.yaml, which every config inherits, sets no key.
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
    """A dataclass field with a doc line and optional numeric bounds (``cluster.config`` checks
    both type and bounds at load, with pydantic)."""
    metadata = {"doc": doc, "ge": ge, "gt": gt, "le": le, "lt": lt}
    if factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def section(cls: type) -> Any:
    """A nested config section (a dataclass) with its defaults."""
    return dataclasses.field(default_factory=cls, metadata={"doc": (cls.__doc__ or "").strip()})
