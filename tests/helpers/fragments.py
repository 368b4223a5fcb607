"""Realistic random fragments for tests, built through the real ``FragmentBuilder``.

``make_fragment(T=..., E=..., seed=...)`` returns a ``pa.RecordBatch`` that obeys the whole
fragment contract (``actors.fragment``): episodes end mid-fragment (terminated, and now and
then truncated), the obs after an ending is step 0 of a new episode with a new episode id,
``msg_count`` counts messages per episode, the bootstrap row carries an observation only.
Everything is drawn from ``numpy.random.default_rng(seed)``: same arguments, same bytes.

Knobs for known-answer tests:
    episode_length  every episode lasts exactly this many steps, then terminates
                    (None: random lengths, a few per fragment)
    reward          this constant extrinsic reward at every step (None: sparse random rewards)
The episode step is also written to ``blstats[..., BLSTATS_TIME]`` (NLE's turn counter), so a
model can read "steps since the episode began" from one observation.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from actors.fragment import MAX_GLYPH, MESSAGE_SIZE, FragmentBuilder, FragmentMeta

BLSTATS_TIME = 20  # NLE_BL_TIME
NETHACK_SCORE_ACTIONS = 23  # NetHackScore-v0's action space
MESSAGES = (
    "",
    "It's a wall.",
    "You see here a dagger.",
    "The newt bites!",
    "You kill the newt!",
    "There is a staircase down here.",
)


def _message_bytes(text: str) -> np.ndarray:
    out = np.zeros(MESSAGE_SIZE, np.uint8)
    raw = text.encode()
    out[: len(raw)] = np.frombuffer(raw, np.uint8)
    return out


def make_fragment(
    *,
    T: int,
    E: int,
    seed: int,
    crop_size: int = 9,
    actor_id: int = 0,
    fragment_id: int = 0,
    policy_version: int = 0,
    num_actions: int = NETHACK_SCORE_ACTIONS,
    core_hidden: int = 256,
    episode_length: int | None = None,
    reward: float | None = None,
) -> pa.RecordBatch:
    """A random fragment of T steps of E envs (``(T + 1) * E`` rows); see the module doc."""
    rng = np.random.default_rng(seed)
    builder = FragmentBuilder(length=T, num_envs=E, crop_size=crop_size)

    def new_length() -> int:
        if episode_length is not None:
            return episode_length
        return int(rng.integers(2, max(3, T)))  # short enough to end inside the fragment

    # Each env is mid-episode at the fragment's start (unless fixed lengths start at 0).
    step = np.zeros(E, np.int32) if episode_length else rng.integers(0, 4, E).astype(np.int32)
    left = np.array([new_length() for _ in range(E)], np.int64)
    left = np.maximum(left - step, 1) if episode_length is None else left
    episode_n = rng.integers(0, 1000, E)
    counts: list[dict[str, int]] = [{} for _ in range(E)]
    for t in range(T + 1):
        messages = [MESSAGES[i] for i in rng.integers(0, len(MESSAGES), E)]
        msg_count = np.zeros(E, np.int32)
        for e, text in enumerate(messages):
            counts[e][text] = counts[e].get(text, 0) + 1
            msg_count[e] = counts[e][text]
        glyphs = rng.integers(0, MAX_GLYPH, (E, crop_size, crop_size)).astype(np.int16)
        glyphs[:, 0, :] = MAX_GLYPH  # the crop's edge past the map, as NLE pads it
        blstats = rng.normal(0, 10, (E, 27)).astype(np.float32)
        blstats[:, BLSTATS_TIME] = step
        builder.put_obs(
            t,
            glyph_crop=glyphs,
            blstats=blstats,
            message_bytes=np.stack([_message_bytes(m) for m in messages]),
            messages=messages,
            episode_id=(actor_id << 32) | episode_n,
            step=step.copy(),
            msg_count=msg_count,
        )
        if t == T:
            break  # the bootstrap row: an observation, no step
        logits = rng.normal(0, 1, (E, num_actions))
        probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        action = np.array([rng.choice(num_actions, p=p) for p in probs])
        ended = left == 1
        truncated = ended & (rng.random(E) < 0.2)
        if episode_length is not None:
            truncated[:] = False
        step_reward = (
            np.full(E, reward, np.float32) if reward is not None
            else (rng.random(E) < 0.1) * rng.integers(1, 20, E).astype(np.float32)
        )
        builder.put_step(
            t,
            action=action,
            behaviour_logp=np.log(probs[np.arange(E), action]).astype(np.float32),
            reward=step_reward,
            terminated=ended & ~truncated,
            truncated=truncated,
            # the actor's value of the observation a time limit cut off (no RNG draw, so
            # the fixture's other columns stay what they were)
            truncation_value=np.where(truncated, 0.5 + 0.25 * t, 0.0).astype(np.float32),
        )
        for e in np.flatnonzero(ended):
            episode_n[e] += 1
            counts[e] = {}
            left[e] = new_length() + 1  # +1: decremented below with the others
        step = np.where(ended, 0, step + 1).astype(np.int32)
        left -= 1

    core = rng.normal(0, 0.5, (E, core_hidden)).astype(np.float32)
    meta = FragmentMeta(
        actor_id=actor_id,
        fragment_id=fragment_id,
        policy_version=policy_version,
        length=T,
        num_envs=E,
        initial_core_state=core,
    )
    return builder.build(meta)
