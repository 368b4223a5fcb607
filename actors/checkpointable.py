"""The one state contract: everything a checkpoint or a published model holds answers
``state()`` and ``load_state(state)``.

``state()`` returns plain values (numpy arrays, tensors, numbers, strings, lists and dicts of
them) that ``torch.save`` and ``ray.put`` carry; ``load_state(state)`` makes the receiver give
the same outputs as the component that wrote it. Components satisfy it structurally and need
not import it: the scheduler (its counters), the APPO learner, the intrinsic scorer, the
learner core and group, the reward models and their char-CNN. It lives in the bottom layer so
that every package can name it (``tests/test_checkpointable.py`` checks each one round-trips).
:func:`check_checkpointable` checks a component against it where the run wires what it
checkpoints (``cluster.components.connect_components``).

An immutable value nested in a component's state (``rewards.running_stats.RunningMeanStd``)
answers ``state()`` and is rebuilt by its constructor (``RunningMeanStd(**state)``): a value is
replaced, never loaded into. No Ray and no torch here.
"""

from __future__ import annotations

import inspect
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Checkpointable(Protocol):
    def state(self) -> dict[str, Any]:
        """Everything needed to continue (or to score) alike, as plain values."""
        ...

    def load_state(self, state: dict[str, Any]) -> None:
        """Become what ``state`` describes (a ``state()`` of this kind of component)."""
        ...


def check_checkpointable(component: object, *, role: str) -> None:
    """Raise :class:`TypeError`, naming ``role``, the class and what is wrong, unless
    ``component`` answers the contract: ``state()`` callable with no argument and
    ``load_state(state)`` with one. Checked at wiring, so a component that breaks the contract
    fails as the run starts, not at its first checkpoint or its resume, minutes or hours on."""
    problems = []
    for name, args in (("state", ()), ("load_state", ({},))):
        method = getattr(component, name, None)
        if not callable(method):
            problems.append(f"no {name}()")
            continue
        try:
            signature = inspect.signature(method)
        except ValueError:  # no signature to read (a builtin): trust it
            continue
        try:
            signature.bind(*args)
        except TypeError:
            shown = signature.replace(return_annotation=inspect.Signature.empty)
            problems.append(f"{name}{shown} cannot be called with {len(args)} "
                            f"argument{'s' * (len(args) != 1)}")
    if problems:
        raise TypeError(
            f"the {role} ({type(component).__name__}) does not answer the state contract "
            f"(actors.checkpointable.Checkpointable: state() and load_state(state)): "
            f"{'; '.join(problems)}"
        )
