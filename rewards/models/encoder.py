"""ONI's caption encoder: message bytes -> embedding -> 1-D convolutions -> max-pool -> MLP.

Tensors in, tensors out. Padding is masked after every convolution, so a caption's output does
not depend on how long the other captions in its batch are. The net's ``state()`` /
``load_state()`` (``actors.checkpointable``) are numpy arrays, so a published reward model
travels through the object store without torch tensors.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

MAX_BYTES = 256  # NLE's message buffer (actors.fragment.MESSAGE_SIZE)


def encode_bytes(captions: Sequence[str], *, max_len: int = MAX_BYTES) -> np.ndarray:
    """UTF-8 bytes of each caption, truncated and NUL-padded: uint8 [N, max_len]."""
    out = np.zeros((len(captions), max_len), np.uint8)
    for i, c in enumerate(captions):  # runs over unique captions only; the dictionary is small
        b = c.encode("utf-8", "replace")[:max_len]
        out[i, : len(b)] = np.frombuffer(b, np.uint8)
    return out


def to_batch(byte_rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens long [N, L], mask bool [N, L]) trimmed to the longest caption of the batch."""
    lengths = (byte_rows != 0).sum(axis=1)
    width = max(int(lengths.max(initial=0)), 1)
    tokens = torch.from_numpy(byte_rows[:, :width].astype(np.int64))
    return tokens, tokens != 0


class CharCNN(nn.Module):
    """Caption bytes -> ``out_dim`` features (logits or a score)."""

    def __init__(
        self,
        out_dim: int,
        *,
        embed_dim: int = 32,
        channels: int = 64,
        hidden: int = 64,
        num_convs: int = 2,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(256, embed_dim, padding_idx=0)
        dims = [embed_dim] + [channels] * num_convs
        self.convs = nn.ModuleList(
            nn.Conv1d(a, b, kernel_size, padding=kernel_size // 2)
            for a, b in itertools.pairwise(dims)
        )
        self.head = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, out_dim)
        )

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """tokens long [N, L], mask bool [N, L] -> [N, out_dim]."""
        keep = mask.unsqueeze(1).float()  # [N, 1, L]
        x = self.embed(tokens).transpose(1, 2)  # [N, E, L]
        for conv in self.convs:
            x = torch.relu(conv(x)) * keep
        # ReLU outputs are >= 0, so zeroed padding never wins the max.
        return self.head(x.amax(dim=2))

    def state(self) -> dict[str, np.ndarray]:
        """The parameters as numpy copies (safe to publish while training continues)."""
        return {k: v.detach().cpu().numpy().copy() for k, v in self.state_dict().items()}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        # Object-store arrays are read-only; load_state_dict copies into the parameters anyway.
        self.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in state.items()})


def make_net(out_dim: int, *, seed: int) -> CharCNN:
    """A CharCNN whose initial weights depend only on ``seed`` (not on global RNG state)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return CharCNN(out_dim)
