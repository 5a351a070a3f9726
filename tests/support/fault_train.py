"""A training run that kills itself with SIGKILL at a chosen point, for tests/test_faults.py.

    python fault_train.py RUN_DIR PHASE AT

Trains ``recall`` (a C env that snapshots itself, with an LSTM policy, so exact resume covers the
env, the rollout carry and the recurrent state) with the config of :func:`config`, resuming if
RUN_DIR holds checkpoints. PHASE says where the process kills itself, on the AT-th time it gets
there: ``rollout`` (a step sent to the envs), ``learn`` (an optimizer step), ``checkpoint`` (half
of a checkpoint's bytes written to its temporary file), or ``none`` (the test kills it from
outside at a random moment).
"""

from __future__ import annotations

import io
import os
import signal
import sys


def config(run_dir: str):
    from shoal.trainer.config import build_config

    return build_config("recall", overrides={
        "env.num_envs": 16, "env.num_buffers": 2, "env.delay": 2, "train.horizon": 16,
        "train.minibatch_size": 64, "train.total_steps": 16 * 16 * EPOCHS,
        "train.torch_threads": 1, "train.prio_alpha": 0.5, "policy.name": "lstm",
        "policy.hidden": 16, "log.checkpoint_interval": 2, "log.keep_checkpoints": 2,
        "log.dashboard": "off", "log.run_dir": run_dir})


EPOCHS = 6
SENDS_PER_EPOCH = 16 * 2          # horizon x buffer groups
STEPS_PER_EPOCH = 4               # optimizer steps: 16 segments / (64 / 16) per minibatch
CHECKPOINTS = EPOCHS // 2


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def after(count: int, fn):
    calls = [0]

    def wrapped(*args, **kwargs):
        calls[0] += 1
        if calls[0] == count:
            die()
        return fn(*args, **kwargs)
    return wrapped


def main(run_dir: str, phase: str, at: int) -> None:
    import torch

    from shoal.trainer.checkpoint import list_checkpoints
    from shoal.trainer.ppo import Trainer

    if phase == "checkpoint":
        real_save = torch.save
        saves = [0]

        def torn_save(obj, f, *args, **kwargs):
            saves[0] += 1
            if saves[0] != at:
                return real_save(obj, f, *args, **kwargs)
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            data = buf.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            os.fsync(f.fileno())
            die()

        torch.save = torn_save
    if list_checkpoints(run_dir):
        trainer = Trainer.resume(run_dir)
    else:
        trainer = Trainer(config(run_dir))
    if phase == "rollout":
        trainer.env.send = after(at, trainer.env.send)
    elif phase == "learn":
        trainer.optimizer.step = after(at, trainer.optimizer.step)
    print("training", flush=True)
    trainer.train()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
