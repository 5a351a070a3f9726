"""benchmarks/sweep_enqueue_base.py: queue the current config as a study's first trial."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

optuna = pytest.importorskip("optuna")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "benchmarks", "sweep_enqueue_base.py")
SPACE = """[sweep]
"env.num_envs" = { distribution = "pow2", low = 32, high = 128 }
"train.learning_rate" = { distribution = "log_uniform", low = 1e-3, high = 3e-2 }
"train.update_epochs" = { distribution = "int", low = 1, high = 3 }
"""


def _queue(tmp_path, *flags):
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    proc = subprocess.run([sys.executable, SCRIPT, "bandit", "--sweep", str(space), "--study",
                           "s", "--storage", storage, *flags], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    return proc, storage


def test_queues_the_shipped_values_and_flags_as_one_waiting_trial(tmp_path):
    # bandit's shipped config: 64 envs, learning rate 0.01; update_epochs given as a flag
    proc, storage = _queue(tmp_path, "--train.update-epochs", "2")
    assert proc.returncode == 0, proc.stderr
    study = optuna.load_study(study_name="s", storage=storage)
    (trial,) = study.get_trials(deepcopy=False)
    assert trial.state == optuna.trial.TrialState.WAITING
    # a queued trial's values are fixed params until a worker runs it
    assert trial.system_attrs["fixed_params"] == {"log2:env.num_envs": 6, "train.learning_rate": 0.01,
                                                  "train.update_epochs": 2}
    assert trial.user_attrs == {"base_config": True}
    assert study.user_attrs["env"] == "bandit"
    # the sweep's first trial runs exactly these values (--trials counts the queued one)
    run = subprocess.run([sys.executable, "-m", "shoal", "sweep", "bandit", "--sweep",
                          str(tmp_path / "space.toml"), "--study", "s", "--storage", storage,
                          "--trials", "2", "--out", str(tmp_path / "out"),
                          "--train.total-steps", "4096"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    runs = [t for t in optuna.load_study(study_name="s", storage=storage).get_trials()
            if "curve_point_of" not in t.user_attrs]
    assert [t.state for t in runs] == [optuna.trial.TrialState.COMPLETE] * 2
    assert runs[0].number == 0 and runs[0].params == {"log2:env.num_envs": 6, "train.learning_rate": 0.01,
                              "train.update_epochs": 2}


def test_a_value_outside_the_space_is_an_error_naming_the_key(tmp_path):
    proc, storage = _queue(tmp_path, "--env.num-envs", "256")
    assert proc.returncode != 0
    assert "env.num_envs = 256 is outside its search range" in proc.stderr
