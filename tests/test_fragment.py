"""The fragment schema: round trips through pickle, Arrow IPC and the object store."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest

from actors.fragment import (
    EPISODE_FIELDS,
    STEP_FIELDS,
    FragmentMeta,
    fragment_schema,
    step_rows,
    validate_fragment,
)
from tests.helpers.fragments import make_fragment


def test_schema_groups_and_types() -> None:
    schema = fragment_schema(9)
    assert schema.names == [*STEP_FIELDS, *EPISODE_FIELDS]
    groups = {f.name: f.metadata[b"group"].decode() for f in schema}
    assert {n for n, g in groups.items() if g == "episode"} == set(EPISODE_FIELDS)
    crop = schema.field("glyph_crop").type
    assert isinstance(crop, pa.FixedShapeTensorType) and crop.shape == [9, 9]
    assert crop.value_type == pa.int16()


def test_round_trip_through_ipc_and_pickle() -> None:
    fragment = make_fragment(T=5, E=3, seed=1, actor_id=2, policy_version=11)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, fragment.schema) as writer:
        writer.write_batch(fragment)
    via_ipc = pa.ipc.open_stream(sink.getvalue()).read_next_batch()
    via_pickle = pickle.loads(pickle.dumps(fragment, protocol=5))
    for copy in (via_ipc, via_pickle):
        assert copy.equals(fragment)
        meta = validate_fragment(copy)
        assert (meta.actor_id, meta.policy_version, meta.length, meta.num_envs) == (2, 11, 5, 3)
        np.testing.assert_array_equal(
            meta.initial_core_state, FragmentMeta.decode(fragment.schema).initial_core_state
        )


def test_layout_is_time_major_with_bootstrap_rows() -> None:
    fragment = make_fragment(T=4, E=3, seed=0)
    assert fragment.num_rows == (4 + 1) * 3
    env_index = fragment.column("env_index").to_numpy().reshape(5, 3)
    np.testing.assert_array_equal(env_index, np.tile(np.arange(3), (5, 1)))
    steps = step_rows(fragment)
    assert steps.num_rows == 12
    # Bootstrap rows carry no action or reward.
    tail = fragment.slice(12)
    assert not tail.column("reward").to_numpy().any()
    assert not tail.column("action").to_numpy().any()


def test_step_rows_is_zero_copy() -> None:
    fragment = make_fragment(T=4, E=2, seed=0)
    full = fragment.column("glyph_crop").to_numpy_ndarray()
    sliced = step_rows(fragment).column("glyph_crop").to_numpy_ndarray()
    assert sliced.ctypes.data == full.ctypes.data


def test_validate_rejects_foreign_batches() -> None:
    with pytest.raises(ValueError, match="not an oniray fragment"):
        validate_fragment(pa.record_batch({"x": [1, 2]}))
    fragment = make_fragment(T=3, E=2, seed=0)
    with pytest.raises(ValueError, match="rows"):
        validate_fragment(fragment.slice(0, 5))
    meta = dict(fragment.schema.metadata)
    meta[b"oniray.schema_version"] = b"99"
    with pytest.raises(ValueError, match="version 99"):
        validate_fragment(fragment.replace_schema_metadata(meta))


def test_through_the_object_store(ray_session) -> None:
    import ray

    fragment = make_fragment(T=4, E=2, seed=3)
    ref = ray.put(fragment)
    assert ray.get(ref).equals(fragment)
