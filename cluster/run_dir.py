"""The run folder, ``runs/<name>/``, and atomic writes into it.

    config.yaml        the resolved config (no secrets: keys come from the environment)
    metrics.parquet    one row per report interval
    events.out.tfevents.*  the same rows as TensorBoard scalars (cluster.tensorboard)
    checkpoints/       ckpt-<update>.pt, each with a .sha256 beside it; the newest valid wins
    curve.png          the learning curve against the random baseline
    summary.json       the final summary
    report.md, report.png  the run's panels and summary (cluster.report, at the end)
    labels/            the annotation service's label store (when it runs)
    wandb/, wandb_run_id   W&B's files and the id of the run's one W&B run (cluster.tracking,
                       when run.wandb is on)

Every file oniray writes here (wandb writes its own) goes to a temporary name in the same
folder, fsynced, then renamed over the target, so a kill at any moment leaves either the old
file or the new one, never a torn one.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = 1


class IncompatibleCheckpointError(ValueError):
    """A checkpoint written by an oniray whose checkpoint format this one cannot read."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself must survive a power cut
    finally:
        os.close(dir_fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


class RunDir:
    """Paths of one run and the writers for its files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.checkpoints = root / "checkpoints"
        self.config = root / "config.yaml"
        self.metrics = root / "metrics.parquet"
        self.curve = root / "curve.png"
        self.summary = root / "summary.json"
        self.labels = root / "labels"

    @classmethod
    def create(cls, out_dir: str, name: str) -> RunDir:
        root = Path(out_dir) / name
        if root.exists() and any(root.iterdir()):
            raise FileExistsError(
                f"run folder {root} exists; pick another run.name or resume it with --resume"
            )
        root.mkdir(parents=True, exist_ok=True)
        return cls(root)

    # ---- metrics -------------------------------------------------------------------------
    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics.exists():
            return []
        return pq.read_table(self.metrics).to_pylist()

    def write_metrics(self, rows: list[dict[str, Any]]) -> None:
        """Rewrite the metrics file with every row so far (small: one row per interval)."""
        columns = sorted({key for row in rows for key in row})
        table = pa.Table.from_pylist([{c: row.get(c) for c in columns} for row in rows])
        sink = io.BytesIO()
        pq.write_table(table, sink)
        atomic_write_bytes(self.metrics, sink.getvalue())

    def write_summary(self, summary: dict[str, Any]) -> None:
        atomic_write_text(self.summary, json.dumps(summary, indent=2, sort_keys=True) + "\n")

    # ---- checkpoints -----------------------------------------------------------------------
    def save_checkpoint(self, state: dict[str, Any], *, update: int, keep: int = 3) -> Path:
        """Write ``ckpt-<update>.pt`` and its checksum atomically; keep the newest ``keep``."""
        buffer = io.BytesIO()
        torch.save({"format": CHECKPOINT_FORMAT, "saved_at": time.time(), **state}, buffer)
        data = buffer.getvalue()
        path = self.checkpoints / f"ckpt-{update:09d}.pt"
        atomic_write_bytes(path, data)
        # The checksum goes second: a checkpoint without one is incomplete and never loaded.
        atomic_write_text(path.with_suffix(".sha256"), hashlib.sha256(data).hexdigest() + "\n")
        for old in self._checkpoint_paths()[:-keep]:
            old.unlink(missing_ok=True)
            old.with_suffix(".sha256").unlink(missing_ok=True)
        return path

    def _checkpoint_paths(self) -> list[Path]:
        pattern = re.compile(r"ckpt-(\d+)\.pt$")
        paths = [p for p in self.checkpoints.glob("ckpt-*.pt") if pattern.search(p.name)]
        return sorted(paths, key=lambda p: int(pattern.search(p.name).group(1)))

    def newest_checkpoint_name(self) -> str | None:
        """The newest checkpoint file with a checksum (not verified: for messages)."""
        paths = [p for p in self._checkpoint_paths() if p.with_suffix(".sha256").exists()]
        return paths[-1].name if paths else None

    def load_latest_checkpoint(self) -> tuple[dict[str, Any], Path] | None:
        """The newest checkpoint whose checksum matches; corrupt ones are skipped, loudly."""
        for path in reversed(self._checkpoint_paths()):
            digest_path = path.with_suffix(".sha256")
            data = path.read_bytes()
            if not digest_path.exists():
                log.warning("checkpoint %s has no checksum (partial write): skipping it", path)
                continue
            if hashlib.sha256(data).hexdigest() != digest_path.read_text().strip():
                log.warning("checkpoint %s fails its checksum (corrupt): using an older one", path)
                continue
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
            if state.get("format") != CHECKPOINT_FORMAT:
                raise IncompatibleCheckpointError(
                    f"checkpoint {path} has format {state.get('format')}, this oniray reads "
                    f"format {CHECKPOINT_FORMAT}: it was written by an incompatible version"
                )
            return state, path
        return None
