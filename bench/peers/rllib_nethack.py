"""RLlib's APPO (new API stack) on NetHackScore with oniray's network, for N seconds.

    bench/peers/.venv-rllib/bin/python bench/peers/rllib_nethack.py \
        --net reference --seconds 75 [--warmup 15] [--out result.json]

Runs in the RLlib venv (``bench/peers/setup.sh``), never in oniray's. Consumes: the network
size (``common.NET_SIZES``) and a time budget. Emits: ``PEER_RESULT {json}`` with the
steady-state env steps/s from RLlib's own counter of steps its env runners sampled
(``env_runners/num_env_steps_sampled_lifetime``), read from each ``Algorithm.train()`` result
and taken over the results after ``--warmup`` s. The learners'
``num_env_steps_trained_lifetime`` is reported beside it but not used: with the tiny network
it ran at ~2x the sampled count, and a count kept inside the envs themselves (a diagnostic
run, 2026-11) agreed with the sampled counter (52,992 stepped vs 52,620 sampled vs 103,790
"trained"), so the trained counter over-counts here.

Same job as oniray's configs/default.yaml with rewards off: 2 env runners x 8 envs, rollout
fragment 32, one learner, batch 1024 per learner, one epoch of one minibatch (no circular
buffer: each batch is trained on once), V-trace, gamma 0.999, lr 4e-4, clip 0.1, entropy
0.001, grad norm 4. The RLModule is oniray's PolicyNet layer for layer (``common.Encoder``
-> GRU -> linear policy and value heads); RLlib's APPO also needs a target copy of the
policy path (its ``TargetNetworkAPI``), which it keeps in the learner and runs once per
batch — part of what RLlib's APPO costs, so it stays.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import NET_SIZES, CroppedNetHack, Encoder, NetSize, RateWindow, emit
from ray.rllib.core.columns import Columns
from ray.rllib.core.learner.utils import make_target_network
from ray.rllib.core.rl_module.apis import (
    InferenceOnlyAPI,
    TargetNetworkAPI,
    ValueFunctionAPI,
)
from ray.rllib.core.rl_module.apis.target_network_api import (
    TARGET_NETWORK_ACTION_DIST_INPUTS,
)
from ray.rllib.core.rl_module.torch import TorchRLModule

ENV_NAME = "nethack_score_cropped"
FRAGMENT = 32


class Body(nn.Module):
    """Encoder + GRU over [B, T, ...] observations (RLlib's layout is batch-major)."""

    def __init__(self, size: NetSize) -> None:
        super().__init__()
        self.encoder = Encoder(size)
        self.core = nn.GRU(size.fused_hidden, size.core_hidden, batch_first=True)

    def forward(self, obs: dict[str, torch.Tensor], h: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        B, T = obs["blstats"].shape[:2]
        flat = {k: v.reshape(B * T, *v.shape[2:]) for k, v in obs.items()}
        x = self.encoder(flat).view(B, T, -1)
        out, h = self.core(x, h.unsqueeze(0))
        return out, h.squeeze(0)


class OnirayAPPOModule(TorchRLModule, ValueFunctionAPI, TargetNetworkAPI, InferenceOnlyAPI):
    """oniray's PolicyNet as an RLlib RLModule (stateful: the GRU state is ``STATE_IN['h']``;
    RLlib's connectors start each episode from ``get_initial_state`` and cut training
    sequences at ``max_seq_len``)."""

    def setup(self) -> None:
        size = NetSize(**self.model_config["size"])
        self._hidden = size.core_hidden
        self._body = Body(size)
        self._pi = nn.Linear(size.core_hidden, int(self.action_space.n))
        self._vf = nn.Linear(size.core_hidden, 1)
        # PolicyNet's near-uniform initial policy.
        nn.init.orthogonal_(self._pi.weight, gain=0.01)
        nn.init.zeros_(self._pi.bias)

    def get_initial_state(self) -> dict[str, np.ndarray]:
        return {"h": np.zeros(self._hidden, np.float32)}

    def _features(self, batch: dict[str, Any], body: nn.Module | None = None
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        out, h = (body or self._body)(batch[Columns.OBS], batch[Columns.STATE_IN]["h"])
        return out, {"h": h}

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        features, state = self._features(batch)
        return {Columns.ACTION_DIST_INPUTS: self._pi(features), Columns.STATE_OUT: state}

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        features, state = self._features(batch)
        return {Columns.ACTION_DIST_INPUTS: self._pi(features), Columns.STATE_OUT: state,
                Columns.EMBEDDINGS: features}

    def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
        if embeddings is None:
            embeddings, _ = self._features(batch)
        return self._vf(embeddings).squeeze(-1)

    def make_target_networks(self) -> None:
        self._old_body = make_target_network(self._body)
        self._old_pi = make_target_network(self._pi)

    def get_target_network_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self._body, self._old_body), (self._pi, self._old_pi)]

    def forward_target(self, batch: dict[str, Any]) -> dict[str, Any]:
        features, _ = self._features(batch, self._old_body)
        return {TARGET_NETWORK_ACTION_DIST_INPUTS: self._old_pi(features)}

    def get_non_inference_attributes(self) -> list[str]:
        return ["_old_body", "_old_pi", "_vf"]


def _make_env(env_config: dict) -> CroppedNetHack:
    return CroppedNetHack("NetHackScore-v0")


def build_config(size: NetSize, seed: int) -> Any:
    from ray.rllib.algorithms.appo import APPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    return (
        APPOConfig()
        .environment(ENV_NAME)
        .framework("torch")
        .env_runners(num_env_runners=2, num_envs_per_env_runner=8,
                     rollout_fragment_length=FRAGMENT, num_cpus_per_env_runner=1)
        .learners(num_learners=1, num_cpus_per_learner=1)
        .training(train_batch_size_per_learner=1024, num_epochs=1, minibatch_size=1024,
                  use_circular_buffer=False, lr=4e-4, gamma=0.999, clip_param=0.1,
                  entropy_coeff=0.001, vf_loss_coeff=0.5, grad_clip=4.0,
                  grad_clip_by="global_norm")
        .rl_module(rl_module_spec=RLModuleSpec(
            module_class=OnirayAPPOModule,
            model_config={"size": asdict(size), "max_seq_len": FRAGMENT},
        ))
        # A result every ~2 s instead of APPO's 10 s: enough samples for a steady window.
        .reporting(min_time_s_per_iteration=2)
        .debugging(seed=seed, log_level="WARN")
    )


def _lifetime(result: dict, *path: str) -> int:
    node: Any = result
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return -1
        node = node[key]
    return int(node)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", choices=sorted(NET_SIZES), default="reference")
    parser.add_argument("--seconds", type=float, default=75.0, help="training time")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds not measured")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the result JSON here")
    args = parser.parse_args()

    import ray
    from ray.tune.registry import register_env

    size = NET_SIZES[args.net]
    # Logical CPUs as oniray's init_ray gives them: every actor its 1 CPU, time-shared on 2.
    ray.init(num_cpus=4, include_dashboard=False, object_store_memory=512 * 2**20,
             log_to_driver=False)
    register_env(ENV_NAME, _make_env)
    config = build_config(size, args.seed)

    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    env = CroppedNetHack()
    probe = RLModuleSpec(module_class=OnirayAPPOModule, observation_space=env.observation_space,
                         action_space=env.action_space, model_config={"size": asdict(size)}
                         ).build()
    params = sum(p.numel() for p in probe.parameters())  # before any target copy exists
    env.close()

    trained, sampled = RateWindow(args.warmup), RateWindow(args.warmup)
    started = time.time()
    algo = config.build_algo()
    # The warm-up clock starts when the algorithm exists, as SF's and oniray's start at their
    # first training step's neighbourhood: actor start-up is not steady state for anyone.
    trained.started = sampled.started = time.monotonic()
    while trained.samples == [] or trained.samples[-1][0] < args.seconds:
        result = algo.train()
        trained.add(_lifetime(result, "learners", "__all_modules__",
                              "num_env_steps_trained_lifetime"))
        sampled.add(_lifetime(result, "env_runners", "num_env_steps_sampled_lifetime"))
    algo.stop()
    ray.shutdown()
    from importlib.metadata import version

    emit({
        "system": "rllib", "net": args.net, "sps": sampled.rate(),
        "sps_trained_counter": trained.rate(), "window_s": list(sampled.window()),
        "env_steps": trained.samples[-1][1], "env_steps_sampled": sampled.samples[-1][1],
        "counters": [(round(t, 1), n, m) for (t, n), (_, m) in
                     zip(trained.samples, sampled.samples, strict=True)],
        "wall_s": round(time.time() - started, 1),
        "params": params, "version": version("ray"),
    }, args.out)


if __name__ == "__main__":
    main()
