"""Fragment -> torch tensors, without copying the observation data.

Consumes a fragment ``pa.RecordBatch`` (``actors.fragment``: ``(T + 1) * E`` rows,
time-major). Emits :class:`FragmentTensors`, every column as a ``[T + 1, E, ...]`` tensor
that shares memory with the Arrow buffers (which, after ``ray.get``, live in the object
store). Bool columns are bit-packed in Arrow, so they (and ``first``) are small copies.
The tensors are read-only views: nothing may write into them.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import pyarrow as pa
import torch

from actors.fragment import FragmentMeta, validate_fragment
from actors.model import OBS_KEYS


@dataclass(frozen=True)
class FragmentTensors:
    """One fragment (or several stacked along the env dim) as time-major tensors."""

    glyph_crop: torch.Tensor  # int16 [T+1, E, C, C]
    blstats: torch.Tensor  # float32 [T+1, E, 27]
    message_bytes: torch.Tensor  # uint8 [T+1, E, 256]
    action: torch.Tensor  # int64 [T+1, E]; 0 in the bootstrap row
    behaviour_logp: torch.Tensor  # float32 [T+1, E]
    reward: torch.Tensor  # float32 [T+1, E]
    terminated: torch.Tensor  # bool [T+1, E]
    truncated: torch.Tensor  # bool [T+1, E]
    env_index: torch.Tensor  # int32 [T+1, E]
    episode_id: torch.Tensor  # int64 [T+1, E]
    step: torch.Tensor  # int32 [T+1, E]
    msg_count: torch.Tensor  # int32 [T+1, E]
    first: torch.Tensor  # bool [T+1, E]: step == 0, reset the core before this obs
    initial_core_state: torch.Tensor  # float32 [E, H]: core state before row t == 0
    metas: tuple[FragmentMeta, ...]  # one per fragment, in env order

    @property
    def length(self) -> int:
        """T: steps (the bootstrap row not counted)."""
        return self.action.shape[0] - 1

    @property
    def num_envs(self) -> int:
        return self.action.shape[1]

    def obs(self) -> dict[str, torch.Tensor]:
        """The model's observation inputs, ``[T+1, E, ...]``."""
        return {k: getattr(self, k) for k in OBS_KEYS}


_TENSOR_COLUMNS = ("glyph_crop", "blstats", "message_bytes")
_NUMERIC_COLUMNS = (
    "action", "behaviour_logp", "reward", "env_index", "episode_id", "step", "msg_count",
)
_BOOL_COLUMNS = ("terminated", "truncated")


def _share(array: np.ndarray) -> torch.Tensor:
    # torch warns that a read-only array is shared writable; we only ever read these.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def fragment_tensors(fragment: pa.RecordBatch) -> FragmentTensors:
    """View a fragment as ``[T + 1, E, ...]`` tensors (zero-copy except for bools)."""
    meta = validate_fragment(fragment)
    rows = (meta.length + 1, meta.num_envs)
    columns: dict[str, torch.Tensor] = {}
    for name in _TENSOR_COLUMNS:
        array = fragment.column(name).to_numpy_ndarray()
        columns[name] = _share(array.reshape(*rows, *array.shape[1:]))
    for name in _NUMERIC_COLUMNS:
        columns[name] = _share(fragment.column(name).to_numpy(zero_copy_only=True).reshape(rows))
    for name in _BOOL_COLUMNS:
        columns[name] = torch.from_numpy(
            fragment.column(name).to_numpy(zero_copy_only=False).reshape(rows)
        )
    return FragmentTensors(
        **columns,
        first=columns["step"] == 0,
        initial_core_state=_share(meta.initial_core_state),
        metas=(meta,),
    )


def stack_fragments(parts: Sequence[FragmentTensors]) -> FragmentTensors:
    """Concatenate fragments of equal T along the env dim (a copy), core states included."""
    if not parts:
        raise ValueError("stack_fragments needs at least one fragment")
    lengths = {p.length for p in parts}
    if len(lengths) > 1:
        raise ValueError(f"cannot stack fragments of different lengths T: {sorted(lengths)}")
    if len(parts) == 1:
        return parts[0]
    stacked: dict[str, object] = {}
    for f in fields(FragmentTensors):
        if f.name == "metas":
            stacked[f.name] = tuple(m for p in parts for m in p.metas)
        else:
            dim = 0 if f.name == "initial_core_state" else 1
            stacked[f.name] = torch.cat([getattr(p, f.name) for p in parts], dim=dim)
    return FragmentTensors(**stacked)  # type: ignore[arg-type]
