"""Learner-side scoring: one reward-model call per distinct message of a minibatch.

Consumes a reward model (``rewards.models``) and a fragment's ``message`` column; emits the
intrinsic reward per row, float32 [N]. A minibatch holds thousands of steps but a few dozen
distinct messages, so the column is dictionary-encoded, the dictionary scored once and the
scores gathered by the indices: no Python loop over rows.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rewards.models import RewardModel


def score_messages(model: RewardModel, messages: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The model's reward for every row of ``messages`` (null rows score 0), float32 [N]."""
    if isinstance(messages, pa.ChunkedArray):
        messages = messages.combine_chunks()
    if len(messages) == 0:
        return np.zeros(0, np.float32)
    encoded = pc.dictionary_encode(messages)
    scores = model.score(encoded.dictionary.to_pylist())
    # A null message has a null index; index 0 stands in, then its score is zeroed.
    indices = encoded.indices.fill_null(0).to_numpy()
    out = scores[indices]
    if encoded.indices.null_count:
        out[encoded.indices.is_null().to_numpy(zero_copy_only=False)] = 0.0
    return out.astype(np.float32, copy=False)


def credit_by_message(
    messages: pa.Array | pa.ChunkedArray, credit: np.ndarray
) -> dict[str, tuple[float, int]]:
    """message -> (the reward credited to the steps that led to it, how many of those steps
    had a non-zero credit), for every distinct non-null message with a non-zero credit.
    ``credit`` is per row of ``messages``, float [N]. What a run reports as the messages that
    earned its intrinsic reward."""
    if isinstance(messages, pa.ChunkedArray):
        messages = messages.combine_chunks()
    credit = np.asarray(credit, np.float64).reshape(-1)
    if len(messages) != len(credit):
        raise ValueError(f"credit_by_message: {len(credit)} credits for {len(messages)} messages")
    if len(messages) == 0:
        return {}
    encoded = pc.dictionary_encode(messages)
    valid = encoded.indices.is_valid().to_numpy(zero_copy_only=False)
    indices = encoded.indices.fill_null(0).to_numpy()[valid]
    size = len(encoded.dictionary)
    totals = np.bincount(indices, weights=credit[valid], minlength=size)
    steps = np.bincount(indices, weights=(credit[valid] != 0), minlength=size)
    names = encoded.dictionary.to_pylist()
    return {names[i]: (float(totals[i]), int(steps[i])) for i in np.flatnonzero(steps)}
