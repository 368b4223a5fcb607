"""TensorBoard event files for a run: every metrics row, as scalars, beside metrics.parquet.

Consumes: the rows ``cluster.progress.metrics_row`` makes. Emits: ``events.out.tfevents.*``
files in the run folder, so ``tensorboard --logdir runs/`` shows every run (TensorBoard itself
is the optional ``tensorboard`` extra; the files are written by tensorboardX, which needs only
protobuf). Each numeric column becomes a scalar of the same name, stepped by ``env_steps``;
a resumed run appends a new file to the same folder, which TensorBoard reads as one run.

:func:`read_scalars` reads the files back without TensorBoard (tests, scripts).
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Any

STEP_COLUMN = "env_steps"


class EventWriter:
    """Appends metric rows to the run folder's event file."""

    def __init__(self, run_root: Path) -> None:
        from tensorboardX import SummaryWriter

        # flush_secs: rows come every report_every_s; flush() after each row makes them
        # visible at once, this is only a backstop.
        self._writer = SummaryWriter(logdir=str(run_root), flush_secs=30)

    def write_row(self, row: dict[str, Any]) -> None:
        step = int(row[STEP_COLUMN])
        for key, value in scalars(row).items():
            self._writer.add_scalar(key, value, global_step=step)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """The row's scalars, as TensorBoard (and W&B, ``cluster.tracking``) get them: every finite
    number but the step column; None, NaN, booleans and text are left out."""
    return {key: float(value) for key, value in row.items()
            if key != STEP_COLUMN and _is_number(value)}


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)
            and math.isfinite(value))


def read_scalars(run_root: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the folder's event files: tag -> [(step, value)], in file order.

    Parses the TFRecord framing (length, masked CRC, payload, masked CRC; CRCs not checked)
    and decodes each payload with tensorboardX's own ``Event`` protobuf.
    """
    from tensorboardX.proto.event_pb2 import Event

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(run_root.glob("events.out.tfevents.*")):
        data, offset = path.read_bytes(), 0
        while offset + 12 <= len(data):
            (length,) = struct.unpack_from("<Q", data, offset)
            payload = data[offset + 12 : offset + 12 + length]
            offset += 12 + length + 4
            event = Event.FromString(payload)
            for value in event.summary.value:
                out.setdefault(value.tag, []).append((int(event.step), float(value.simple_value)))
    return out
