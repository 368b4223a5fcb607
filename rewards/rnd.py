"""Random Network Distillation (Burda et al. 2018) on NetHack observations.

Consumes observations: ``glyph_crop`` (int16 [N, C, C] glyph ids around the agent) and
``blstats`` (float32 [N, 27]); the learner passes the observation each step led to
(``learner.batch.Batch.next_glyph_crop``). Emits a novelty bonus per observation: the squared
error of a trained predictor against a fixed, randomly initialised target network, divided by
the running std of that error (so ``RNDConfig.coef`` means the same early and late in
training).

Plain torch and pure functions: ``RND`` is an ``nn.Module``, :func:`fit_step` one optimiser
step, :func:`prediction_error` the raw error, :func:`rnd_bonus` the normalised bonus with the
statistics it returns updated.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from actors.fragment import BLSTATS_SIZE, MAX_GLYPH
from rewards.running_stats import RunningMeanStd

_GLYPH_EMBED = 8


class _Encoder(nn.Module):
    def __init__(self, crop_size: int, out_dim: int) -> None:
        super().__init__()
        self.glyphs = nn.Embedding(MAX_GLYPH + 1, _GLYPH_EMBED)
        self.conv = nn.Sequential(
            nn.Conv2d(_GLYPH_EMBED, 16, 3, padding=1),
            nn.LeakyReLU(),
            nn.Conv2d(16, 16, 3, stride=2, padding=1),
            nn.LeakyReLU(),
            nn.Flatten(),
        )
        side = (crop_size + 1) // 2
        self.blstats = nn.Sequential(nn.Linear(BLSTATS_SIZE, 32), nn.LeakyReLU())
        self.head = nn.Sequential(
            nn.Linear(16 * side * side + 32, 128), nn.LeakyReLU(), nn.Linear(128, out_dim)
        )

    def forward(self, glyph_crop: torch.Tensor, blstats: torch.Tensor) -> torch.Tensor:
        g = self.glyphs(glyph_crop.long()).permute(0, 3, 1, 2)  # [N, E, C, C]
        # Raw blstats span 0..1e6 (gold, turn); a signed log keeps them in a trainable range.
        b = torch.sign(blstats) * torch.log1p(blstats.abs())
        return self.head(torch.cat([self.conv(g), self.blstats(b)], dim=1))


class RND(nn.Module):
    """A frozen random target and a trained predictor of the same architecture."""

    def __init__(self, *, crop_size: int, embedding_dim: int, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.target = _Encoder(crop_size, embedding_dim)
            self.predictor = _Encoder(crop_size, embedding_dim)
            # PyTorch's default init shrinks activations layer by layer, so the target's output
            # would be mostly its biases: the same for every observation, learned once and for
            # all. Orthogonal weights and zero biases (as in the RND paper) keep it input-driven.
            for module in self.modules():
                if isinstance(module, nn.Linear | nn.Conv2d):
                    nn.init.orthogonal_(module.weight, gain=2**0.5)
                    nn.init.zeros_(module.bias)
        self.target.requires_grad_(False)

    def forward(self, glyph_crop: torch.Tensor, blstats: torch.Tensor) -> torch.Tensor:
        """Per-observation prediction error, float [N]: glyph_crop [N, C, C], blstats [N, 27]."""
        with torch.no_grad():
            target = self.target(glyph_crop, blstats)
        return (self.predictor(glyph_crop, blstats) - target).pow(2).mean(dim=1)


def fit_step(
    rnd: RND,
    optimizer: torch.optim.Optimizer,
    glyph_crop: torch.Tensor,
    blstats: torch.Tensor,
    *,
    reduce_gradients: Callable[[list[nn.Parameter]], None] | None = None,
) -> float:
    """One optimiser step of the predictor on a batch; returns the loss before the step.

    ``reduce_gradients`` runs between backward and step: data-parallel learners average the
    predictor's gradients there, so every rank's predictor takes the same step.
    """
    loss = rnd(glyph_crop, blstats).mean()
    optimizer.zero_grad()
    loss.backward()
    if reduce_gradients is not None:
        reduce_gradients(list(rnd.predictor.parameters()))
    optimizer.step()
    return float(loss.item())


def prediction_error(rnd: RND, glyph_crop: torch.Tensor, blstats: torch.Tensor) -> np.ndarray:
    """The predictor's squared error per observation, float32 [N], without a gradient."""
    with torch.no_grad():
        return rnd(glyph_crop, blstats).numpy()


def rnd_bonus(
    rnd: RND, stats: RunningMeanStd, glyph_crop: torch.Tensor, blstats: torch.Tensor
) -> tuple[np.ndarray, RunningMeanStd]:
    """(error / running std of errors as float32 [N], the statistics updated with this batch)."""
    error = prediction_error(rnd, glyph_crop, blstats)
    stats = stats.update(error)
    return stats.scale(error), stats
