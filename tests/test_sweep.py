"""`shoal sweep`: the search-space parser, and small real sweeps end to end (SQLite and
PostgreSQL storage, several workers, a worker killed mid-trial, two sweeps on one study).

The sweeps train the bandit sanity env for a few thousand steps per trial, so each trial takes a
few seconds (most of it starting the trainer process).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from shoal.sweep import SpaceError, parse_space
from tools_procs import alive
from shoal.trainer.config import build_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---------------------------------------------------------------------------------------------
# the [sweep] table
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base():
    return build_config("bandit")


def test_every_distribution_parses_into_its_optuna_distribution(base):
    optuna = pytest.importorskip("optuna")
    space = parse_space({
        "train.learning_rate": {"distribution": "log_uniform", "low": 1e-4, "high": 1e-2},
        "train": {"ent_coef": {"distribution": "uniform", "low": 0.0, "high": 0.05},
                  "update_epochs": {"distribution": "int", "low": 1, "high": 4},
                  "minibatch_size": {"distribution": "pow2", "low": 64, "high": 1024}},
        "train.optimizer": {"distribution": "categorical", "choices": ["adam", "muon"]},
        "env.num_envs": {"distribution": "int", "low": 16, "high": 128, "log": True},
    }, base)
    dists = space.distributions()
    assert dists["train.learning_rate"] == optuna.distributions.FloatDistribution(1e-4, 1e-2,
                                                                                  log=True)
    assert dists["train.ent_coef"] == optuna.distributions.FloatDistribution(0.0, 0.05)
    assert dists["train.update_epochs"] == optuna.distributions.IntDistribution(1, 4)
    assert dists["log2:train.minibatch_size"] == optuna.distributions.IntDistribution(6, 10)
    assert dists["env.num_envs"] == optuna.distributions.IntDistribution(16, 128, log=True)
    # a drawn exponent becomes the power of two in the config
    values = space.overrides({"log2:train.minibatch_size": 8, "train.optimizer": "muon"})
    assert values == {"train.minibatch_size": 256, "train.optimizer": "muon"}


def test_default_space_when_there_is_no_table_and_keys_can_be_dropped(base):
    default = parse_space(None, base)
    assert {"train.learning_rate", "train.ent_coef", "train.update_epochs",
            "train.total_steps", "train.minibatch_size"} <= set(default.keys())
    # minibatches stay whole segments: powers of two from 8 segments of the horizon up
    mb = next(d for d in default.dimensions if d.key == "train.minibatch_size")
    assert mb.low == 8 * base.train.horizon and mb.low % base.train.horizon == 0
    fewer = parse_space({"defaults": True, "train.gamma": False}, base)
    assert "train.gamma" not in fewer.keys() and len(fewer.keys()) == len(default.keys()) - 1


@pytest.mark.parametrize("table, message", [
    ({"train.learning_rate": {"distribution": "loguniform", "low": 1e-4, "high": 1e-2}},
     "unknown distribution 'loguniform'. Did you mean 'log_uniform'?"),
    ({"train.learning_rat": {"distribution": "uniform", "low": 0, "high": 1}},
     "'train.learning_rat' is not a config key. Did you mean 'train.learning_rate'"),
    ({"learning_rate": {"distribution": "uniform", "low": 0, "high": 1}},
     "write section.key"),
    ({"train.learning_rate": {"low": 0, "high": 1}}, "has no 'distribution'"),
    ({"train.learning_rate": {"distribution": "uniform", "low": 1}}, "needs 'high'"),
    ({"train.learning_rate": {"distribution": "uniform", "low": 1, "high": 0.1}},
     "low=1 is above high=0.1"),
    ({"train.learning_rate": {"distribution": "log_uniform", "low": 0, "high": 0.1}},
     "a log scale needs low > 0"),
    ({"train.minibatch_size": {"distribution": "pow2", "low": 100, "high": 1024}},
     "low=100 is not a power of two (e.g. 128)"),
    ({"train.update_epochs": {"distribution": "int", "low": 1.5, "high": 4}},
     "low=1.5 must be an integer"),
    ({"train.update_epochs": {"distribution": "uniform", "low": 1, "high": 4}},
     "is an integer key: use an int or pow2 distribution"),
    ({"train.optimizer": {"distribution": "categorical", "choices": []}},
     "needs a non-empty list"),
    ({"train.optimizer": {"distribution": "categorical", "choices": ["adam", "sgd"]}},
     "the space reaches 'sgd', which the key refuses"),
    ({"train.gamma": {"distribution": "uniform", "low": 0.9, "high": 1.5}},
     "the space reaches 1.5, which the key refuses"),
    ({"train.gamma": {"distribution": "uniform", "low": 0.9, "high": 0.99, "step": 2}},
     "'step' is not used by a uniform distribution"),
    ({"train.seed": {"distribution": "int", "low": 0, "high": 9}}, "cannot be searched"),
    ({"train.gamma": 0.9}, "must be a table like"),
    ({}, None),
])
def test_parser_errors_name_the_entry_and_the_fix(base, table, message):
    if message is None:  # an empty table means the default space
        assert parse_space(table, base).keys()
        return
    with pytest.raises(SpaceError) as err:
        parse_space(table, base)
    assert message in str(err.value)


def test_a_trial_is_pruned_only_below_the_lower_quartile_after_a_fifth_of_its_budget(base,
                                                                                   tmp_path):
    # docs/sweep.md: "after a fifth of its budget, a trial whose score is below the lower
    # quartile of what 3 or more completed trials had reached at the same cost is pruned"
    from shoal.sweep.study import SweepSettings, _Objective

    settings = SweepSettings(env="bandit", storage="", study="s", out_dir=str(tmp_path))
    objective = _Objective(settings, parse_space(None, base))
    # completed trials' curves [[seconds, steps, score], ...]: at 10 s they had 0.2, 0.4, 0.6, 0.8
    refs = [[[5.0, 500, 0.0], [10.0, 1000, s], [20.0, 2000, s]] for s in (0.2, 0.4, 0.6, 0.8)]
    # lower quartile of (0.2, 0.4, 0.6, 0.8) interpolated: 0.35
    assert objective._hopeless([[10.0, 1000, 0.3]], 5000, refs)
    assert not objective._hopeless([[10.0, 1000, 0.4]], 5000, refs)
    assert not objective._hopeless([[10.0, 999, 0.0]], 5000, refs)       # under a fifth
    assert not objective._hopeless([[10.0, 1000, 0.0]], 5000, refs[:2])  # fewer than 3
    # references that stopped before this cost say nothing about it
    assert not objective._hopeless([[30.0, 1000, 0.0]], 5000, refs)


def test_a_sweep_table_in_a_config_file_does_not_disturb_training_configs(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[train]\nlearning_rate = 0.02\n[sweep]\n"train.gamma" = '
                    '{ distribution = "uniform", low = 0.9, high = 0.99 }\n')
    cfg = build_config("bandit", [str(path)])
    assert cfg.train.learning_rate == 0.02


# ---------------------------------------------------------------------------------------------
# real sweeps
# ---------------------------------------------------------------------------------------------

SPACE = ('[sweep]\n"train.learning_rate" = { distribution = "log_uniform", low = 0.003, '
         'high = 0.03 }\n"train.update_epochs" = { distribution = "int", low = 1, high = 2 }\n')


def _sweep_cmd(tmp_path, *extra: str, steps: int = 4096) -> list[str]:
    space = tmp_path / "space.toml"
    space.write_text(SPACE)
    return [sys.executable, "-m", "shoal", "sweep", "bandit", "--sweep", str(space),
            "--train.total-steps", str(steps), "--heartbeat", "1", *extra]


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=REPO)


def _load(storage: str, name: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=storage)


def _runs(study):
    return [t for t in study.get_trials() if "curve_point_of" not in t.user_attrs]


def test_tiny_sweep_two_workers_sqlite_end_to_end(tmp_path):
    pytest.importorskip("optuna")
    out = tmp_path / "out"
    proc = subprocess.run(_sweep_cmd(tmp_path, "--trials", "4", "--workers", "2", "--out",
                                     str(out)), env=_env(), capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = _load(f"sqlite:///{out / 'study.db'}", "bandit")
    runs = _runs(study)
    assert 4 <= len(runs) <= 5 and all(t.state.name == "COMPLETE" for t in runs), runs
    assert len({t.user_attrs["run_dir"] for t in runs}) == len(runs)
    for t in runs:
        score, cost = t.values
        assert 0.0 <= score <= 1.0 and cost > 0
        assert t.user_attrs["curve"][-1][2] == score       # the curve ends at the score
    # the curves' points are observations of their own
    points = [t for t in study.get_trials() if "curve_point_of" in t.user_attrs]
    assert points and all(p.params == study.trials[p.user_attrs["curve_point_of"]].params
                          for p in points)
    for name in ("best.toml", "pareto.png", "report.html", "front.json"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "report.html").read_text().count("<script") >= 1   # plotly.js inlined
    assert "https://cdn" not in (out / "report.html").read_text()[:2000]
    assert "trial" in proc.stdout and "score" in proc.stdout

    # the best config trains as it is
    run = subprocess.run([sys.executable, "-m", "shoal", "train", "bandit", "--config",
                          str(out / "best.toml"), "--log.dashboard", "off"], env=_env(),
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    best = max((t for t in runs), key=lambda t: (t.values[0], -t.values[1]))
    text = (out / "best.toml").read_text()
    assert f"trial {best.number}," in text

    # running the same command again continues the study: 2 more runs
    proc = subprocess.run(_sweep_cmd(tmp_path, "--trials", str(len(runs) + 2), "--out",
                                     str(out)), env=_env(), capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(_runs(_load(f"sqlite:///{out / 'study.db'}", "bandit"))) == len(runs) + 2


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except FileNotFoundError:
        return []


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_kill_9_of_a_worker_mid_trial_then_resume(tmp_path):
    pytest.importorskip("optuna")
    out = tmp_path / "out"
    storage = f"sqlite:///{out / 'study.db'}"
    cmd = _sweep_cmd(tmp_path, "--trials", "2", "--out", str(out), steps=400_000)
    sweep = subprocess.Popen(cmd, env=_env(), cwd=tmp_path, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        killed = None
        while time.monotonic() < deadline and killed is None:
            time.sleep(0.5)
            try:
                trials = _runs(_load(storage, "bandit"))
            except Exception:  # the sweep has not created the study yet
                continue
            running = [t for t in trials if t.state.name == "RUNNING"
                       and t.user_attrs.get("curve")]
            workers = _children(sweep.pid)
            if running and workers:
                trainers = [c for w in workers for c in _children(w)]
                os.kill(workers[0], signal.SIGKILL)
                killed = running[0].number
        assert killed is not None, "no trial started"
        sweep.wait(60)
        time.sleep(1)
        assert not any(alive(p) for p in trainers), "the killed worker's trainer kept running"
        assert _load(storage, "bandit").trials[killed].state.name == "RUNNING"
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait()
    time.sleep(4)  # past the grace period of 3 heartbeats: the trial is stale
    rerun = _sweep_cmd(tmp_path, "--trials", "2", "--out", str(out), steps=4096)
    proc = subprocess.run(rerun, env=_env(), capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = _runs(_load(storage, "bandit"))
    by_number = {t.number: t for t in runs}
    assert by_number[killed].state.name == "FAIL"
    retries = [t for t in runs if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state.name == "COMPLETE"
    assert retries[0].params == by_number[killed].params
    assert sum(t.state.name == "COMPLETE" for t in runs) == 2


def test_two_sweeps_on_one_storage_share_the_study_without_duplicates(tmp_path):
    pytest.importorskip("optuna")
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    # a heartbeat long enough that a busy machine never makes a live trial look stale (a stale
    # trial is failed and retried, by design: test_kill_9_of_a_worker_mid_trial_then_resume)
    procs = [subprocess.Popen(_sweep_cmd(tmp_path, "--trials", "4", "--storage", storage,
                                         "--study", "shared", "--out", str(tmp_path / f"o{i}"),
                                         "--heartbeat", "30"),
                              env=_env(), cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-3000:]
    runs = _runs(_load(storage, "shared"))
    assert 4 <= len(runs) <= 5, "each sweep stops once the study holds 4 runs"
    dirs = [t.user_attrs["run_dir"] for t in runs]
    assert len(set(dirs)) == len(dirs)
    # both sweeps ran trials, and each trial was trained exactly once
    assert {os.path.basename(os.path.dirname(os.path.dirname(d))) for d in dirs} == {"o0", "o1"}
    for d in dirs:
        assert len(glob.glob(os.path.join(d, "metrics.jsonl"))) == 1
        with open(os.path.join(d, "metrics.jsonl")) as fh:
            epochs = [line.split('"epoch": ')[1].split(",")[0] for line in fh]
        assert epochs == [str(i + 1) for i in range(len(epochs))]


def _postgres_bin() -> str | None:
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(os.path.realpath(found))
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return os.path.dirname(candidates[-1]) if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres(tmp_path):
    """A private PostgreSQL server on a loopback port, run as the postgres user; its URL."""
    bindir = _postgres_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install -y postgresql)")
    pytest.importorskip("psycopg2", reason="needs psycopg2-binary")
    import pwd

    run_as: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run the server as")
        run_as = ["runuser", "-u", "postgres", "--"]
    # pytest's tmp_path is private to this user: the server gets a directory of its own
    root = tempfile.mkdtemp(prefix="shoal-pg-")
    data = os.path.join(root, "data")
    os.mkdir(data)
    if run_as:
        shutil.chown(root, "postgres")
        shutil.chown(data, "postgres")
    port = _free_port()
    started = False
    try:
        init = subprocess.run(run_as + [f"{bindir}/initdb", "-D", data, "-A", "trust", "-U",
                                        "shoal"], capture_output=True, text=True)
        assert init.returncode == 0, init.stdout + init.stderr
        start = subprocess.run(run_as + [f"{bindir}/pg_ctl", "-D", data, "-l",
                                         os.path.join(root, "log"), "-o",
                                         f"-p {port} -k {root} -c listen_addresses=127.0.0.1",
                                         "-w", "start"], capture_output=True, text=True)
        assert start.returncode == 0, start.stdout + start.stderr
        started = True
        yield f"postgresql+psycopg2://shoal@127.0.0.1:{port}/postgres"
    finally:
        if started:
            subprocess.run(run_as + [f"{bindir}/pg_ctl", "-D", data, "-m", "immediate",
                                     "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_sweep_on_a_postgresql_server(tmp_path, postgres):
    pytest.importorskip("optuna")
    out = tmp_path / "out"
    proc = subprocess.run(_sweep_cmd(tmp_path, "--trials", "2", "--workers", "2", "--storage",
                                     postgres, "--out", str(out)), env=_env(),
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = _runs(_load(postgres, "bandit"))
    assert len(runs) >= 2 and all(t.state.name == "COMPLETE" for t in runs)
    assert not (out / "study.db").exists()   # everything went to the server
    assert (out / "best.toml").exists()
