"""A reference that travels with the version of what it refers to.

Used wherever weights or a reward model move between components: the owner (the learner for
the policy, the annotator for the reward model) stamps the version once, and everybody else
reads it from here instead of keeping a copy. ``ref`` is a ``ray.ObjectRef`` in the Ray
runtime (nested in this object, so Ray does not resolve it on the receiver's behalf: the
receiver fetches it only when the version is new) and the value itself in the local runtime.
No Ray here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class VersionedRef:
    version: int
    ref: Any  # ray.ObjectRef (Ray runtime) or the value (local runtime)
