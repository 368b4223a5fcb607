"""Which messages earned the judged reward: per batch on the learner, summed by the driver."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from cluster.summary import add_rewarded, rewarded_lines, top_rewarded
from rewards.scoring import credit_by_message


def test_credit_by_message_sums_credit_and_counts_credited_steps() -> None:
    messages = pa.array(["key", None, "wall", "key", "door", "key"])
    credit = np.array([1.0, 5.0, 0.0, 0.5, -0.25, 0.0])
    got = credit_by_message(messages, credit)
    # null rows never count; "wall" earned nothing; "key" has 3 rows but 2 credited steps
    assert got == {"key": (1.5, 2), "door": (-0.25, 1)}
    assert credit_by_message(pa.chunked_array([messages]), credit) == got
    assert credit_by_message(pa.array([], pa.string()), np.zeros(0)) == {}
    with pytest.raises(ValueError, match="5 credits for 6 messages"):
        credit_by_message(messages, credit[:5])


def test_the_run_table_adds_batches_and_forgets_the_least_credited(monkeypatch) -> None:
    import cluster.summary as summary

    table: dict[str, list[float]] = {}
    add_rewarded(table, {"key": [1.5, 2.0], "door": [0.25, 1.0]})
    add_rewarded(table, {"key": [0.5, 1.0], "stairs": [3.0, 1.0]})
    assert table == {"key": [2.0, 3.0], "door": [0.25, 1.0], "stairs": [3.0, 1.0]}
    assert top_rewarded(table, 2) == [{"message": "stairs", "reward": 3.0, "steps": 1},
                                      {"message": "key", "reward": 2.0, "steps": 3}]
    monkeypatch.setattr(summary, "REWARDED_KEPT", 1)  # beyond 2 entries, keep the top 1
    add_rewarded(table, {})
    assert table == {"stairs": [3.0, 1.0]}
    lines = rewarded_lines({"rewarded_messages": top_rewarded(table)})
    assert lines[0].startswith("messages that earned the judged reward")
    assert lines[1].split() == ["3.00", "1", "stairs"]
    assert rewarded_lines({"rewarded_messages": []}) == []


def test_the_learner_reports_the_credit_of_each_message_of_its_batch() -> None:
    """A label table rewards one message: the scorer's REWARDED_MESSAGES is c_int / N^beta
    summed over the steps that led to it and did not end their episode (by hand)."""
    import torch

    from cluster.config import OniConfig
    from learner.batch import fragment_tensors, make_batch
    from learner.intrinsic import REWARDED_MESSAGES, IntrinsicScorer
    from rewards.models import make_reward_model
    from tests.helpers.fragments import MESSAGES, make_fragment

    cfg = OniConfig()
    cfg.rewards.intrinsic_coef, cfg.rewards.count_exponent = 0.5, 1.0
    cfg.rewards.model.kind = "retrieval"
    model = make_reward_model(cfg.rewards.model)
    helpful = MESSAGES[1]
    labels = pa.table({"caption": [m for m in MESSAGES if m],
                       "label": [m == helpful for m in MESSAGES if m]})
    model.fit(labels=labels)
    scorer = IntrinsicScorer(cfg.rewards, crop_size=cfg.env.crop_size)
    scorer.set_model(1, model.state())
    fragment = make_fragment(T=8, E=4, seed=3)
    batch = make_batch([fragment])
    got = scorer(batch).metrics[REWARDED_MESSAGES]
    x = fragment_tensors(fragment)
    done = (x.terminated | x.truncated)[:8].reshape(-1)
    count = x.msg_count[1:].reshape(-1).float()
    nexts = batch.next_message.to_pylist()
    rows = [i for i, m in enumerate(nexts) if m == helpful and not done[i]]
    assert rows, "the fragment must lead to the helpful message"
    want = sum(0.5 / count[i].item() for i in rows)
    assert list(got) == [helpful]
    assert got[helpful] == [pytest.approx(want, rel=1e-5), float(len(rows))]
    assert torch.is_tensor(scorer(batch).judged)


def test_the_scorer_reports_the_same_keys_before_a_model_as_after() -> None:
    """Before a model arrives the intrinsic statistics are None, not missing: a run's metrics
    columns must not depend on whether a model arrived before a report (the Ray run once
    lacked two columns its in-process twin had)."""
    from cluster.config import OniConfig
    from learner.batch import make_batch
    from learner.intrinsic import (
        INTRINSIC_MEAN,
        INTRINSIC_ZERO_FRACTION,
        REWARDED_MESSAGES,
        IntrinsicScorer,
    )
    from rewards.models import make_reward_model
    from tests.helpers.fragments import MESSAGES, make_fragment

    cfg = OniConfig()
    cfg.rewards.intrinsic_coef = 0.5
    cfg.rewards.model.kind = "retrieval"
    scorer = IntrinsicScorer(cfg.rewards, crop_size=cfg.env.crop_size)
    batch = make_batch([make_fragment(T=8, E=4, seed=3)])
    before = scorer(batch)
    assert before.judged is None
    assert before.metrics[INTRINSIC_MEAN] is None
    assert before.metrics[INTRINSIC_ZERO_FRACTION] is None
    model = make_reward_model(cfg.rewards.model)
    model.fit(labels=pa.table({"caption": [m for m in MESSAGES if m],
                               "label": [m == MESSAGES[1] for m in MESSAGES if m]}))
    scorer.set_model(1, model.state())
    after = scorer(batch).metrics
    assert set(after) - {REWARDED_MESSAGES} == set(before.metrics)
    assert 0.0 <= after[INTRINSIC_ZERO_FRACTION] < 1.0 and after[INTRINSIC_MEAN] > 0
