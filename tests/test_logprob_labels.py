"""Log-probability labels train the classification reward model, end to end.

The real SmolLM2-135M-Instruct judge (transformers backend, ``scoring: logprob``) labels NetHack
messages through the annotator core; the labels land in the label store with their
probabilities; the classification model trains on them as soft targets, and its P(helpful)
follows the judge's. A 135M model judges near chance: this proves the path (every caption gets
a probability, and the probabilities, not their rounding, are what the model learns), not the
quality of the labels.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bench.tools.judge_model import DEFAULT_DIR, is_ready
from rewards.annotator import Annotator
from rewards.config import RewardsConfig
from rewards.judges import Judge, make_judge
from rewards.label_store import LabelStore
from rewards.models import reward_model_from_state
from rewards.models.classification import ClassificationRewardModel

pytestmark = pytest.mark.system  # a real LLM judge labels through the annotator

CAPTIONS = [
    "You kill the newt!",
    "You see here 12 gold pieces.",
    "There is a staircase down here.",
    "It's a wall.",
    "It's solid stone.",
    "You hear some noises in the distance.",
]  # few: one forward pass of a ~550-token prompt per caption is most of the test's time


def _cfg() -> RewardsConfig:
    cfg = RewardsConfig()
    cfg.judge.backend = "transformers"
    cfg.judge.transformers.model = str(DEFAULT_DIR)
    cfg.judge.scoring = "logprob"
    cfg.judge.batch_size = len(CAPTIONS)  # one step, one forward pass
    cfg.annotator.canary_every = 0  # every caption asked is one of ours
    cfg.model.kind = "classification"
    cfg.model.holdout_fraction = 0.0  # six captions: fit them all
    cfg.model.train_every_labels = len(CAPTIONS)  # one fit, once every caption is labelled
    cfg.model.train_steps = 300  # about a second
    return cfg


@pytest.fixture(scope="module")
def judge() -> Iterator[Judge]:
    if not is_ready():
        pytest.skip(f"the judge model is not built at {DEFAULT_DIR}: run `make judge-model`")
    judge = make_judge(_cfg().judge, env_id="NetHackScore-v0")
    yield judge
    judge.close()


def test_logprob_labels_train_the_classification_model_on_soft_targets(
    tmp_path: Path, judge: Judge
) -> None:
    cfg = _cfg()
    annotator = Annotator(cfg, judge=judge, store=LabelStore(tmp_path))
    annotator.submit(CAPTIONS)
    while annotator.queue_depth():
        annotator.tick()  # a full batch: asked at once, then the round its labels make due
    stats = annotator.stats()
    assert stats["labels_total"] == len(CAPTIONS) and stats["parse_failures_total"] == 0
    assert stats["soft_label_fraction"] == 1.0
    annotator.flush()

    labels = LabelStore(tmp_path).labels()  # reloaded from disk: the probabilities are durable
    prob = dict(zip(labels.column("caption").to_pylist(), labels.column("prob").to_pylist(),
                    strict=True))
    assert sorted(prob) == sorted(CAPTIONS)
    target = np.array([prob[c] for c in CAPTIONS])
    assert ((target > 0) & (target < 1)).all()
    assert labels.column("label").to_pylist() == [prob[c] > 0.5 for c in
                                                  labels.column("caption").to_pylist()]
    assert stats["judge_prob_mean"] == pytest.approx(target.mean())
    # The judge does not give every caption the same probability: there is something to fit.
    assert target.max() - target.min() > 0.02, target

    version, state = annotator.reward_model()
    assert version == 1 and state is not None
    model = reward_model_from_state(state)
    assert isinstance(model, ClassificationRewardModel)
    predicted = model.probabilities(CAPTIONS)
    # Trained on the probabilities, the model reproduces them, not their rounding to 0 or 1
    # (hard labels would push every P(helpful) to an extreme).
    assert np.corrcoef(predicted, target)[0, 1] > 0.99, (predicted, target)
    assert np.abs(predicted - target).max() < 0.01, (predicted, target)
