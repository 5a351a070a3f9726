"""Running a sweep: the study in its storage, the trials, their curves, pruning and retries.

The study is an Optuna study with two objectives, score (maximised) and wall-clock cost in
seconds of training (minimised); its sampler is Optuna's multi-objective TPE, which models the
good and bad regions of each objective and proposes points that extend the Pareto front. TPE is
chosen over NSGA-II because a sweep here has tens of trials, not the hundreds that a genetic
population needs, and over a single objective with a cost cap because the front itself is the
answer: the cheapest setting for every score.

Each trial runs ``shoal train`` as a subprocess (a crash or a ``kill -9`` of the trainer cannot
take the worker down) in ``<out>/trials/<number>/`` and reads its ``metrics.jsonl`` as it grows:

* every epoch is a point ``(seconds, score)`` of the trial's curve, kept in the trial's
  ``curve`` attribute;
* when the trial ends, a few points of its curve (a quarter, half, three quarters of the way)
  are added to the study as observations of their own (completed trials with the same parameters
  and the values at that point, marked ``curve_point_of``): a run that reached 8 after 60 s tells
  the sampler that these settings reach 8 for 60 s. They are observations, not runs: they are not
  counted as trials, listed as trials or retried;
* a trial is stopped early (pruned) when, after a fifth of its budget, its score at its current
  cost is below the lower quartile of the scores that at least :data:`MIN_REFERENCES` earlier
  completed trials had reached at the same cost. Optuna's own pruners cannot be used here:
  ``Trial.report`` is single-objective only.

Storage is the coordination point (SQLite file by default, any SQLAlchemy URL Optuna takes, e.g.
``postgresql://user@host/db``): workers on any machine that point at it share the study, and
Optuna hands each trial to one worker. Each running trial sends a heartbeat; a trial whose worker
died (``kill -9``, a lost machine) is marked failed by the next worker that starts a trial after
the grace period and is re-run with the same parameters at most :data:`MAX_RETRY` times. A trial
whose trainer exits with an error is recorded as failed with the error's last lines and is not
retried.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any

from .._process import stop_process
from ..trainer.config import Config, ConfigError, build_config, load_toml, to_toml
from .launch import launch_command
from .space import SearchSpace, parse_space

__all__ = ["SweepSettings", "TrialError", "open_study", "run_worker", "real_trials",
           "trials_counted", "base_config", "search_space"]

MAX_RETRY = 2           # re-runs of a trial whose worker died
MIN_REFERENCES = 3      # completed trials needed before pruning starts
PRUNE_AFTER = 0.2       # fraction of its own budget a trial runs before it can be pruned
PRUNE_QUANTILE = 0.25   # below this quantile of the references' scores at the same cost: pruned
CURVE_FRACTIONS = (0.25, 0.5, 0.75)  # points of each curve added as observations
CURVE_KEEP = 64         # curve points kept per trial (evenly thinned)


class TrialError(RuntimeError):
    """A trial's trainer failed; the message holds the end of its output."""


@dataclass
class SweepSettings:
    """Everything a worker needs, saved as JSON so worker processes get the same sweep."""

    env: str
    storage: str
    study: str
    out_dir: str
    trials: int = 20
    files: list[str] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)
    sweep_file: str | None = None
    max_cost: float | None = None
    heartbeat: int = 10
    poll_seconds: float = 1.0

    def save(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(asdict(self), fh, indent=1)

    @classmethod
    def load(cls, path: str) -> "SweepSettings":
        with open(path, encoding="utf-8") as fh:
            return cls(**json.load(fh))


def base_config(s: SweepSettings) -> Config:
    """The config every trial starts from (env defaults, files, overrides)."""
    return build_config(s.env, s.files, s.overrides)


def _sweep_table(s: SweepSettings) -> dict[str, Any] | None:
    """The ``[sweep]`` table: ``--sweep FILE`` (its ``[sweep]`` table, or the whole file), else
    the last ``--config`` file that has one, else the env's shipped config."""
    from ..trainer.config import env_defaults_path

    if s.sweep_file:
        data = load_toml(s.sweep_file)
        return data.get("sweep", data)
    for path in reversed(s.files):
        data = load_toml(path)
        if "sweep" in data:
            return data["sweep"]
    shipped = env_defaults_path(s.env)
    if os.path.exists(shipped):
        return load_toml(shipped).get("sweep")
    return None


def search_space(s: SweepSettings, base: Config | None = None) -> SearchSpace:
    return parse_space(_sweep_table(s), base if base is not None else base_config(s))


def storage_for(s: SweepSettings) -> Any:
    """An Optuna RDB storage with heartbeats and bounded retries of trials whose worker died."""
    import optuna
    from optuna.storages import RDBStorage, RetryFailedTrialCallback

    engine_kwargs: dict[str, Any] = {}
    if s.storage.startswith("sqlite"):
        # several processes write one file: wait for the lock instead of failing at once
        engine_kwargs["connect_args"] = {"timeout": 60}
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(10):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(s.storage, engine_kwargs=engine_kwargs,
                                  heartbeat_interval=s.heartbeat, grace_period=3 * s.heartbeat,
                                  failed_trial_callback=RetryFailedTrialCallback(
                                      max_retry=MAX_RETRY))
        except (OperationalError, IntegrityError) as exc:
            # Two sweeps starting together on a new database both create its tables; the
            # slower one fails ("already exists") and finds them there on the next try.
            if attempt == 9 or not any(w in str(exc) for w in ("already exists", "UNIQUE",
                                                               "duplicate")):
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def open_study(s: SweepSettings, space: SearchSpace | None = None) -> Any:
    """Creates or loads the study; refuses a study run with another env or search space."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # constant_liar: running trials count as bad guesses, so parallel workers spread out
        sampler = optuna.samplers.TPESampler(constant_liar=True, n_startup_trials=min(
            10, max(2, s.trials // 3)))
    study = optuna.create_study(study_name=s.study, storage=storage_for(s),
                                directions=["maximize", "minimize"], sampler=sampler,
                                load_if_exists=True)
    if space is not None:
        described = {d.key: [d.distribution, d.low, d.high, d.log, list(d.choices)]
                     for d in space.dimensions}
        saved = study.user_attrs.get("space")
        if saved is None:
            study.set_user_attr("space", described)
            study.set_user_attr("env", s.env)
        elif saved != described or study.user_attrs.get("env") != s.env:
            raise ConfigError(
                f"study '{s.study}' in {s.storage} was run on env "
                f"'{study.user_attrs.get('env')}' with another search space; continue it with "
                f"the same env and [sweep] table, or start a new one with --study NAME")
    return study


def real_trials(study: Any, states: tuple | None = None) -> list[Any]:
    """The study's trials that are runs (curve-point observations left out)."""
    # Read past optuna's trial cache: it skips trials another process created with a lower id
    # than the newest finished trial this process knows (our curve points finish at once), so
    # counts through study.get_trials undercount and sweeps overshoot --trials.
    storage = getattr(study._storage, "_backend", study._storage)
    trials = storage.get_all_trials(study._study_id, deepcopy=False, states=states)
    return [t for t in trials if "curve_point_of" not in t.user_attrs]


def trials_counted(study: Any) -> int:
    """Runs that use up the sweep's trial count: every run except failed ones that a retry
    replaced or that a stopped sweep interrupted (a rerun runs new ones in their place)."""
    from optuna.trial import TrialState

    trials = real_trials(study)
    retried = {t.system_attrs.get("failed_trial") for t in trials}
    return sum(1 for t in trials if not (t.state == TrialState.FAIL and (
        t.number in retried or t.user_attrs.get("interrupted"))))


def _waiting(study: Any) -> bool:
    from optuna.trial import TrialState

    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def _score_at(curve: list[list[float]], seconds: float) -> float | None:
    """The score a curve ``[[seconds, steps, score], ...]`` had reached by ``seconds``."""
    score = None
    for point in curve:
        if point[0] > seconds:
            break
        score = point[2]
    return score


def _thin(curve: list[list[float]], keep: int) -> list[list[float]]:
    if len(curve) <= keep:
        return list(curve)
    step = (len(curve) - 1) / (keep - 1)
    return [curve[round(i * step)] for i in range(keep)]


class _Objective:
    """One trial: build its config, run the trainer, follow its curve, prune, return values."""

    def __init__(self, s: SweepSettings, space: SearchSpace) -> None:
        self.s, self.space = s, space
        self.stop = False      # set by SIGTERM/SIGINT: the trial in flight fails, no new one
        self.child: subprocess.Popen | None = None

    def references(self, study: Any) -> list[list[list[float]]]:
        from optuna.trial import TrialState

        return [t.user_attrs["curve"] for t in real_trials(study, (TrialState.COMPLETE,))
                if t.user_attrs.get("curve")]

    def __call__(self, trial: Any) -> tuple[float, float]:
        import optuna

        params = {}
        for dim in self.space.dimensions:
            dist = dim.to_optuna()
            if isinstance(dist, optuna.distributions.CategoricalDistribution):
                params[dim.param_name] = trial.suggest_categorical(dim.param_name, dist.choices)
            elif isinstance(dist, optuna.distributions.IntDistribution):
                params[dim.param_name] = trial.suggest_int(dim.param_name, dist.low, dist.high,
                                                           log=dist.log)
            else:
                params[dim.param_name] = trial.suggest_float(dim.param_name, dist.low, dist.high,
                                                             log=dist.log)
        run_dir = os.path.join(os.path.abspath(self.s.out_dir), "trials", f"{trial.number:05d}")
        overrides = dict(self.s.overrides)
        overrides.update(self.space.overrides(params))
        overrides.update({"log.run_dir": run_dir, "log.dashboard": "off",
                          "log.keep_checkpoints": 1})
        try:
            cfg = build_config(self.s.env, self.s.files, overrides)
        except ConfigError as exc:  # a combination the config refuses (e.g. sizes)
            trial.set_user_attr("error", f"config: {exc}")
            raise TrialError(f"config refused: {exc}") from None
        os.makedirs(run_dir, exist_ok=True)
        config_path = os.path.join(os.path.dirname(run_dir), f"{trial.number:05d}.toml")
        with open(config_path, "w", encoding="utf-8") as fh:
            fh.write(to_toml(cfg))
        trial.set_user_attr("run_dir", run_dir)
        trial.set_user_attr("total_steps", int(cfg.train.total_steps))
        return self._run(trial, cfg, config_path, run_dir)

    def _run(self, trial: Any, cfg: Config, config_path: str, run_dir: str
             ) -> tuple[float, float]:
        import optuna

        log_path = os.path.join(run_dir, "train.log")
        metrics_path = os.path.join(run_dir, "metrics.jsonl")
        cmd = launch_command("shoal", "train", "--config", config_path)   # ends with this worker
        with open(log_path, "ab") as log:
            self.child = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL)
        curve: list[list[float]] = []
        offset = 0
        refs = self.references(trial.study)
        refs_time = time.monotonic()
        last_saved = 0
        pruned = stopped_at_cost = False
        total = max(1, int(cfg.train.total_steps))
        try:
            while True:
                rc = self.child.poll()
                if os.path.exists(metrics_path):
                    with open(metrics_path, encoding="utf-8") as fh:
                        fh.seek(offset)
                        chunk = fh.read()
                    complete = chunk[:chunk.rfind("\n") + 1]
                    offset += len(complete.encode())
                    for line in complete.splitlines():
                        m = json.loads(line)
                        if m.get("score100") is not None:
                            curve.append([float(m["elapsed"]), int(m["agent_steps"]),
                                          float(m["score100"])])
                if rc is not None:
                    break
                if self.stop:
                    trial.set_user_attr("interrupted", True)
                    raise KeyboardInterrupt("sweep stopped")
                if curve and len(curve) != last_saved and time.monotonic() - refs_time > 5:
                    trial.set_user_attr("curve", _thin(curve, CURVE_KEEP))
                    last_saved = len(curve)
                    refs, refs_time = self.references(trial.study), time.monotonic()
                if curve and not pruned and self._hopeless(curve, total, refs):
                    pruned = True
                    self.child.send_signal(signal.SIGINT)   # checkpoint and stop
                if (self.s.max_cost and curve and curve[-1][0] >= self.s.max_cost
                        and not stopped_at_cost):
                    stopped_at_cost = True
                    self.child.send_signal(signal.SIGINT)
                time.sleep(self.s.poll_seconds)
        finally:
            stop_process(self.child)
            self.child = None
        if self.stop:
            trial.set_user_attr("interrupted", True)
            raise KeyboardInterrupt("sweep stopped")
        if curve:
            trial.set_user_attr("curve", _thin(curve, CURVE_KEEP))
        if rc != 0:
            with open(log_path, encoding="utf-8", errors="replace") as fh:
                tail = "".join(fh.readlines()[-15:])
            trial.set_user_attr("error", tail[-2000:])
            raise TrialError(f"trial {trial.number}: trainer exited with {rc}:\n{tail}")
        self._add_curve_points(trial, curve, final=not pruned)
        if not curve:
            trial.set_user_attr("error", "no episode finished: raise train.total_steps")
            raise TrialError(f"trial {trial.number}: no episode finished, so it has no score")
        trial.set_user_attr("agent_steps", curve[-1][1])
        if pruned:
            raise optuna.TrialPruned(f"score {curve[-1][2]:.4g} at {curve[-1][0]:.0f}s is below "
                                     f"the lower quartile of earlier trials at that cost")
        return curve[-1][2], curve[-1][0]

    def _hopeless(self, curve: list[list[float]], total: int, refs: list) -> bool:
        seconds, steps, score = curve[-1]
        if steps < PRUNE_AFTER * total or len(refs) < MIN_REFERENCES:
            return False
        at = [v for v in (_score_at(r, seconds) for r in refs if r[-1][0] >= seconds)
              if v is not None]
        if len(at) < MIN_REFERENCES:
            return False
        at.sort()
        k = PRUNE_QUANTILE * (len(at) - 1)
        lo, hi = at[math.floor(k)], at[math.ceil(k)]
        return score < lo + (hi - lo) * (k - math.floor(k))

    def _add_curve_points(self, trial: Any, curve: list[list[float]], final: bool) -> None:
        """A few points of the curve as observations of their own (see the module docstring)."""
        import optuna

        if len(curve) < 2:
            return
        last = len(curve) - 1
        picks = sorted({min(last - 1, int(f * len(curve))) for f in CURVE_FRACTIONS})
        if not final:
            picks.append(last)  # a pruned run's last point is an observation too
        for i in picks:
            seconds, steps, score = curve[i]
            trial.study.add_trial(optuna.trial.create_trial(
                params=trial.params, distributions=trial.distributions,
                values=[score, seconds],
                user_attrs={"curve_point_of": trial.number, "agent_steps": steps}))


def run_worker(s: SweepSettings) -> int:
    """Runs trials until the study has ``s.trials`` of them; returns how many this worker ran.

    SIGTERM (and Ctrl-C) stop the trial in flight (recorded as failed and ``interrupted``; a
    rerun runs a new trial in its place) and the worker; everything finished stays in the
    storage.
    """
    import optuna

    base = base_config(s)
    space = parse_space(_sweep_table(s), base)
    study = open_study(s, space)
    objective = _Objective(s, space)
    ran = 0

    def on_signal(signum: int, frame: Any) -> None:
        objective.stop = True

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not objective.stop and (trials_counted(study) < s.trials or _waiting(study)):
            study.optimize(objective, n_trials=1, catch=(TrialError,), gc_after_trial=False)
            ran += 1
    except KeyboardInterrupt:
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return ran


def main(argv: list[str] | None = None) -> int:
    """``python -m shoal.sweep.study SETTINGS.json``: one worker process (``shoal sweep`` starts
    it through :mod:`shoal.sweep.launch`, which ends it when the sweep dies)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # this process is the worker's own
    s = SweepSettings.load(argv[0])
    run_worker(s)
    return 0


if __name__ == "__main__":
    sys.exit(main())
