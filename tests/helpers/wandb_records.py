"""Read an offline W&B run back with wandb's own protobuf, no server (tests of cluster/tracking.py).

A ``run-<id>.wandb`` file is a LevelDB-style log: a 7-byte header (``:W&B``, magic 0xBEE1,
version 0), then 32 KiB blocks of records, each a 7-byte header (CRC32C, uint16 length,
type: 1 full, 2 first, 3 middle, 4 last; CRCs not checked) and a chunk of one serialized
``wandb_internal_pb2.Record``. The installed wandb reads these files in its Go core only, so
the framing is parsed here and the payloads decoded by wandb's Python protobuf.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_BLOCK = 32 * 1024
_HEADER = 7  # the file's and each record's
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def records(path: Path) -> list[Any]:
    """Every record of a ``.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a W&B transaction log"
    out, chunks, offset = [], b"", _HEADER
    while offset + _HEADER <= len(data):
        left = _BLOCK - offset % _BLOCK
        if left < _HEADER:  # a block's tail too short for a header is padding
            offset += left
            continue
        _crc, length, kind = struct.unpack_from("<IHB", data, offset)
        if kind == 0:  # zero padding up to the next block
            offset += left
            continue
        chunk = data[offset + _HEADER : offset + _HEADER + length]
        offset += _HEADER + length
        if kind in (_FIRST, _MIDDLE):
            chunks += chunk
            continue
        out.append(pb.Record.FromString(chunks + chunk))
        chunks = b""
    return out


@dataclass
class OfflineRun:
    """What one offline run folder holds, decoded."""

    folder: Path
    run_id: str = ""
    project: str = ""
    group: str = ""
    name: str = ""
    tags: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    exit_code: int | None = None


def read_offline_run(folder: Path) -> OfflineRun:
    """An ``offline-run-<time>-<id>`` folder's run, config, history rows, summary, files."""
    (path,) = folder.glob("run-*.wandb")
    run = OfflineRun(folder)
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.run_id, run.project, run.group = r.run_id, r.project, r.run_group
            run.name, run.tags = r.display_name, list(r.tags)
            run.config.update({i.key: json.loads(i.value_json) for i in r.config.update
                               if i.key != "_wandb"})
        elif kind == "config":
            run.config.update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            run.history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                for i in record.history.item})
        elif kind == "summary":
            run.summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                for i in record.summary.update})
        elif kind == "files":
            run.files += [f.path for f in record.files.files]
        elif kind == "exit":
            run.exit_code = record.exit.exit_code
    return run


def offline_runs(wandb_parent: Path) -> list[OfflineRun]:
    """Every offline run under ``<wandb_parent>/wandb/``, oldest first (the order ``wandb
    sync`` uploads the sessions of one resumed run in)."""
    return [read_offline_run(f) for f in sorted((wandb_parent / "wandb").glob("offline-run-*"))]
