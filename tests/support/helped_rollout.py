"""A fused rollout collected with a second thread joining the call midway (the learner's
``FusedRollout._help_collect`` once its update is done; shoal/envs/vec_rollout.h)."""

import threading


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
