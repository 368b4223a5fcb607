"""Random Network Distillation (Burda et al. 2018) on NetHack observations.

Consumes the fragment's ``glyph_crop`` (int16 [C, C] glyph ids around the agent) and
``blstats`` (float32 [27]) of the step rows. Emits a novelty bonus per step: the squared error
of a trained predictor against a fixed, randomly initialised target network, divided by the
running std of that error (so ``RNDConfig.coef`` means the same early and late in training).

Plain torch and pure functions: ``RND`` is an ``nn.Module``, :func:`fit_step` one optimiser
step, :func:`rnd_bonus` the normalised bonus with the statistics it returns updated.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch
from torch import nn

from actors.fragment import BLSTATS_SIZE, MAX_GLYPH, step_rows
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
    rnd: RND, optimizer: torch.optim.Optimizer, glyph_crop: torch.Tensor, blstats: torch.Tensor
) -> float:
    """One optimiser step of the predictor on a batch; returns the loss before the step."""
    loss = rnd(glyph_crop, blstats).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return float(loss.item())


def rnd_bonus(
    rnd: RND, stats: RunningMeanStd, glyph_crop: torch.Tensor, blstats: torch.Tensor
) -> tuple[np.ndarray, RunningMeanStd]:
    """(error / running std of errors as float32 [N], the statistics updated with this batch)."""
    with torch.no_grad():
        error = rnd(glyph_crop, blstats).numpy()
    stats = stats.update(error)
    return stats.scale(error), stats


def fragment_observations(fragment: pa.RecordBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(glyph_crop int16 [T*E, C, C], blstats float32 [T*E, 27]) of the step rows."""
    steps = step_rows(fragment)
    # Arrow buffers are read-only and torch wants writable memory: one copy, into torch.
    glyphs = np.array(steps.column("glyph_crop").to_numpy_ndarray(), copy=True)
    blstats = np.array(steps.column("blstats").to_numpy_ndarray(), copy=True)
    return torch.from_numpy(glyphs), torch.from_numpy(blstats)
