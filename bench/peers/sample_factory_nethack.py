"""Sample Factory 2 (APPO, V-trace, async) on NetHackScore with oniray's network, for N seconds.

    bench/peers/.venv-sf/bin/python bench/peers/sample_factory_nethack.py \
        --net reference --seconds 75 [--warmup 15] [--out result.json]

Runs in the Sample Factory venv (``bench/peers/setup.sh``), never in oniray's. Consumes: the
network size (``common.NET_SIZES``) and a time budget. Emits: ``PEER_RESULT {json}`` with the
steady-state env steps/s from SF's own counter (``Runner.env_steps``: the steps its learner has
received, the number behind SF's "FPS" line), sampled after every training iteration and
taken over the samples after ``--warmup`` seconds.

Same job as oniray's configs/default.yaml with rewards off: 2 rollout workers x 8 envs,
rollout (T) 32, batch 1024, one epoch of one minibatch, V-trace, gamma 0.999, lr 4e-4, clip
0.1, entropy 0.001, grad norm 4, no observation or return normalisation (oniray has neither).
The model is SF's default actor-critic (shared weights) around oniray's encoder: encoder ->
GRU(core_hidden) -> no decoder layers -> linear policy and value heads, i.e. PolicyNet's
layers one for one. SF's own async machinery stays at its defaults (a separate inference
worker, ``worker_num_splits=2`` double-buffered sampling, CPU affinity, ``max_policy_lag``
1000 where oniray drops fragments 8 versions old): those are what SF is.
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import NET_SIZES, CroppedNetHack, Encoder, NetSize, RateWindow, emit

ENV_NAME = "nethack_score_cropped"


def _patch_vtrace_summaries() -> None:
    """SF 2.1.1 with ``--with_vtrace=True`` crashes its learner on the first summary
    (``Learner._record_summaries`` reads ``mb.advantages``, which only the GAE path fills).
    Give the summary the V-trace advantages it computed. Runs at import, so SF's spawned
    learner process (which re-imports this file as ``__mp_main__``) is patched too."""
    try:
        from sample_factory.algo.learning.learner import Learner
    except ImportError:  # not in the SF venv (e.g. ruff or a bare import): nothing to patch
        return
    original = Learner._record_summaries

    def record_summaries(self: Learner, train_loop_vars: dict) -> object:
        if "advantages" not in train_loop_vars.mb:
            train_loop_vars.mb["advantages"] = train_loop_vars.adv
        return original(self, train_loop_vars)

    Learner._record_summaries = record_summaries


_patch_vtrace_summaries()


def _make_env(full_env_name: str, cfg: object = None, env_config: object = None,
              render_mode: str | None = None) -> CroppedNetHack:
    return CroppedNetHack("NetHackScore-v0")


def _make_encoder(size: NetSize, cfg: object, obs_space: object) -> object:
    """SF's encoder factory (bound to a size with functools.partial, which pickles: SF starts
    its workers with multiprocessing's spawn and hands them the model factory)."""
    from sample_factory.model.encoder import Encoder as SfEncoder

    class OnirayEncoder(SfEncoder):
        def __init__(self) -> None:
            super().__init__(cfg)
            self.net = Encoder(size)

        def forward(self, obs_dict: dict) -> object:
            return self.net(obs_dict)

        def get_out_size(self) -> int:
            return self.net.out_size

    return OnirayEncoder()


def sf_argv(size: NetSize, *, train_dir: str, seconds: float, seed: int,
            envs: int = 8) -> list[str]:
    return [
        f"--env={ENV_NAME}", "--experiment=peer_bench", f"--train_dir={train_dir}",
        "--device=cpu", f"--seed={seed}", "--restart_behavior=overwrite",
        "--num_workers=2", f"--num_envs_per_worker={envs}", "--rollout=32", "--recurrence=32",
        "--batch_size=1024", "--num_batches_per_epoch=1", "--num_epochs=1",
        "--with_vtrace=True", "--gamma=0.999", "--learning_rate=0.0004", "--adam_eps=1e-6",
        "--ppo_clip_ratio=0.1", "--exploration_loss_coeff=0.001", "--value_loss_coeff=0.5",
        "--max_grad_norm=4.0", "--normalize_input=False", "--normalize_returns=False",
        "--use_rnn=True", "--rnn_type=gru", f"--rnn_size={size.core_hidden}",
        "--rnn_num_layers=1", "--decoder_mlp_layers", "--nonlinearity=elu",
        "--actor_critic_share_weights=True",
        # Checkpoints and "best policy" saves are disk work that oniray's bench does not do
        # within the measured window either (its checkpoint comes at the end).
        "--save_every_sec=100000", "--save_best_after=1000000000000",
        f"--train_for_seconds={int(seconds) + 60}",  # our observer stops it; this is a backstop
        "--log_to_file=False",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--net", choices=sorted(NET_SIZES), default="reference")
    parser.add_argument("--seconds", type=float, default=75.0, help="training time")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds not measured")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--envs", type=int, default=8, help="envs per rollout worker")
    parser.add_argument("--out", default=None, help="also write the result JSON here")
    args = parser.parse_args()

    from sample_factory.algo.runners.runner import AlgoObserver, Runner
    from sample_factory.algo.utils.context import global_model_factory
    from sample_factory.cfg.arguments import parse_full_cfg, parse_sf_args
    from sample_factory.envs.env_utils import register_env
    from sample_factory.model.actor_critic import create_actor_critic
    from sample_factory.train import make_runner

    size = NET_SIZES[args.net]
    register_env(ENV_NAME, _make_env)
    global_model_factory().register_encoder_factory(functools.partial(_make_encoder, size))

    window = RateWindow(args.warmup)

    class Clock(AlgoObserver):
        """Samples SF's learner step counter; stops training when the budget is spent."""

        def on_start(self, runner: Runner) -> None:
            # Warm-up and budget count from here, when SF's processes exist, as oniray's count
            # from its training loop's start (actors up): start-up is nobody's steady state.
            window.started = time.monotonic()

        def on_training_step(self, runner: Runner, training_iteration_since_resume: int) -> None:
            window.add(sum(runner.env_steps.values()))
            if window.samples[-1][0] >= args.seconds:
                # SF's own stop path (stops its processes, flushes); train_for_seconds would
                # count from before the processes start, not from on_start.
                runner._stop_training()

    with tempfile.TemporaryDirectory(prefix="sf-peer-") as train_dir:
        argv = sf_argv(size, train_dir=train_dir, seconds=args.seconds, seed=args.seed,
                       envs=args.envs)
        sf_parser, _ = parse_sf_args(argv)
        cfg = parse_full_cfg(sf_parser, argv)
        cfg, runner = make_runner(cfg)
        runner.register_observer(Clock())
        env = CroppedNetHack()
        params = sum(p.numel() for p in create_actor_critic(
            cfg, env.observation_space, env.action_space).parameters())
        num_actions = int(env.action_space.n)
        env.close()
        started = time.time()
        status = runner.init()
        if status == 0:
            status = runner.run()
    emit({
        "system": "sample_factory", "net": args.net, "sps": window.rate(),
        "window_s": list(window.window()), "env_steps": window.samples[-1][1]
        if window.samples else 0, "wall_s": round(time.time() - started, 1),
        "params": params, "num_actions": num_actions, "status": int(status),
        "version": _version("sample-factory"),
    }, args.out)


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":
    main()
