"""Fragment -> tensors: layout, values, and zero-copy by buffer address (also after pickle
protocol 5 and a real trip through Ray's object store)."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest
import torch

from learner.batch import FragmentTensors, fragment_tensors, make_batch, stack_fragments
from tests.helpers.fragments import make_fragment

T, E = 6, 4
SHARED = ("glyph_crop", "blstats", "message_bytes", "action", "behaviour_logp", "reward",
          "env_index", "episode_id", "step", "msg_count")


def _arrow_address(column: pa.Array) -> int:
    """Address of a column's first value in its Arrow data buffer (slice offsets included)."""
    if isinstance(column, pa.ExtensionArray):
        column = column.storage.flatten()  # flatten() applies the list array's offset
    width = column.type.bit_width // 8
    return column.buffers()[1].address + column.offset * width


def _assert_zero_copy(tensors: FragmentTensors, fragment: pa.RecordBatch) -> None:
    for name in SHARED:
        assert getattr(tensors, name).data_ptr() == _arrow_address(fragment.column(name)), name


def test_layout_and_values() -> None:
    fragment = make_fragment(T=T, E=E, seed=0)
    x = fragment_tensors(fragment)
    assert (x.length, x.num_envs) == (T, E)
    assert x.glyph_crop.shape == (T + 1, E, 9, 9) and x.glyph_crop.dtype == torch.int16
    assert x.blstats.shape == (T + 1, E, 27) and x.message_bytes.dtype == torch.uint8
    assert x.initial_core_state.shape == (E, 256)
    # Row t * E + e of the batch is [t, e] of every tensor.
    for t, e in [(0, 0), (2, 3), (T, 1)]:
        row = t * E + e
        assert x.action[t, e] == fragment.column("action")[row].as_py()
        assert x.terminated[t, e] == fragment.column("terminated")[row].as_py()
        assert x.step[t, e] == fragment.column("step")[row].as_py()
        glyphs = np.asarray(fragment.column("glyph_crop")[row].as_py()).reshape(9, 9)
        assert np.array_equal(x.glyph_crop[t, e].numpy(), glyphs)
    assert torch.equal(x.first, x.step == 0)
    assert x.first.any() and x.terminated.any()  # the fixture does end episodes
    assert torch.equal(x.env_index[0], torch.arange(E, dtype=torch.int32))


def test_zero_copy() -> None:
    fragment = make_fragment(T=T, E=E, seed=1)
    _assert_zero_copy(fragment_tensors(fragment), fragment)


def test_zero_copy_after_pickle_protocol_5() -> None:
    fragment = make_fragment(T=T, E=E, seed=2)
    buffers: list[pickle.PickleBuffer] = []
    payload = pickle.dumps(fragment, protocol=5, buffer_callback=buffers.append)
    restored = pickle.loads(payload, buffers=buffers)
    x = fragment_tensors(restored)
    _assert_zero_copy(x, restored)
    # Out-of-band buffers are the original memory: still no copy anywhere.
    assert x.blstats.data_ptr() == _arrow_address(fragment.column("blstats"))


def test_zero_copy_from_the_object_store(ray_session: None) -> None:
    import ray

    fragment = make_fragment(T=T, E=E, seed=3)
    fetched = ray.get(ray.put(fragment))
    x = fragment_tensors(fetched)
    _assert_zero_copy(x, fetched)
    # The data lives in the store's shared memory, not in the driver's original arrays.
    assert x.blstats.data_ptr() != _arrow_address(fragment.column("blstats"))
    assert torch.equal(x.blstats, fragment_tensors(fragment).blstats)


def test_stack_concatenates_envs_and_core_states() -> None:
    a, b = (fragment_tensors(make_fragment(T=T, E=e, seed=s, fragment_id=s))
            for e, s in [(E, 4), (2, 5)])
    x = stack_fragments([a, b])
    assert (x.length, x.num_envs) == (T, E + 2)
    assert torch.equal(x.glyph_crop[:, :E], a.glyph_crop)
    assert torch.equal(x.terminated[:, E:], b.terminated)
    assert torch.equal(x.initial_core_state, torch.cat([a.initial_core_state,
                                                        b.initial_core_state]))
    assert [m.fragment_id for m in x.metas] == [4, 5]


def test_stack_rejects_different_lengths() -> None:
    a = fragment_tensors(make_fragment(T=T, E=E, seed=6))
    b = fragment_tensors(make_fragment(T=T + 1, E=E, seed=7))
    with pytest.raises(ValueError, match="different lengths"):
        stack_fragments([a, b])


def test_rejects_a_batch_that_breaks_the_contract() -> None:
    fragment = make_fragment(T=T, E=E, seed=8)
    with pytest.raises(ValueError, match="rows"):
        fragment_tensors(fragment.slice(0, T * E))  # bootstrap rows missing


def test_step_views_pair_each_step_with_the_row_it_led_to() -> None:
    """Two stacked fragments of different widths, episodes of 3 steps: step t's views read
    row t, its ``next_*`` views row t + 1, in the stacked env order, messages included."""
    frags = [make_fragment(T=T, E=e, seed=s, fragment_id=s, episode_length=3)
             for s, e in ((20, 2), (21, 3))]
    batch = make_batch(frags)
    assert (batch.length, batch.num_envs) == (T, 5)
    rows = [f.to_pydict() for f in frags]

    def row(t: int, b: int) -> dict[str, object]:
        k, e = (0, b) if b < 2 else (1, b - 2)
        width = 2 if k == 0 else 3
        return {name: values[t * width + e] for name, values in rows[k].items()}

    messages = np.array(batch.next_message.to_pylist()).reshape(T, 5)
    for t in range(T):
        for b in range(5):
            now, nxt = row(t, b), row(t + 1, b)
            assert batch.action[t, b] == now["action"]
            assert batch.reward[t, b] == pytest.approx(now["reward"])
            assert bool(batch.done[t, b]) == (now["terminated"] or now["truncated"])
            assert batch.next_msg_count[t, b] == nxt["msg_count"]
            assert messages[t, b] == nxt["message"]
            assert torch.equal(batch.next_blstats[t, b], torch.tensor(nxt["blstats"]))
    # Episodes of 3 steps: steps 2 and 5 end theirs, so rows 3 and 6 start the next.
    assert batch.done[:, 0].tolist() == [False, False, True, False, False, True]
    assert (batch.rows.step[3] == 0).all()


def test_one_fragment_batch_slices_its_messages_without_a_copy() -> None:
    fragment = make_fragment(T=T, E=E, seed=22)
    batch = make_batch([fragment])
    column = fragment.column("message")
    assert batch.next_message.to_pylist() == column.to_pylist()[E:]
    assert batch.next_message.buffers()[2].address == column.buffers()[2].address
