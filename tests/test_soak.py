"""Smoke tier: the fault-injection soak (bench/soak.py), short: two minutes, one fault of each
kind (a rollout actor and the annotator killed with SIGKILL, the judge server killed and
restarted), then the audit: step accounting, labels on disk, SPS recovery, resume.

The long version is ``make soak`` (15 minutes, three faults of each kind).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import soak

pytestmark = pytest.mark.cluster


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_minute_soak_survives_one_fault_of_each_kind(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    code = soak.main(["--minutes", "2", "--faults-per-kind", "1", "--out", str(out),
                      "--workdir", str(tmp_path / "work")])
    result = json.loads(out.read_text())
    assert sorted(f["kind"] for f in result["faults"]) == ["annotator", "judge", "rollout"]
    assert result["checks"] == dict.fromkeys(result["checks"], True), (
        result["checks"], result["faults"], result["output_tail"][-2000:],
    )
    assert result["summary"]["actor_restarts"] >= 1
    assert result["summary"]["annotator_restarts"] >= 1
    assert code == 0
