"""Training leaves process-wide state as it found it: torch's and numpy's global RNGs, torch's
thread count and the signal handlers. The trainer seeds its own copies, so its results do not
depend on what the caller did with the global RNGs either."""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import torch

import shoal
from shoal.trainer.eval_cli import evaluate


def run(tmp_path, name: str, **extra) -> dict:
    return shoal.train("template", env_num_envs=8, train_horizon=8, train_minibatch_size=32,
                       train_total_steps=8 * 8 * 3, train_torch_threads=1, log_dashboard="off",
                       log_run_dir=str(tmp_path / name), **extra)


def snapshot() -> tuple:
    return (torch.get_rng_state(), np.random.get_state(), torch.get_num_threads(),
            signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM))


def same(a: tuple, b: tuple) -> bool:
    return (torch.equal(a[0], b[0]) and a[1][0] == b[1][0] and np.array_equal(a[1][1], b[1][1])
            and a[1][2:] == b[1][2:] and a[2:] == b[2:])


def test_train_and_eval_leave_process_state_as_found(tmp_path):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(3)                   # neither the default nor the trainer's 1
        torch.manual_seed(123)
        np.random.seed(7)
        before = snapshot()
        run(tmp_path, "a")
        assert same(before, snapshot())
        shoal.train("template", resume=str(tmp_path / "a"), train_total_steps=8 * 8 * 4,
                    log_dashboard="off")
        assert same(before, snapshot())
        evaluate(str(tmp_path / "a"), episodes=4)
        assert same(before, snapshot())
    finally:
        torch.set_num_threads(threads)


def test_trainer_results_do_not_depend_on_the_callers_global_rngs(tmp_path):
    torch.manual_seed(1)
    np.random.seed(1)
    run(tmp_path, "x")
    torch.manual_seed(2)
    np.random.seed(2)
    torch.rand(5)
    run(tmp_path, "y")
    lines = [[{k: v for k, v in json.loads(line).items() if k not in ("sps", "sps_avg",
              "elapsed", "remaining", "time")} for line in open(tmp_path / d / "metrics.jsonl")]
             for d in ("x", "y")]
    assert lines[0] == lines[1] and len(lines[0]) == 3
    assert os.path.exists(tmp_path / "x" / "summary.json")
