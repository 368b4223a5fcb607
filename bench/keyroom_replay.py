"""Play a key-room run's newest checkpoint and say what its policy does (no training).

    python bench/keyroom_replay.py RUN_DIR [EPISODES]

For the pilots of bench/results/pilots/README.md: how often the sampled policy succeeds, picks
up the key, bumps the locked door and presses APPLY next to it with the key; every message's
episode count; the policy's mean entropy; and its action probabilities before and after the
key pickup (actions: 8 compass moves, PICKUP, APPLY).
"""

from __future__ import annotations

import collections
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from actors.envs import ObsEncoder, decode_message, make_env  # noqa: E402
from actors.model import PolicyNet  # noqa: E402
from cluster.config import load_config  # noqa: E402
from cluster.run_dir import RunDir  # noqa: E402

APPLY = 9


def main() -> None:
    root, episodes = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 40
    torch.set_num_threads(1)
    cfg = load_config(root / "config.yaml", [])
    loaded = RunDir(root).load_latest_checkpoint()
    if loaded is None:
        raise SystemExit(f"{root}: no valid checkpoint")
    state, path = loaded
    learner = state["learner"][0] if isinstance(state["learner"], list) else state["learner"]
    env = make_env(cfg.env.id, penalty_step=cfg.env.penalty_step)
    u = env.unwrapped
    net = PolicyNet(cfg.model, crop_size=cfg.env.crop_size, num_actions=len(u.actions))
    net.load_state_dict(learner["model"])
    net.eval()
    encoder = ObsEncoder(cfg.env.crop_size)
    per_episode: collections.Counter[str] = collections.Counter()
    actions: collections.Counter[tuple[bool, int]] = collections.Counter()
    successes = applied_at_door = 0
    entropies = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=1000 + episode)
        h, first, done, has_key, seen = torch.zeros(1, net.core_hidden), True, False, False, set()
        while not done:
            inputs = {k: torch.as_tensor(v).unsqueeze(0)
                      for k, v in encoder.encode([obs]).policy_inputs().items()}
            with torch.no_grad():
                out = net(inputs, torch.tensor([[first]]), h)
            h, first = out.core_state, False
            p = torch.softmax(out.logits[0, 0], -1)
            entropies.append(float(-(p * p.log()).sum()))
            a = int(torch.multinomial(p, 1))
            actions[(has_key, a)] += 1
            # MiniHack unlocks only when a closed door is among the 8 neighbours.
            applied_at_door += int(a == APPLY and has_key
                                   and u.get_object_direction("closed door") is not None)
            obs, _, term, trunc, info = env.step(a)
            done = term or trunc
            if message := decode_message(obs["message"]):
                seen.add(message)
                has_key = has_key or " - a key named " in message
        per_episode.update(seen)
        successes += int(info.get("end_status", 0)) == 2
    print(f"{path.name}: success {successes}/{episodes}; APPLY with the key next to the closed "
          f"door {applied_at_door} times; mean policy entropy {np.mean(entropies):.3f} "
          f"(uniform {np.log(len(u.actions)):.3f})")
    print("episodes with each message:", dict(per_episode.most_common()))
    for has_key in (False, True):
        n = sum(v for (k, _), v in actions.items() if k == has_key)
        probs = [round(actions[(has_key, a)] / max(n, 1), 3) for a in range(len(u.actions))]
        print(f"action frequencies {'after' if has_key else 'before'} the key ({n} steps):",
              probs)


if __name__ == "__main__":
    main()
