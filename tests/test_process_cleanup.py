"""The ``processes`` backend leaves no process behind: after close(), after a worker crashes or is
killed, after Ctrl-C in the parent, and after the parent itself is interrupted or killed.

Processes are found through /proc (no psutil): a process counts as gone when its /proc entry is
missing, belongs to another process (pid reused: a different start time) or is a zombie
(exited, waiting for its parent to read its status).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import shoal
from shoal.emulation import from_gymnasium

sys.path.insert(0, os.path.dirname(__file__))
from conftest import interactive_signals  # noqa: E402
from test_emulation import CountEnv, CrashEnv  # noqa: E402

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc (Linux)")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- /proc helpers ----

def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of a process, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            text = fh.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2:].split()   # after "pid (comm) "
    return fields[0], int(fields[1]), int(fields[19])


def children(pid: int) -> list[int]:
    """Live (non-zombie) child processes of ``pid``."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None and st[1] == pid and st[0] != "Z":
                out.append(int(entry))
    return out


def descendants(pid: int) -> dict[int, int]:
    """{pid: start time} of every live descendant of ``pid``."""
    found: dict[int, int] = {}
    frontier = [pid]
    while frontier:
        nxt = []
        for p in frontier:
            for c in children(p):
                st = _stat(c)
                if st is not None and c not in found:
                    found[c] = st[2]
                    nxt.append(c)
        frontier = nxt
    return found


def alive(procs: dict[int, int]) -> list[int]:
    """The processes of ``procs`` ({pid: start time}) still running."""
    out = []
    for pid, start in procs.items():
        st = _stat(pid)
        if st is not None and st[2] == start and st[0] != "Z":
            out.append(pid)
    return out


def wait_gone(procs: dict[int, int], timeout: float = 10.0) -> list[int]:
    """Waits until every process of ``procs`` is gone; returns the ones still running."""
    deadline = time.monotonic() + timeout
    while (left := alive(procs)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def our_workers() -> dict[int, int]:
    """Our live child processes other than multiprocessing's resource tracker (which serves
    the whole interpreter and exits with it)."""
    from multiprocessing import resource_tracker

    tracker = getattr(resource_tracker._resource_tracker, "_pid", None)
    return {p: _stat(p)[2] for p in children(os.getpid()) if p != tracker and _stat(p)}


def start_times(pids: list[int]) -> dict[int, int]:
    return {p: _stat(p)[2] for p in pids if _stat(p) is not None}


# ---- in this process ----

def test_close_leaves_no_child_processes():
    before = our_workers()
    env = shoal.make("gym:CartPole-v1", 4, backend="processes", num_workers=2, seed=0)
    workers = start_times(env.worker_pids)
    assert len(workers) == 2 and set(workers) <= set(children(os.getpid()))
    env.reset()
    env.step(np.zeros(4, np.int32))
    env.close()
    assert alive(workers) == []                  # joined (reaped), not left as zombies
    assert set(our_workers()) <= set(before)


@pytest.mark.parametrize("how", ["raise", "exit", "sigkill"])
def test_worker_crash_leaves_no_child_processes(how):
    if how == "sigkill":
        env = from_gymnasium(CountEnv, 4, backend="processes", num_workers=2, seed=0)
    else:
        env = from_gymnasium(lambda: CrashEnv(crash_at=2, how=how), 4, backend="processes",
                             num_workers=2, seed=0)
    workers = start_times(env.worker_pids)
    env.reset()
    env.step(np.zeros(4, np.int32))
    if how == "sigkill":
        os.kill(env.worker_pids[1], signal.SIGKILL)
    with pytest.raises(RuntimeError) as info:
        env.step(np.zeros(4, np.int32))
    text = str(info.value)
    expected = {"raise": "Worker traceback", "exit": "died with exit code 3",
                "sigkill": "died with exit code -9 (SIGKILL)"}[how]
    assert expected in text and "the env is closed" in text
    assert env._closed
    # the workers that did not crash were stopped too
    assert alive(workers) == []


class InterruptingEnv(CountEnv):
    """Plays Ctrl-C from inside a worker: on the steps in ``at`` it sends SIGINT to the parent
    (which raises KeyboardInterrupt there) and then takes a while to finish, so the interrupt
    always lands while the parent is stepping."""

    def __init__(self, at: tuple[int, ...] = (), delay: float = 0.3) -> None:
        super().__init__()
        self.at, self.delay, self.steps = at, delay, 0

    def step(self, action):
        self.steps += 1
        if self.steps in self.at:
            os.kill(os.getppid(), signal.SIGINT)
            time.sleep(self.delay)
        return super().step(action)


def _interrupting_envs():
    """In the worker, env 0 interrupts the parent on its steps 1 and 4; env 1 never does (nor
    the probe env the parent builds to learn the spaces)."""
    made = []

    def make():
        import multiprocessing

        if multiprocessing.parent_process() is None:
            return InterruptingEnv()
        made.append(None)
        return InterruptingEnv(at=(1, 4) if len(made) == 1 else ())
    return make


def test_ctrl_c_during_a_step_then_step_again_and_close():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)   # Python's own
    try:
        env = from_gymnasium(_interrupting_envs(), 2, backend="processes", num_workers=1, seed=0)
        workers = start_times(env.worker_pids)
        env.reset()
        with pytest.raises(KeyboardInterrupt):
            env.step(np.ones(2, np.int32))
        # the interrupted step finished in the worker; the env goes on from there
        obs, rew, term, trunc, _ = env.step(np.ones(2, np.int32))
        assert list(obs[:, 1]) == [2.0, 2.0] and list(rew) == [2.0, 2.0]   # t counted both
        obs, rew, term, trunc, _ = env.step(np.ones(2, np.int32))
        assert term.all()                                                  # t=3 with action 1
        with pytest.raises(KeyboardInterrupt):
            env.step(np.ones(2, np.int32))                                 # env 0's step 4
        env.close()     # with that step still in flight
        assert alive(workers) == []
    finally:
        signal.signal(signal.SIGINT, previous)


class JitterEnv(CountEnv):
    """Steps take 0-2 ms, so that interrupts land in every phase of talking to the workers."""

    def step(self, action):
        time.sleep(self.np_random.uniform(0, 0.002))
        return super().step(action)


@pytest.mark.parametrize("stepping", ["step", "recv/send"])
def test_env_survives_ctrl_c_at_any_moment(stepping):
    """Thousands of KeyboardInterrupts at random moments of step (or recv/send with two buffer
    groups), log, render and reset (raised by a test-only SIGALRM handler): the env stays
    consistent and usable after every one."""
    armed = [False]

    def interrupt(signum, frame):
        if armed[0]:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGALRM, interrupt)
    buffers = 1 if stepping == "step" else 2
    env = from_gymnasium(JitterEnv, 4, backend="processes", num_workers=2, num_buffers=buffers,
                         seed=0)
    rng = np.random.default_rng(0)

    def advance() -> np.ndarray:
        if buffers == 1:
            return env.step(np.ones(4, np.int32))[0]
        try:
            obs = env.recv()[0]
        except RuntimeError as exc:   # interrupted between recv() and send(): send first
            if "recv() called twice" not in str(exc):
                raise
            obs = env.observations[:2]
        env.send(np.ones(2, np.int32))
        return obs

    interrupts = completed = 0
    try:
        env.reset()
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                try:
                    armed[0] = True
                    signal.setitimer(signal.ITIMER_REAL, rng.uniform(0.0001, 0.01))
                    for _ in range(3):
                        op = rng.random()
                        if op < 0.7:
                            obs = advance()
                            # action 1 ends each episode at t=3: after a step t is 0, 1 or 2
                            assert np.isin(obs[:, 1], [0, 1, 2]).all(), obs
                        elif op < 0.8:
                            stats = env.log()
                            assert stats == {} or stats["episode_length"] == 3.0, stats
                        elif op < 0.9:
                            assert "env" in env.render("ansi", index=int(rng.integers(4)))
                        else:
                            env.reset()
                    completed += 1
                finally:
                    armed[0] = False
                    signal.setitimer(signal.ITIMER_REAL, 0)
            except KeyboardInterrupt:
                interrupts += 1
        env.reset(seed=3)
        if buffers == 1:
            for t in (1, 2, 0, 1):
                obs = env.step(np.ones(4, np.int32))[0]
                assert (obs[:, 1] == t).all(), (t, obs)
        else:
            for t in (0, 1, 2, 0, 1):   # what each group shows before its step
                for _ in range(2):
                    obs = env.recv()[0]
                    assert (obs[:, 1] == t).all(), (t, obs)
                    env.send(np.ones(2, np.int32))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        env.close()
    assert interrupts > 100 and completed > 10, (interrupts, completed)


# ---- a parent process that is interrupted or killed ----

SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import shoal

    if __name__ == "__main__":
        crash = sys.argv[1] == "crash"
        env = shoal.make("gym:CartPole-v1", 4, backend="processes", num_workers=2, seed=0)
        env.reset()
        print(env.shm_name, flush=True)
        if crash:
            from test_emulation import CrashEnv
            env.close()
            env = shoal.from_gymnasium(lambda: CrashEnv(crash_at=50), 4, backend="processes",
                                       num_workers=2, seed=0)
            env.reset()
        print("ready", flush=True)
        sys.stdin.readline()   # the test has noted the processes
        while True:
            env.step(np.zeros(4, np.int32))
""")


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL to the script's process group (its own session): whatever it left behind."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _finish(proc: subprocess.Popen, stderr_path, timeout: float) -> str:
    """Waits for the script to exit (stderr goes to a file, so processes that outlive it and
    hold its descriptors cannot stall the wait); returns its stderr."""
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            _kill_group(proc)
    return stderr_path.read_text()


def _run_script(tmp_path, mode: str) -> tuple[subprocess.Popen, str, dict[int, int]]:
    script = tmp_path / "uses_processes.py"
    script.write_text(SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(__file__), REPO]))
    with open(tmp_path / "stderr.txt", "w") as err:
        proc = subprocess.Popen([sys.executable, str(script), mode], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, text=True, env=env,
                                start_new_session=True, preexec_fn=interactive_signals)
    shm = proc.stdout.readline().strip()
    if proc.stdout.readline().strip() != "ready":
        _kill_group(proc)
        pytest.fail((tmp_path / "stderr.txt").read_text())
    proc.stdout.close()
    procs = descendants(proc.pid)
    assert len(procs) >= 2, procs   # the workers (and multiprocessing's resource tracker)
    proc.stdin.write("go\n")
    proc.stdin.flush()
    time.sleep(0.3)   # stepping for a while
    return proc, shm, procs


@pytest.mark.parametrize("how", ["SIGINT", "SIGINT to the process group", "SIGTERM", "SIGKILL"])
def test_interrupted_or_killed_parent_leaves_no_processes(tmp_path, how):
    proc, shm, procs = _run_script(tmp_path, "loop")
    try:
        if how == "SIGINT to the process group":   # Ctrl-C in a terminal
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, getattr(signal, how))
        err = _finish(proc, tmp_path / "stderr.txt", timeout=30)
        if how.startswith("SIGINT"):
            assert "KeyboardInterrupt" in err, err
        else:
            assert proc.returncode == -getattr(signal, how)
        assert wait_gone(procs) == [], f"left running after {how}: {alive(procs)}"
    finally:
        _kill_group(proc)
    # the shared memory block is unlinked (by close() at exit, or by the resource tracker)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/dev/shm/{shm.lstrip('/')}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/dev/shm/{shm.lstrip('/')}")


def test_uncaught_worker_crash_in_a_script_leaves_no_processes(tmp_path):
    proc, _, procs = _run_script(tmp_path, "crash")
    try:
        err = _finish(proc, tmp_path / "stderr.txt", timeout=60)
        assert proc.returncode == 1
        assert "boom at step 50" in err and "Worker traceback" in err, err
        assert wait_gone(procs) == []
    finally:
        _kill_group(proc)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_stop_signal_stops_shoal_train_and_its_workers(tmp_path, signum):
    """Ctrl-C in a terminal, or SIGTERM to the whole process group (a container or scheduler
    stopping the job): the epoch finishes, a checkpoint is written, the workers exit, and
    SIGTERM gives exit code 143."""
    pytest.importorskip("torch")
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=REPO)
    with open(tmp_path / "stderr.txt", "w") as err, open(tmp_path / "stdout.txt", "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shoal", "train", "gym:CartPole-v1", "--env.backend",
             "processes", "--env.num-envs", "4", "--env.num-workers", "2",
             "--train.total-steps", "100000000", "--train.minibatch-size", "256",
             "--train.torch-threads", "1", "--log.dashboard", "plain",
             "--log.print-interval", "0", "--run-dir", str(run)],
            stdout=out, stderr=err, text=True, env=env, start_new_session=True,
            preexec_fn=interactive_signals)
    try:
        metrics = run / "metrics.jsonl"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and \
                not (metrics.exists() and metrics.stat().st_size > 0):
            time.sleep(0.1)
        assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()
        procs = descendants(proc.pid)
        assert len(procs) >= 2
        os.killpg(proc.pid, signum)
        err_text = _finish(proc, tmp_path / "stderr.txt", timeout=60)
        assert proc.returncode == (143 if signum == signal.SIGTERM else 0), err_text
        checkpoints = sorted(f for f in os.listdir(run / "checkpoints") if f.endswith(".pt"))
        last_epoch = json.loads(metrics.read_text().splitlines()[-1])["epoch"]
        assert checkpoints[-1] == f"checkpoint_{last_epoch:07d}.pt", err_text
        assert wait_gone(procs) == []
    finally:
        _kill_group(proc)
