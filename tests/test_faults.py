"""Real training, broken on purpose: killed, starved of disk, failing workers, bad inputs.

- **kill -9** of a training process at random moments (while stepping the envs, while learning,
  halfway through writing a checkpoint, or from outside at a random time), then resume: the run
  continues from the newest complete checkpoint (never a torn file), and with the same seed its
  metrics equal those of an uninterrupted run.
- **A full disk** (a small tmpfs, or a read-only directory where that is not possible) during a
  checkpoint: a clear error, the previous checkpoint intact, no temporary file left.
- **A Python env worker** (processes backend) that raises, hangs or dies: a clear error naming the
  env and the worker, no hang (``worker_timeout``), no process left behind.
- **Bad inputs**: malformed config files (named cases and random mutations of a valid one),
  truncated checkpoints, checkpoints of another env, policy or format, files that are not
  checkpoints (one of them a pickle that would run code): ``shoal train``/``shoal eval`` answer
  with a one-line error, never a traceback.

The number of random cases is small by default; ``SHOAL_FAULTS=N`` multiplies them (RELIABILITY.md
gives the counts of a long run and the command). Every outcome is tallied, and the tally printed at
the end (``-s`` shows it; ``SHOAL_FAULTS_REPORT=FILE`` writes it as JSON).
"""

from __future__ import annotations

import json
import os
import pickle
import random
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest
import torch

import shoal
from shoal.trainer import cli, eval_cli
from shoal.trainer.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
from shoal.trainer.config import apply_overrides, default_config
from shoal.trainer.ppo import Trainer

HERE = os.path.dirname(os.path.abspath(__file__))
SUPPORT = os.path.join(HERE, "support")
REPO = os.path.dirname(HERE)
sys.path.insert(0, SUPPORT)
sys.path.insert(0, HERE)
import fault_train  # noqa: E402
from conftest import interactive_signals  # noqa: E402,F401
from reliability_envs import FaultyEnv  # noqa: E402

SCALE = max(1, int(os.environ.get("SHOAL_FAULTS", "1")))
SEED = int(os.environ.get("SHOAL_FAULTS_SEED", "0"))
TALLY: Counter = Counter()

pytestmark = [pytest.mark.usefixtures("one_torch_thread"),
              pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc (Linux)")]


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    print("\nfault tally:", json.dumps(dict(sorted(TALLY.items()))))
    path = os.environ.get("SHOAL_FAULTS_REPORT")
    if path:
        with open(path, "w") as fh:
            json.dump(dict(sorted(TALLY.items())), fh, indent=2)


def metrics(run_dir) -> list[dict]:
    """metrics.jsonl without the fields that measure time."""
    out = []
    with open(os.path.join(run_dir, "metrics.jsonl")) as fh:
        for line in fh:
            m = json.loads(line)
            for key in ("sps", "sps_avg", "elapsed", "remaining", "time"):
                m.pop(key)
            out.append(m)
    return out


# ---- kill -9, then resume ----

@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run = str(tmp_path_factory.mktemp("faults") / "whole")
    Trainer(fault_train.config(run)).train()
    return metrics(run)


def kill_points() -> list[tuple[str, int]]:
    rng = random.Random(SEED)
    e, first = fault_train.EPOCHS, 2        # kills come after the first checkpoint (epoch 2)
    points = []
    for _ in range(SCALE):
        points += [
            ("rollout", rng.randint(first * fault_train.SENDS_PER_EPOCH + 1,
                                    e * fault_train.SENDS_PER_EPOCH)),
            ("learn", rng.randint(first * fault_train.STEPS_PER_EPOCH + 1,
                                  e * fault_train.STEPS_PER_EPOCH)),
            ("checkpoint", rng.randint(2, fault_train.CHECKPOINTS)),
            ("none", rng.randint(0, 10**6)),            # from outside, at a random moment
        ]
    return points


def start_child(run_dir: str, phase: str, at: int) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([SUPPORT, REPO]))
    return subprocess.Popen([sys.executable, os.path.join(SUPPORT, "fault_train.py"), run_dir,
                             phase, str(at)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)


@pytest.mark.parametrize("phase,at", kill_points())
def test_kill_9_then_resume_is_exact(tmp_path, reference, phase, at):
    run = str(tmp_path / "run")
    proc = start_child(run, phase, at)
    try:
        if phase == "none":
            # wait for the first checkpoint, then kill at a random moment of the next epochs
            assert proc.stdout.readline().strip() == "training", proc.stderr.read()
            deadline = time.monotonic() + 120
            while not list_checkpoints(run) and proc.poll() is None and \
                    time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(random.Random(at).uniform(0.0, 0.5))
            proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    TALLY["kill -9 injected"] += 1
    if proc.returncode == 0:        # the outside kill came after the run finished
        TALLY["kill -9 after the run finished"] += 1
        assert metrics(run) == reference
        return
    assert proc.returncode == -signal.SIGKILL, err
    newest = list_checkpoints(run)[-1]
    saved = load_checkpoint(newest)            # the newest checkpoint is whole, never torn
    resumed = Trainer.resume(run)
    assert resumed.epoch == saved["epoch"] and resumed.exact_resume
    resumed.train()
    assert not [f for f in os.listdir(os.path.join(run, "checkpoints")) if f.startswith(".tmp")]
    assert metrics(run) == reference
    TALLY["runs resumed exactly"] += 1


# ---- a full disk during a checkpoint ----

def small_config(run_dir: str, **extra):
    cfg = default_config()
    apply_overrides(cfg, {"env.name": "template", "env.num_envs": 8, "train.horizon": 8,
                          "train.minibatch_size": 32, "train.total_steps": 64 * 20,
                          "log.checkpoint_interval": 1, "log.keep_checkpoints": 3,
                          "log.dashboard": "off", "log.run_dir": run_dir, **extra})
    return cfg


def fill(directory: str) -> None:
    """Writes a file until the filesystem is full."""
    try:
        with open(os.path.join(directory, "filler"), "wb") as fh:
            while True:
                fh.write(b"\0" * 4096)
                fh.flush()
    except OSError:
        pass


def test_full_disk_during_checkpoint_keeps_the_previous_one(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                             capture_output=True).returncode == 0
    if not mounted and os.geteuid() == 0:
        pytest.skip("a full disk needs a tmpfs mount (not permitted here), and a read-only "
                    "directory does not stop root")
    run = str(mount / "run")

    def break_disk(trainer, m):
        if trainer.epoch == 3:
            if mounted:
                fill(str(mount))
            else:
                os.chmod(os.path.join(run, "checkpoints"), 0o555)

    trainer = Trainer(small_config(run), env=shoal.make("template", 8, seed=0),
                      callback=break_disk)
    try:
        with pytest.raises(CheckpointError) as info:
            trainer.train()
        TALLY["full disk / read-only during checkpoint"] += 1
        message = str(info.value)
        assert "\n" not in message and "checkpoint_0000002.pt" in message
        assert "No space left" in message or "Permission denied" in message
        assert load_checkpoint(os.path.join(run, "checkpoints",
                                            "checkpoint_0000002.pt"))["epoch"] == 2
        assert not [f for f in os.listdir(os.path.join(run, "checkpoints"))
                    if f.startswith(".tmp")]
        assert trainer.env._closed
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)
        else:
            os.chmod(os.path.join(run, "checkpoints"), 0o755)


# ---- Python env workers that fail ----

def descendants_of_us() -> list[int]:
    from multiprocessing import resource_tracker

    from test_process_cleanup import children

    tracker = getattr(resource_tracker._resource_tracker, "_pid", None)
    return [p for p in children(os.getpid()) if p != tracker]


@pytest.fixture
def alarm():
    """Fails the test (instead of hanging the suite) if it runs past 60 s."""
    def expired(signum, frame):
        raise AssertionError("no answer within 60 s: something hangs")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.usefixtures("alarm")
@pytest.mark.parametrize("fault,expected", [
    ("raise", r"worker \d \(pid \d+, envs \[\d+, \d+\)\) raised while stepping.*env \d+ raised "
              r"in step\(\).*simulator fault at step 7"),
    ("hang", r"worker \d \(pid \d+, envs \[\d+, \d+\)\) did not answer within 1 s"),
    ("exit", r"worker \d \(pid \d+, envs \[\d+, \d+\)\) died with exit code 3"),
])
def test_failing_python_env_worker_gives_a_clear_error_and_leaves_no_process(tmp_path, fault,
                                                                              expected):
    before = set(descendants_of_us())
    env = shoal.from_gymnasium(lambda: FaultyEnv(fault, at=7), 4, backend="processes",
                               num_workers=2, name="faulty")
    env.worker_timeout = 1.0
    workers = env.worker_pids
    trainer = Trainer(small_config(str(tmp_path / "r")), env=env)
    with pytest.raises(RuntimeError, match=expected) as info:
        trainer.train()
    TALLY[f"env worker fault: {fault}"] += 1
    assert str(info.value).startswith("faulty: ")
    assert env._closed
    deadline = time.monotonic() + 10
    while set(workers) & set(descendants_of_us()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not set(workers) & set(descendants_of_us()) and set(descendants_of_us()) <= before


def test_worker_timeout_is_checked(monkeypatch):
    monkeypatch.setenv("SHOAL_WORKER_TIMEOUT", "soon")
    with pytest.raises(ValueError, match="SHOAL_WORKER_TIMEOUT"):
        shoal.make("template", 2, backend="processes", num_workers=1)
    monkeypatch.setenv("SHOAL_WORKER_TIMEOUT", "2.5")
    env = shoal.make("template", 2, backend="processes", num_workers=1)
    try:
        assert env.worker_timeout == 2.5
        with pytest.raises(ValueError, match="worker_timeout"):
            env.worker_timeout = -1
    finally:
        env.close()


# ---- bad inputs: one-line errors ----

def one_line_error(argv: list[str], capsys, main=cli.main) -> tuple[int, str]:
    """Runs a CLI entry point; returns (exit code, stderr) after checking that any error is one
    line with no traceback (a crash otherwise)."""
    TALLY["bad inputs tried"] += 1
    try:
        code = main(argv)
    except BaseException as exc:     # noqa: BLE001  (anything escaping is a crash)
        TALLY["crashes"] += 1
        raise AssertionError(f"{argv}: {type(exc).__name__}: {exc}") from exc
    err = capsys.readouterr().err.strip()
    if code != 0:
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        TALLY["one-line errors"] += 1
    else:
        TALLY["accepted (valid after all)"] += 1
    return code, err


NAMED_CONFIGS = {
    "syntax error": "[train\nlearning_rate = 1",
    "wrong type": "[train]\nlearning_rate = 'fast'",
    "misspelt key": "[train]\nlearnin_rate = 0.1",
    "unknown section": "[bogus]\nx = 1",
    "out of range": "[train]\nhorizon = -5",
    "zero envs": "[env]\nnum_envs = 0",
    "section not a table": "train = 5",
    "unknown choice": "[policy]\nname = 'transformer'",
    "unknown backend": "[env]\nbackend = 'gpu'",
    "huge integer": "[train]\nseed = 99999999999999999999999999",
    "infinite float": "[train]\nlearning_rate = inf",
    "nan": "[train]\ngamma = nan",
    "binary": "\x00\xff\xfe garbage \x01",
    "duplicate key": "[train]\nseed = 1\nseed = 2",
    "not utf-8": None,
}


@pytest.mark.parametrize("case", sorted(NAMED_CONFIGS))
def test_malformed_config_file_is_a_one_line_error(tmp_path, capsys, case):
    path = tmp_path / "bad.toml"
    text = NAMED_CONFIGS[case]
    path.write_bytes(b"[train]\nseed = \xff\xfe\n" if text is None else text.encode())
    code, _ = one_line_error(["template", "--config", str(path), "--train.total-steps", "64",
                              "--log.dashboard", "off", "--run-dir", str(tmp_path / "r")], capsys)
    assert code == 2


def test_randomly_mutated_config_files(tmp_path, capsys):
    """Deletions and insertions of TOML punctuation in a valid config: each is either accepted
    (it trains 64 steps) or a one-line error."""
    base = tmp_path / "base"
    Trainer(small_config(str(base), **{"train.total_steps": 64})).train()
    valid = (base / "config.toml").read_text()
    rng = random.Random(SEED)
    for i in range(15 * SCALE):
        text = list(valid)
        for _ in range(rng.randint(1, 3)):
            pos = rng.randrange(len(text))
            if rng.random() < 0.5:
                del text[pos]
            else:
                text.insert(pos, rng.choice('[]="\'\n#.=,{}x-_ '))
        path = tmp_path / f"m{i}.toml"
        path.write_text("".join(text))
        one_line_error(["template", "--config", str(path), "--train.total-steps", "64",
                        "--env.num-envs", "8", "--train.horizon", "8",
                        "--train.minibatch-size", "32", "--log.dashboard", "off",
                        "--run-dir", str(tmp_path / f"run{i}")], capsys)


class RunsCode:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('ran')",))


def test_bad_checkpoints_are_one_line_errors(tmp_path, capsys):
    run = str(tmp_path / "run")
    Trainer(small_config(run, **{"train.total_steps": 64 * 2})).train()
    good = list_checkpoints(run)[-1]
    data = open(good, "rb").read()
    bad = tmp_path / "bad"
    bad.mkdir()
    cases: dict[str, bytes | None] = {}
    rng = random.Random(SEED)
    for i in range(10 * SCALE):
        cases[f"truncated{i}"] = data[:rng.randrange(len(data))]
    cases["empty"] = b""
    cases["random bytes"] = bytes(rng.randrange(256) for _ in range(5000))
    marker = str(tmp_path / "marker")
    cases["code-running pickle"] = pickle.dumps(RunsCode(marker), protocol=2)
    for name, blob in cases.items():
        path = bad / f"{name}.pt"
        path.write_bytes(blob)
    torch.save({"weights": torch.zeros(3)}, bad / "not shoal.pt")
    ckpt = torch.load(good, weights_only=True)
    torch.save(dict(ckpt, format=99), bad / "other version.pt")
    torch.save(RunsCode(marker), bad / "code-running torch.save.pt")
    for path in sorted(bad.iterdir()):
        for argv, main in (
                (["--resume", str(path), "--log.dashboard", "off"], cli.main),
                (["template", "--checkpoint", str(path), "--episodes", "2"], eval_cli.main)):
            code, err = one_line_error(argv, capsys, main)
            assert code == 2, (path.name, err)
    assert not os.path.exists(marker)
    # checkpoints of another env, policy or env parameters
    for argv in (["bandit", "--resume", run],
                 ["--resume", run, "--policy.hidden", "64"],
                 ["--resume", run, "--policy.name", "lstm"],
                 ["--resume", run, "--env.length", "9"]):
        code, err = one_line_error(argv + ["--log.dashboard", "off"], capsys)
        assert code == 2, (argv, err)
    code, err = one_line_error(["bandit", "--checkpoint", run, "--episodes", "2"], capsys,
                               eval_cli.main)
    assert code == 2
