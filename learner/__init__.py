"""The learner side of oniray: fragments in, trained policy weights out.

    vtrace.py         V-trace targets (pure function)
    losses.py         APPO's policy, value and entropy losses (pure functions)
    model.py          PolicyNet, the NLE policy network (also used by the rollout actors)
    batch.py          fragment RecordBatch -> zero-copy torch tensors
    appo.py           Learner: the APPO update, weights and checkpoints (no Ray)
    learner_group.py  LearnerActor / LearnerGroup: the Ray shell, data-parallel learners
"""
