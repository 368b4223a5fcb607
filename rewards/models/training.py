"""What the two char-CNN reward models share: minibatch Adam training and batched evaluation.

Consumes a :class:`rewards.models.encoder.CharCNN`, and for training the model's config, the
number of training examples and the loss of a minibatch (given its indices). Emits the mean of
the last losses, or one float32 per caption of the net's output. The models differ only in
what a minibatch is (captions with targets, or pairs) and in which output they read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from rewards.config import RewardModelConfig
from rewards.models.encoder import CharCNN, encode_bytes, to_batch

SCORE_BATCH = 1024  # captions per forward pass when evaluating: bounds memory, not results


class MinibatchTrainer:
    """A net's Adam optimiser and the RNG that draws its minibatches.

    Both are kept across fits, so a retrain continues where the previous fit stopped; neither
    is published (a model's ``state()`` holds the net alone), so a model rebuilt from its
    state trains afresh.
    """

    def __init__(self, net: CharCNN, *, seed: int) -> None:
        self.net = net
        self.rng = np.random.default_rng(seed)
        self.opt: torch.optim.Optimizer | None = None  # made on the first fit, with its lr

    def fit(
        self, cfg: RewardModelConfig, n: int, loss_of: Callable[[np.ndarray], torch.Tensor]
    ) -> float:
        """``cfg.train_steps`` Adam steps, each on ``min(cfg.batch_size, n)`` indices drawn
        with replacement from ``range(n)`` (``n`` > 0); the mean loss of the last 10 steps."""
        if self.opt is None:
            self.opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        self.net.train()
        losses = []
        for _ in range(cfg.train_steps):
            loss = loss_of(self.rng.integers(0, n, min(cfg.batch_size, n)))
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            losses.append(loss.item())
        return float(np.mean(losses[-10:]))


def evaluate(
    net: CharCNN, captions: Sequence[str], read: Callable[[torch.Tensor], torch.Tensor]
) -> np.ndarray:
    """``read(net output)`` [n] of each caption, float32 [N]: in eval mode, without
    gradients, :data:`SCORE_BATCH` captions at a time."""
    rows = encode_bytes(captions)
    out = np.empty(len(captions), np.float32)
    net.eval()
    with torch.no_grad():
        for i in range(0, len(captions), SCORE_BATCH):
            s = slice(i, min(i + SCORE_BATCH, len(captions)))
            out[s] = read(net(*to_batch(rows[s]))).numpy()
    return out
