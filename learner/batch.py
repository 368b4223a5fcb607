"""Fragments -> torch tensors, without copying the observation data, and named step views.

Consumes fragment ``pa.RecordBatch``es (``actors.fragment``: ``(T + 1) * E`` rows,
time-major). Emits :class:`FragmentTensors`, every column as a ``[T + 1, E, ...]`` tensor
that shares memory with the Arrow buffers (which, after ``ray.get``, live in the object
store). Bool columns are bit-packed in Arrow, so they (and ``first``) are small copies.
The tensors are read-only views: nothing may write into them.

:class:`Batch` is what every learner-side consumer reads (the losses, the reward shaping, the
reward model's scoring, RND): named ``[T, B]`` views of the T steps, each beside the row its
action led to. "Step t's reward comes from row t + 1" is written here, once.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

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
    truncation_value: torch.Tensor  # float32 [T+1, E]: 0 unless truncated
    behaviour_value: torch.Tensor  # float32 [T+1, E]: the acting policy's V of the row
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
    "action", "behaviour_logp", "reward", "truncation_value", "behaviour_value", "env_index",
    "episode_id", "step", "msg_count",
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


@dataclass(frozen=True)
class Batch:
    """A learner's batch: the stacked rows, and the T steps as named ``[T, B]`` views.

    Row t of a fragment is the observation step t acted on; row t + 1 is the observation it
    led to, whose message the reward model scores (with its episode count) and whose novelty
    RND measures. Row T is the bootstrap row: an observation, never a step.
    """

    rows: FragmentTensors  # [T + 1, B, ...]: what the recurrent model unrolls over
    next_message: pa.Array  # string [T * B]: row t + 1's message, time-major, env order of rows

    @property
    def length(self) -> int:
        return self.rows.length

    @property
    def num_envs(self) -> int:
        return self.rows.num_envs

    # ---- step t (row t) ----
    @property
    def action(self) -> torch.Tensor:
        return self.rows.action[:-1]

    @property
    def behaviour_logp(self) -> torch.Tensor:
        return self.rows.behaviour_logp[:-1]

    @property
    def reward(self) -> torch.Tensor:
        """The extrinsic reward of step t."""
        return self.rows.reward[:-1]

    @property
    def done(self) -> torch.Tensor:
        """Step t ended its episode (terminated or truncated): row t + 1 starts another."""
        return self.rows.terminated[:-1] | self.rows.truncated[:-1]

    @property
    def terminated(self) -> torch.Tensor:
        """Step t ended its episode for good (death, goal): no future to bootstrap."""
        return self.rows.terminated[:-1]

    @property
    def truncated(self) -> torch.Tensor:
        """Step t hit a time limit: its future is :attr:`truncation_value`, not row t + 1."""
        return self.rows.truncated[:-1]

    @property
    def truncation_value(self) -> torch.Tensor:
        return self.rows.truncation_value[:-1]

    @property
    def behaviour_value(self) -> torch.Tensor:
        """The acting policy's value of step t's observation (PPO's "old" value)."""
        return self.rows.behaviour_value[:-1]

    # ---- what step t led to (row t + 1) ----
    @property
    def next_msg_count(self) -> torch.Tensor:
        return self.rows.msg_count[1:]

    @property
    def next_glyph_crop(self) -> torch.Tensor:
        return self.rows.glyph_crop[1:]

    @property
    def next_blstats(self) -> torch.Tensor:
        return self.rows.blstats[1:]

    def to(self, device: torch.device) -> Batch:
        if device.type == "cpu":
            return self
        moved = {
            k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v)
            for k, v in vars(self.rows).items()
        }
        return replace(self, rows=FragmentTensors(**moved))


def make_batch(fragments: Sequence[pa.RecordBatch]) -> Batch:
    """Stack fragments of equal T along the env dim and name their steps."""
    rows = stack_fragments([fragment_tensors(f) for f in fragments])
    if len(fragments) == 1:  # one fragment's rows 1..T are already in order: no copy
        e = rows.num_envs
        return Batch(rows=rows, next_message=fragments[0].column("message").slice(e))
    messages, offset = [], 0
    order = []  # row (t, b) of the stacked batch -> its index in the concatenated messages
    for fragment, meta in zip(fragments, rows.metas, strict=True):
        t, e = meta.length, meta.num_envs
        messages.append(fragment.column("message"))
        order.append(offset + np.arange((t + 1) * e).reshape(t + 1, e)[1:])
        offset += (t + 1) * e
    take = np.concatenate(order, axis=1).reshape(-1)
    next_message = pa.concat_arrays(messages).take(pa.array(take))
    return Batch(rows=rows, next_message=next_message)
