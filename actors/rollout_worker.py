"""The rollout worker: steps E environments with the current policy, emits fragments.

Consumes: policy weights (a numpy state dict and its version). Emits: one Arrow fragment of T
steps x E environments per :meth:`RolloutWorker.sample` call (``actors.fragment``) and a small
stats dict (finished episodes, timings). The recurrent core state, the current observations
and the per-episode message counts carry over from one fragment to the next.

No Ray here: ``actors.rollout_actor`` is the thin actor shell around this class.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import torch

from actors.config import EnvConfig, ModelConfig, RolloutConfig
from actors.envs import (
    EncodedObs,
    ObsEncoder,
    episode_end,
    episode_succeeded,
    make_env,
    reset_seeded,
)
from actors.fragment import FragmentBuilder, FragmentMeta
from actors.model import PolicyNet
from actors.precision import compute_in, resolve


@dataclass
class EpisodeStats:
    """What a fragment's call reports besides the fragment itself (small: goes to the driver)."""

    actor_id: int
    fragment_id: int
    policy_version: int
    env_steps: int
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)
    episode_successes: list[bool] = field(default_factory=list)  # reached the task's goal
    env_seconds: float = 0.0
    inference_seconds: float = 0.0


class RolloutWorker:
    """E environments stepped in lockstep with batched CPU inference."""

    def __init__(
        self,
        *,
        env: EnvConfig,
        rollout: RolloutConfig,
        model: ModelConfig,
        actor_id: int,
        seed: int,
    ) -> None:
        self.actor_id = actor_id
        self.length, self.num_envs = rollout.fragment_length, rollout.envs_per_actor
        self.crop_size = env.crop_size
        self.envs = [
            make_env(env.id, max_episode_steps=env.max_episode_steps,
                     penalty_step=env.penalty_step)
            for _ in range(self.num_envs)
        ]
        self.num_actions = int(self.envs[0].action_space.n)
        self.encoder = ObsEncoder(env.crop_size)
        self.policy = PolicyNet(model, crop_size=env.crop_size, num_actions=self.num_actions)
        self.policy.eval()
        self.compute_dtype = resolve(rollout.precision, torch.device("cpu"))
        self.policy_version = -1  # no weights yet: only random sampling is meaningful
        self.generator = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        # One stream of levels per env, apart from the sampling stream: the same seed plays
        # the same dungeons whatever the policy does (see envs.reset_seeded).
        self.level_rngs = [np.random.default_rng((seed, e)) for e in range(self.num_envs)]
        self.fragment_id = 0

        self._episode_counter = 0
        self.episode_id = np.zeros(self.num_envs, np.int64)
        self.episode_step = np.zeros(self.num_envs, np.int32)
        self.episode_return = np.zeros(self.num_envs, np.float64)
        self.msg_count = np.zeros(self.num_envs, np.int32)
        self._seen: list[dict[str, int]] = [{} for _ in range(self.num_envs)]
        self.reset_all()

    def _reset_env(self, e: int) -> dict:
        obs, _ = reset_seeded(self.envs[e], self.level_rngs[e])
        return obs

    def reset_all(self) -> None:
        """Start a fresh episode in every env (after a random baseline, for instance)."""
        raw = []
        for e in range(self.num_envs):
            obs = self._reset_env(e)
            raw.append(obs)
            self._start_episode(e)
        self.obs = self.encoder.encode(raw)
        for e in range(self.num_envs):
            self._count_message(e, self.obs.messages[e])
        self.first = np.ones(self.num_envs, np.bool_)
        self.core_state = self.policy.initial_state(self.num_envs)

    # ---- episode bookkeeping ---------------------------------------------------------
    def _start_episode(self, e: int) -> None:
        self.episode_id[e] = (self.actor_id << 32) | self._episode_counter
        self._episode_counter += 1
        self.episode_step[e] = 0
        self.episode_return[e] = 0.0
        self._seen[e].clear()

    def _step_env(self, e: int, action: int) -> tuple[dict, float, bool, bool, dict]:
        """Step env e, time limits reported as truncations; add to its episode's tally."""
        obs, reward, term, trunc, info = self.envs[e].step(action)
        term, trunc = episode_end(term, trunc, info)
        self.episode_return[e] += reward
        self.episode_step[e] += 1
        return obs, float(reward), term, trunc, info

    def _finish_episode(self, e: int, info: dict, stats: EpisodeStats) -> dict:
        """Record env e's finished episode in ``stats``; reset it; return the first obs."""
        stats.episode_returns.append(float(self.episode_return[e]))
        stats.episode_lengths.append(int(self.episode_step[e]))
        stats.episode_successes.append(episode_succeeded(info))
        obs = self._reset_env(e)
        self._start_episode(e)
        return obs

    def _cut_off_values(
        self, cut_off: list[tuple[int, dict]], random_policy: bool
    ) -> np.ndarray:
        """V of each observation a time limit cut off (0 elsewhere), under the acting policy
        and the core state it had reached: the learner's V-trace bootstraps from it."""
        values = np.zeros(self.num_envs, np.float32)
        if not cut_off or random_policy or self.policy_version < 0:
            return values  # no policy to value with: a time limit then counts as an end
        envs = [e for e, _ in cut_off]
        encoded = self.encoder.encode([obs for _, obs in cut_off])
        with torch.inference_mode(), compute_in(self.compute_dtype, torch.device("cpu")):
            values[envs] = self.policy.value(encoded.policy_inputs(),
                                             self.core_state[envs]).float().numpy()
        return values

    def _count_message(self, e: int, message: str) -> None:
        count = self._seen[e].get(message, 0) + 1
        self._seen[e][message] = count
        self.msg_count[e] = count

    # ---- policy ------------------------------------------------------------------------
    def set_weights(self, weights: dict[str, np.ndarray], version: int) -> None:
        # A copy: arrays from the object store are read-only views of shared memory.
        state = {name: torch.from_numpy(np.array(value)) for name, value in weights.items()}
        self.policy.load_state_dict(state)
        self.policy_version = version

    def _act(
        self, obs: EncodedObs, random_policy: bool
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Actions, their log-probabilities and the observations' values (zeros: random)."""
        if random_policy:
            actions = self.rng.integers(self.num_actions, size=self.num_envs)
            logp = np.full(self.num_envs, -math.log(self.num_actions), np.float32)
            return actions.astype(np.int64), logp, np.zeros(self.num_envs, np.float32)
        # inference_mode, not no_grad: it also skips autograd's version counters and view
        # tracking (8-9% of a call in a one-off timing on this CPU, not a bench). Safe here:
        # the core state and the outputs never meet autograd.
        with torch.inference_mode(), compute_in(self.compute_dtype, torch.device("cpu")):
            actions, logp, values, core_state = self.policy.act_valued(
                obs.policy_inputs(), self.first, self.core_state, generator=self.generator
            )
        self.core_state = core_state.float()  # carried in float32 whatever the arithmetic
        return (np.asarray(actions, np.int64), np.asarray(logp, np.float32),
                values.float().numpy())

    def _put_obs(self, builder: FragmentBuilder, t: int) -> None:
        builder.put_obs(
            t,
            glyph_crop=self.obs.glyph_crop,
            blstats=self.obs.blstats,
            message_bytes=self.obs.message_bytes,
            messages=self.obs.messages,
            episode_id=self.episode_id,
            step=self.episode_step,
            msg_count=self.msg_count,
        )

    # ---- the rollout ---------------------------------------------------------------------
    def sample(self, *, random_policy: bool = False) -> tuple[pa.RecordBatch, EpisodeStats]:
        """Step every env T times; return the fragment and what finished meanwhile."""
        if not random_policy and self.policy_version < 0:
            raise RuntimeError("sample() before set_weights(): the policy is uninitialised")
        builder = FragmentBuilder(
            length=self.length, num_envs=self.num_envs, crop_size=self.crop_size
        )
        core_state = np.asarray(self.core_state, np.float32).copy()
        stats = EpisodeStats(
            actor_id=self.actor_id,
            fragment_id=self.fragment_id,
            policy_version=self.policy_version,
            env_steps=self.length * self.num_envs,
        )
        for t in range(self.length):
            self._put_obs(builder, t)
            tick = time.perf_counter()
            actions, logp, values = self._act(self.obs, random_policy)
            tock = time.perf_counter()
            rewards = np.zeros(self.num_envs, np.float32)
            terminated = np.zeros(self.num_envs, np.bool_)
            truncated = np.zeros(self.num_envs, np.bool_)
            raw, cut_off = [], []  # cut_off: (env, copy of the obs a time limit ended)
            for e in range(self.num_envs):
                obs, reward, term, trunc, info = self._step_env(e, int(actions[e]))
                rewards[e], terminated[e], truncated[e] = reward, term, trunc
                if trunc:  # NLE reuses its arrays: copy before the reset overwrites them
                    cut_off.append((e, {k: v.copy() for k, v in obs.items()}))
                if term or trunc:
                    obs = self._finish_episode(e, info, stats)
                raw.append(obs)
            self.obs = self.encoder.encode(raw)
            for e in range(self.num_envs):
                self._count_message(e, self.obs.messages[e])
            tick_value = time.perf_counter()
            truncation_value = self._cut_off_values(cut_off, random_policy)
            value_seconds = time.perf_counter() - tick_value
            stats.inference_seconds += tock - tick + value_seconds
            stats.env_seconds += time.perf_counter() - tock - value_seconds
            builder.put_step(
                t,
                action=actions,
                behaviour_logp=logp,
                reward=rewards,
                terminated=terminated,
                truncated=truncated,
                truncation_value=truncation_value,
                behaviour_value=values,
            )
            self.first = terminated | truncated
        self._put_obs(builder, self.length)  # the bootstrap rows
        fragment = builder.build(
            FragmentMeta(
                actor_id=self.actor_id,
                fragment_id=self.fragment_id,
                policy_version=self.policy_version,
                length=self.length,
                num_envs=self.num_envs,
                initial_core_state=core_state,
            )
        )
        self.fragment_id += 1
        return fragment, stats

    def play_random(self, *, episodes_per_env: int, min_steps: int = 0) -> EpisodeStats:
        """A uniformly random agent's first ``episodes_per_env`` episodes in every env (more,
        one round at a time, until ``min_steps`` steps are played); then every env restarts.

        Each env contributes exactly its first k episodes, all started from a reset: taking
        whichever episodes end first instead would over-sample short episodes, which on
        NetHackScore are the low-scoring deaths (a biased, too-low baseline). Envs that have
        their k wait while the others finish. No fragment is built.
        """
        stats = EpisodeStats(actor_id=self.actor_id, fragment_id=-1, policy_version=-1,
                             env_steps=0)
        started = time.perf_counter()
        for e in range(self.num_envs):
            self._reset_env(e)
            self._start_episode(e)
        done = np.zeros(self.num_envs, np.int64)
        target = max(episodes_per_env, 1)
        while True:
            active = [e for e in range(self.num_envs) if done[e] < target]
            if not active:
                if stats.env_steps >= min_steps:
                    break
                target += 1  # another whole round: every env plays one more episode
                continue
            for e in active:
                action = int(self.rng.integers(self.num_actions))
                _, _, term, trunc, info = self._step_env(e, action)
                stats.env_steps += 1
                if term or trunc:
                    done[e] += 1
                    self._finish_episode(e, info, stats)
        stats.env_seconds = time.perf_counter() - started
        self.reset_all()
        return stats

    def close(self) -> None:
        for environment in self.envs:
            environment.close()
