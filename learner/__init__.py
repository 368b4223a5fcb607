"""The learner side of oniray: fragments in, trained policy weights out.

It trains ``actors.model.PolicyNet`` (the network the rollout actors act with).

    vtrace.py         V-trace targets (pure function)
    losses.py         APPO's policy, value and entropy losses (pure functions)
    config.py         LearnerConfig (the `learner` section) and what a learner reads
    batch.py          fragment RecordBatch -> zero-copy torch tensors
    appo.py           Learner: the APPO update, weights and checkpoints (no Ray)
    learner_group.py  LearnerActor / LearnerGroup: the Ray shell, data-parallel learners
"""
