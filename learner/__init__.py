"""The learner side of oniray: fragments in, trained policy weights out.

It trains ``actors.model.PolicyNet`` (the network the rollout actors act with).

    vtrace.py         V-trace targets (pure function)
    losses.py         APPO's policy, value and entropy losses (pure functions)
    config.py         LearnerConfig (the `learner` section) and what a learner reads
    batch.py          fragment RecordBatch -> zero-copy torch tensors; Batch, the named step
                      views (step t beside row t + 1) every consumer reads
    collective.py     cross-rank gradient and statistics reductions (torch.distributed)
    intrinsic.py      IntrinsicScorer: the reward model's scores and RND's novelty of a batch
    appo.py           Learner: the APPO update, weights and state (no Ray)
    learner_group.py  LearnerActor / LearnerGroup: the Ray shell, data-parallel learners
"""
