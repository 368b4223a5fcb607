"""Weights & Biases tracking of a run (``run.wandb``), beside metrics.parquet and TensorBoard.

Consumes: the resolved config, the run folder, the metric rows ``cluster.loop`` writes, and at
the end the summary and the run's files. Emits: one W&B run per training run, in
``run.wandb.mode`` (``offline``: files only, under ``<run folder>/wandb/``, for ``wandb sync``
later; ``online``: streamed to the W&B server). Off by default (``disabled``), and then
``wandb`` is never imported.

One W&B run per run folder: its id is made on the first start and kept in the run folder
(``wandb_run_id``), so a resumed run (``--resume``, ``run.resume=auto``) continues the same
W&B run (``resume="allow"``) instead of starting a second. Each row is logged at its index in
metrics.parquet, which only grows, so the W&B step keeps increasing over every session (and
offline sessions synced in order join up); the charts' x-axis is ``env_steps``.

Only the driver logs (the run loop is the driver's); actors never see a tracker. The API key
is wandb's business: it reads ``WANDB_API_KEY`` or ``wandb login``'s file itself, and the key
is in no config or log of ours.
"""

from __future__ import annotations

import dataclasses
import secrets
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cluster.run_dir import RunDir, atomic_write_text
from cluster.tensorboard import STEP_COLUMN, scalars

if TYPE_CHECKING:
    from cluster.config import OniConfig

ID_FILE = "wandb_run_id"  # in the run folder: the W&B run every session of this folder logs to


class Tracker:
    """An open W&B run: :meth:`log` each metrics row, :meth:`finish` once at the end."""

    def __init__(self, run: Any) -> None:
        self._run = run
        self.id: str = run.id
        self.dir = Path(run.dir).parent  # wandb/<offline-run|run>-<time>-<id>/

    def log(self, row: dict[str, Any], *, index: int) -> None:
        """One metrics row: the columns TensorBoard gets, and env_steps (the charts' x-axis).
        ``index``: the row's place in metrics.parquet, the W&B step."""
        # commit: sent now, not held back until the next step (nor after the final summary).
        self._run.log({STEP_COLUMN: int(row[STEP_COLUMN]), **scalars(row)}, step=index,
                      commit=True)

    def finish(self, *, summary: dict[str, Any] | None = None, files: Iterable[Path] = (),
               failed: bool = False) -> None:
        """Close the run with the summary's numbers and a copy of each file that exists (the
        report, the curve). A second call does nothing."""
        if self._run is None:
            return
        run, self._run = self._run, None
        if summary:
            run.summary.update({k: v for k, v in summary.items()
                                if isinstance(v, bool | int | float | str)})
        for path in files:
            if path.exists():
                # A copy, not wandb's symlink: this session's files stay as they were when a
                # later session rewrites the originals.
                copy = Path(run.dir) / path.name
                shutil.copy2(path, copy)
                run.save(str(copy), base_path=run.dir, policy="now")
        run.finish(exit_code=1 if failed else 0)
        if run.offline:  # quiet=True leaves out wandb's own hint
            print(f"W&B: offline run {self.id} in {self.dir}; upload it with: wandb sync "
                  f"{self.dir}", flush=True)
        import wandb

        if wandb.run is None:  # no other W&B run in this process: stop wandb's service too
            wandb.teardown()


def start(cfg: OniConfig, run_dir: RunDir, *,
          rows: Sequence[dict[str, Any]] = ()) -> Tracker | None:
    """Open (or, for a run folder that has one, continue) the run's W&B run; None when
    ``run.wandb.mode`` is disabled. ``rows``: the run folder's metric rows so far, logged
    first when the W&B run is new (tracking turned on for a resumed run)."""
    settings = cfg.run.wandb
    if settings.mode == "disabled":
        return None
    import wandb  # only here: a run without tracking never imports it

    id_path = run_dir.root / ID_FILE
    new = not id_path.exists()
    if new:
        atomic_write_text(id_path, secrets.token_hex(6) + "\n")
    run_id = id_path.read_text().strip()
    folder = Path(settings.dir) if settings.dir else run_dir.root
    folder.mkdir(parents=True, exist_ok=True)
    # resume="allow", not "must": the first session makes the run, and a run whose earlier
    # sessions were offline (never synced) must still open online; the id alone keeps it one.
    run = wandb.init(
        mode=settings.mode, project=settings.project, entity=settings.entity,
        group=settings.group, tags=list(settings.tags), name=run_dir.root.name,
        id=run_id, resume="allow", dir=str(folder), config=dataclasses.asdict(cfg),
        settings=wandb.Settings(quiet=True),  # no sparkline tables at the end of the output
    )
    # Every metric against environment steps, not W&B's own step (the row's index).
    run.define_metric(STEP_COLUMN)
    run.define_metric("*", step_metric=STEP_COLUMN)
    tracker = Tracker(run)
    if new:
        for index, row in enumerate(rows):
            tracker.log(row, index=index)
    return tracker
