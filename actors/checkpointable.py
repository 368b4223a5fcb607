"""The one state contract: everything a checkpoint or a published model holds answers
``state()`` and ``load_state(state)``.

``state()`` returns plain values (numpy arrays, tensors, numbers, strings, lists and dicts of
them) that ``torch.save`` and ``ray.put`` carry; ``load_state(state)`` makes the receiver give
the same outputs as the component that wrote it. Components satisfy it structurally and need
not import it: the scheduler (its counters), the APPO learner, the intrinsic scorer, the
learner core and group, the reward models and their char-CNN. It lives in the bottom layer so
that every package can name it (``tests/test_checkpointable.py`` checks each one round-trips).

An immutable value nested in a component's state (``rewards.running_stats.RunningMeanStd``)
answers ``state()`` and is rebuilt by its constructor (``RunningMeanStd(**state)``): a value is
replaced, never loaded into. No Ray and no torch here.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Checkpointable(Protocol):
    def state(self) -> dict[str, Any]:
        """Everything needed to continue (or to score) alike, as plain values."""
        ...

    def load_state(self, state: dict[str, Any]) -> None:
        """Become what ``state`` describes (a ``state()`` of this kind of component)."""
        ...
