"""A fused rollout collected with a second thread joining the call midway (the learner's
``FusedRollout._help_collect`` once its update is done; shoal/envs/vec_rollout.h), and the check
that two ways of collecting left the same rollout."""

import threading

import torch

#: the storage fields a fused rollout writes
FIELDS = ("obs", "actions", "starts", "masks", "rewards", "dones", "logprobs", "values",
          "action_masks")


def assert_same_rollout(a, b, where):
    """The storages, recurrent states and episode stats of trainers ``a`` and ``b`` are equal, bit
    for bit (reads the envs' episode stats, which resets them)."""
    for name in FIELDS:
        assert torch.equal(getattr(a.storage, name), getattr(b.storage, name)), f"{where}: {name}"
    if a.state is not None:
        for x, y in zip(a.state + a.storage.state0 + a.storage.state0_next,
                        b.state + b.storage.state0 + b.storage.state0_next):
            assert torch.equal(x, y), f"{where}: recurrent state"
    assert a.env.log() == b.env.log(), f"{where}: episode stats"


def collect_with_helper(trainer, first=1, last=None):
    """Runs ``trainer.fused._call(first, ..., last)`` on a new thread while this one calls
    ``vec_rollout_help`` until that call returns; returns how many blocks this thread ran."""
    errors, helped = [], 0

    def collect():
        try:
            trainer.fused._call(first, None, None, last)
        except BaseException as exc:   # re-raised here
            errors.append(exc)

    worker = threading.Thread(target=collect)
    worker.start()
    while worker.is_alive():
        helped += trainer.fused._help_collect()
    worker.join()
    if errors:
        raise errors[0]
    return helped
