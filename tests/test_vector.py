"""The vector layer: backend parity, the recv()/send() cycle, log(), close(), and the process
backend's failure handling (dead or raising workers, no orphans, no leaked shared memory).

Everything here uses only the ``template`` env, so it holds whichever other envs exist.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import shoal
from shoal.envs import get_spec
from shoal.vector.base import Buffers, VecEnv
from shoal.vector.processes import NativeShardFactory, ProcessVecEnv, native_shard_factory

REPO = Path(__file__).resolve().parents[1]
SHORT = dict(length=4, max_steps=6)  # episodes end every few steps: terminals and truncations
NUM_ENVS = 6                          # divisible by 1, 2, 3 workers and by 2 buffers

# (backend, num_workers, num_buffers) of every configuration compared with serial.
CONFIGS = [
    ("serial", 1, 1), ("serial", 1, 2),
    ("threads", 1, 1), ("threads", 2, 1), ("threads", 3, 1),
    ("threads", 1, 2), ("threads", 2, 2), ("threads", 3, 2),
    ("processes", 1, 1), ("processes", 2, 1), ("processes", 2, 2),
]


@pytest.fixture(scope="module")
def envs():
    """One env per configuration, made on first use and shared by the tests of this module
    (spawning workers is the slow part)."""
    made: dict[tuple[str, int, int], VecEnv] = {}

    def get(backend: str, num_workers: int, num_buffers: int) -> VecEnv:
        key = (backend, num_workers, num_buffers)
        if key not in made:
            made[key] = shoal.make("template", NUM_ENVS, backend=backend, num_workers=num_workers,
                                   num_buffers=num_buffers, **SHORT)
        return made[key]

    yield get
    for env in made.values():
        env.close()


@contextlib.contextmanager
def deadline(seconds: float):
    """Raises TimeoutError in the test if the block takes longer than ``seconds`` (a hang guard)."""
    def on_alarm(signum, frame):
        raise TimeoutError(f"no answer within {seconds} s: the env hung")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_gone(pids: list[int], shm_name: str | None = None, timeout: float = 8.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not any(alive(p) for p in pids) and not (shm_name and os.path.exists(f"/dev/shm/{shm_name}")):
            return
        time.sleep(0.05)
    left = [p for p in pids if alive(p)]
    assert not left, f"worker processes {left} outlived their parent/env"
    assert not os.path.exists(f"/dev/shm/{shm_name}"), f"shared memory {shm_name} was not unlinked"


def actions_for(t: int, num_agents: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng([seed, t]).integers(0, 2, num_agents).astype(np.int32)


def step_stream(env: VecEnv, steps: int = 60, seed: int = 3) -> list[np.ndarray]:
    obs, infos = env.reset(seed=seed)
    out = [obs.copy()]
    for t in range(steps):
        obs, rew, term, trunc, infos = env.step(actions_for(t, env.num_agents))
        done = term | trunc  # final_observation rows are defined only where an episode ended
        out += [obs.copy(), rew.copy(), term.copy(), trunc.copy(), infos["final_observation"][done]]
    return out


def cycle_stream(env: VecEnv, rounds: int = 60, seed: int = 3) -> list[np.ndarray]:
    """The recv()/send() loop; actions depend only on (round, group) so all backends agree."""
    env.reset(seed=seed)
    out = []
    for t in range(rounds):
        for _ in range(env.num_buffers):
            obs, rew, term, trunc, infos, rows = env.recv()
            out += [obs.copy(), rew.copy(), term.copy(), trunc.copy()]
            env.send(actions_for(t, env.num_agents)[rows])
    return out


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


# ---- (a) every backend gives the same streams ----

def test_backends_give_identical_streams(envs):
    ref = step_stream(envs("serial", 1, 1))
    assert any(x.dtype == bool and x.any() for x in ref), "no episode ended: the test checks nothing"
    ref_cycle = cycle_stream(envs("serial", 1, 2))
    for config in CONFIGS:
        env = envs(*config)
        assert same(step_stream(env), ref), f"step() stream of {config} differs from serial"
        if config[2] == 2:
            assert same(cycle_stream(env), ref_cycle), f"recv/send stream of {config} differs"


def test_process_render_matches_serial(envs):
    serial, procs = envs("serial", 1, 1), envs("processes", 2, 2)
    for env in (serial, procs):
        env.reset(seed=1)
        for t in range(5):
            env.step(actions_for(t, env.num_agents))
    for index in (0, NUM_ENVS - 1):
        assert procs.render(mode="ansi", index=index) == serial.render(mode="ansi", index=index)
        assert np.array_equal(procs.render(index=index), serial.render(index=index))
    # render() during a cycle waits for the env's group rather than showing a half-written step
    procs.recv()
    procs.send(np.ones(NUM_ENVS // 2, np.int32))
    assert isinstance(procs.render(mode="ansi", index=0), str)
    procs.recv()


# ---- (b) the recv()/send() cycle ----

@pytest.mark.parametrize("config", [("serial", 1, 2), ("threads", 2, 2), ("processes", 2, 2)])
def test_recv_send_cycle(envs, config):
    env = envs(*config)
    env.reset(seed=0)
    half = env.num_agents // 2
    for _ in range(3):
        for g in range(2):
            obs, rew, term, trunc, infos, rows = env.recv()
            assert rows == slice(g * half, (g + 1) * half), "groups come back in order"
            assert obs.shape[0] == rew.shape[0] == half
            assert np.shares_memory(obs, env.observations), "recv returns views, not copies"
            env.send(np.ones(half, np.int32))

    env.recv()
    with pytest.raises(RuntimeError, match="recv\\(\\) called twice"):
        env.recv()
    with pytest.raises(RuntimeError, match="step\\(\\) mixed with send\\(\\)/recv\\(\\)"):
        env.step(np.ones(env.num_agents, np.int32))
    env.send(np.ones(half, np.int32))
    with pytest.raises(RuntimeError, match="send\\(\\) without recv\\(\\)"):
        env.send(np.ones(half, np.int32))
    env.reset(seed=0)  # reset settles the groups in flight
    env.step(np.ones(env.num_agents, np.int32))


def test_action_errors_in_every_backend(envs):
    for config in [("serial", 1, 1), ("threads", 2, 2), ("processes", 2, 2)]:
        env = envs(*config)
        env.reset(seed=0)
        good = np.ones(env.num_agents, np.int32)
        with pytest.raises(ValueError, match="shape"):
            env.step(np.ones(env.num_agents + 1, np.int32))
        with pytest.raises(TypeError, match="integers"):
            env.step(good.astype(np.float64))
        bad = good.copy()
        bad[4] = 7  # a row of group 1 and, with two workers, of worker 1
        with pytest.raises(ValueError, match="action 7 for agent 4 .*outside the action space"):
            env.step(bad)
        env.step(good)  # still usable
        *_, rows = env.recv()
        env.send(good[rows])
        *_, rows = env.recv()     # the group holding agent 4
        with pytest.raises(ValueError, match="action 7 for agent 4 .*outside the action space"):
            env.send(bad[rows])   # serial / threads reject it here; with processes the worker
            for _ in range(env.num_buffers):  # rejects it and recv() of that group reports it
                *_, rows = env.recv()
                env.send(good[rows])
        env.reset()


# ---- (c) log() ----

def test_log_aggregates_groups(envs):
    # Group 0 (envs 0-2) always walks right: an episode of 3 steps and return 1 every 3 steps.
    # Group 1 (envs 3-5) always walks left: truncated after 6 steps with return 0.
    actions = np.array([1, 1, 1, 0, 0, 0], np.int32)
    expected = {"episode_return": 6 / 9, "episode_length": (6 * 3 + 3 * 6) / 9, "score": 6 / 9, "n": 9}
    for config in [("serial", 1, 1), ("threads", 3, 2), ("processes", 2, 2), ("processes", 2, 1)]:
        env = envs(*config)
        env.reset(seed=0)
        assert env.log() == {}
        for _ in range(6):
            env.step(actions)
        stats = env.log()
        assert stats.keys() == expected.keys(), config
        for k, v in expected.items():
            assert stats[k] == pytest.approx(v), f"{config}: {k}"
        assert env.log() == {}, "log() clears what it reported"

    # A group that is stepping is left out and reported by the next call.
    env = envs("processes", 2, 2)
    env.reset(seed=0)
    for _ in range(6):
        for _ in range(2):
            *_, rows = env.recv()
            env.send(actions[rows])
    env.recv()
    env.send(actions[:3])        # group 0 stepping (its 7th step ends no episode)
    env.recv()                   # group 1 handed out, done stepping
    stats = env.log()            # only group 1: 3 truncated episodes
    assert stats["n"] == 3 and stats["episode_length"] == 6 and stats["episode_return"] == 0
    env.send(actions[3:])        # group 1 stepping
    env.recv()                   # group 0 done
    stats = env.log()            # only group 0: 6 episodes that reached the goal
    assert stats["n"] == 6 and stats["episode_length"] == 3 and stats["score"] == 1


# ---- (d) close() ----

def test_close_is_idempotent_and_final():
    env = shoal.make("template", 4, backend="processes", num_workers=2, **SHORT)
    with pytest.raises(RuntimeError, match="call reset\\(\\) before"):
        env.step(np.zeros(4, np.int32))
    with pytest.raises(RuntimeError, match="call reset\\(\\) before"):
        env.recv()
    obs, _ = env.reset(seed=0)
    kept = env.step(np.ones(4, np.int32))[0]  # a view the caller keeps past close()
    pids, name = env.worker_pids, env.shm_name
    env.close()
    env.close()
    assert not any(alive(p) for p in pids), "close() left workers running"
    assert not os.path.exists(f"/dev/shm/{name}"), "close() left the shared memory linked"
    assert kept.sum() == 4  # still readable: the mapping lives as long as the caller's views
    for call in (lambda: env.reset(), lambda: env.step(np.zeros(4, np.int32)), env.recv,
                 env.log, env.render):
        with pytest.raises(RuntimeError, match="closed"):
            call()
    for backend in ("serial", "threads"):
        other = shoal.make("template", 2, backend=backend)
        other.close()
        other.close()
        with pytest.raises(RuntimeError, match="closed"):
            other.reset()


def test_garbage_collection_stops_workers_and_unlinks():
    env = shoal.make("template", 2, backend="processes", num_workers=2)
    env.reset(seed=0)
    pids, name = env.worker_pids, env.shm_name
    del env
    gc.collect()
    wait_gone(pids, name, timeout=4.0)


# ---- (e) failing workers ----

class FailingFactory(NativeShardFactory):
    """The template env, except that the shard starting at env ``bad_offset`` fails as told."""

    def __init__(self, how: str, bad_offset: int = 2) -> None:
        super().__init__("template", get_spec("template").resolve(SHORT))
        self.how = how
        self.bad_offset = bad_offset

    def __call__(self, num_envs: int, env_offset: int, buffers: Buffers) -> VecEnv:
        if env_offset == self.bad_offset and self.how == "build":
            raise_from_env_code()
        vec = super().__call__(num_envs, env_offset, buffers)
        if env_offset == self.bad_offset and self.how == "slow":
            vec._send = slowly(vec._send)
            vec._reset = slowly(vec._reset)
        elif env_offset == self.bad_offset:
            vec._send = exploding_step if self.how == "raise" else exiting_step
        return vec


def slowly(method):
    def slow(*args):
        time.sleep(0.3)
        return method(*args)
    return slow


def raise_from_env_code() -> None:
    raise ZeroDivisionError("the env divided by zero")


def exploding_step(group: int) -> None:
    raise_from_env_code()


def exiting_step(group: int) -> None:
    os._exit(3)


def test_killed_worker_is_an_error_not_a_hang():
    env = shoal.make("template", 4, backend="processes", num_workers=2, num_buffers=2)
    env.reset(seed=0)
    pids = env.worker_pids
    *_, rows = env.recv()
    env.send(np.ones(2, np.int32))
    os.kill(pids[1], signal.SIGKILL)
    with deadline(10):
        with pytest.raises(RuntimeError, match=rf"worker 1 \(pid {pids[1]}.*exit code -9 \(SIGKILL\)"):
            for _ in range(4):
                *_, rows = env.recv()
                env.send(np.ones(2, np.int32))
    with pytest.raises(RuntimeError, match="closed"):
        env.reset()
    wait_gone(pids, env.shm_name, timeout=4.0)


@pytest.mark.parametrize("how", ["raise", "exit", "build"])
def test_failing_worker_is_reported(how):
    with deadline(20):
        if how == "build":
            with pytest.raises(RuntimeError, match="worker 1 .*raised while starting") as info:
                ProcessVecEnv(FailingFactory(how), 4, num_workers=2)
            assert "ZeroDivisionError: the env divided by zero" in str(info.value)
            assert "raise_from_env_code" in str(info.value), "the worker's traceback is shown"
            return
        env = ProcessVecEnv(FailingFactory(how), 4, num_workers=2, seed=0)
        env.reset()
        pids = env.worker_pids
        if how == "raise":
            with pytest.raises(RuntimeError, match="worker 1 .*raised while stepping") as info:
                env.step(np.ones(4, np.int32))
            assert "Worker traceback" in str(info.value)
            assert "exploding_step" in str(info.value) and "raise_from_env_code" in str(info.value)
        else:
            with pytest.raises(RuntimeError, match=rf"worker 1 \(pid {pids[1]}, envs \[2, 4\)\) died "
                                                   rf"with exit code 3 while stepping"):
                env.step(np.ones(4, np.int32))
    with pytest.raises(RuntimeError, match="closed"):
        env.step(np.ones(4, np.int32))
    wait_gone(pids, env.shm_name, timeout=4.0)


def test_interrupted_calls_leave_the_env_consistent():
    """A step or reset interrupted while waiting (Ctrl-C, a timeout) must not leave replies in the
    pipes that a later call would mistake for its own."""
    env = ProcessVecEnv(FailingFactory("slow"), 4, num_workers=2, seed=0)
    ref = shoal.make("template", 4, **SHORT)
    try:
        with deadline(10):
            env.reset(seed=1)
        with pytest.raises(TimeoutError):
            with deadline(0.1):
                env.reset(seed=5)          # worker 1 is still resetting when this gives up
        with pytest.raises(TimeoutError):
            with deadline(0.1):
                env.step(np.ones(4, np.int32))
        with deadline(10):
            env.reset(seed=5)              # waits for the step in flight, then resets
            ref.reset(seed=5)
            for t in range(3):
                a = actions_for(t, 4)
                assert same(list(env.step(a)[:4]), list(ref.step(a)[:4]))
    finally:
        env.close()
        ref.close()


# ---- (e) no orphans, whatever happens to the parent ----

CHILD = """
import json, os, sys, time
import numpy as np
import shoal
env = shoal.make("template", 4, backend="processes", num_workers=2, num_buffers=2)
obs, _ = env.reset(seed=0)
print(json.dumps({"pids": env.worker_pids, "shm": env.shm_name}), flush=True)
mode = sys.argv[1]
actions = np.ones(4, np.int32)
if mode == "exit":
    os._exit(1)
elif mode == "sleep":
    time.sleep(60)
elif mode == "loop":
    while True:
        env.step(actions)
elif mode == "leave-open":
    env.step(actions)  # exit normally without close(), still holding views of the buffers
"""


def start_child(mode: str) -> tuple[subprocess.Popen, list[int], str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, mode], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
        # Ctrl-C must reach Python even when this test run was started with SIGINT ignored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        env={**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    line = proc.stdout.readline()
    if not line:
        proc.wait(10)
        pytest.fail(f"child failed to start: {proc.stderr.read()}")
    info = json.loads(line)
    return proc, info["pids"], info["shm"]


@pytest.mark.parametrize("mode", ["exit", "sigkill", "sigint", "leave-open"])
def test_no_orphans_when_the_parent_goes(mode):
    proc, pids, shm = start_child({"sigkill": "sleep", "sigint": "loop"}.get(mode, mode))
    try:
        assert all(alive(p) for p in pids)
        if mode == "sigkill":
            proc.kill()
        elif mode == "sigint":
            time.sleep(0.3)  # let it step for a while
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole process group
        _, stderr = proc.communicate(timeout=15)
        wait_gone(pids, shm)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if mode == "sigint":
        assert "KeyboardInterrupt" in stderr
    if mode in ("sigint", "leave-open"):
        # the parent cleaned up itself: no tracker warning about leaked memory, no ignored errors
        assert "leaked" not in stderr and "Exception ignored" not in stderr, stderr
    if mode == "leave-open":
        assert proc.returncode == 0, stderr


# ---- (f) bad arguments ----

def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="num_envs=5 must be a multiple of num_workers=2.*Valid num_workers.*1, 5"):
        shoal.make("template", 5, backend="processes", num_workers=2)
    with pytest.raises(ValueError, match="num_workers=3 must be a multiple of num_buffers=2.*2, 6"):
        shoal.make("template", 6, backend="processes", num_workers=3, num_buffers=2)
    with pytest.raises(ValueError, match="num_envs=5 must be a multiple of num_buffers=2"):
        shoal.make("template", 5, num_buffers=2)
    with pytest.raises(ValueError, match="unknown backend 'proccesses'.*serial, threads, processes"):
        shoal.make("template", 4, backend="proccesses")
    with pytest.raises(ValueError, match="num_workers must be a positive integer"):
        shoal.make("template", 4, backend="processes", num_workers=0)
    with pytest.raises(ValueError, match="num_buffers must be a positive integer"):
        ProcessVecEnv(native_shard_factory("template"), 4, num_buffers=0)
    with pytest.raises(ValueError, match="unknown env"):
        native_shard_factory("no-such-env")


def test_shard_factory_is_described_without_envs():
    factory = native_shard_factory("template", {"length": 5})
    name, obs_space, act_space, agents, act_dtype = factory.describe()
    assert (name, obs_space.shape, act_space.n, agents) == ("template", (5,), 2, 1)
    assert np.dtype(act_dtype) == np.int32
    import pickle
    assert pickle.loads(pickle.dumps(factory)).params == factory.params


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs a CPU affinity mask of two cores or more")
def test_default_worker_counts_fit_the_cores_a_pinned_process_may_use():
    """The backends' default worker counts start from the cores the process may run on: one
    pinned to one core (``taskset -c 0``, a container's cpuset) gets one worker thread or
    process, not one per core of the machine; unpinned, one per usable core."""
    cores = len(os.sched_getaffinity(0))
    one_core = min(os.sched_getaffinity(0))
    code = ("import os, sys, shoal\n"
            "from shoal.emulation import default_num_workers, make\n"
            "if sys.argv[1] == 'pinned':\n"
            f"    os.sched_setaffinity(0, {{{one_core}}})   # as taskset -c would\n"
            "native = shoal.make('template', 8, backend='threads')\n"
            "python = make('gym:CartPole-v1', 8, backend='threads')\n"
            "print(native.num_threads, python.num_threads, default_num_workers(8, 1))\n"
            "native.close(); python.close()\n")
    counts = {}
    for how in ("pinned", "free"):
        out = subprocess.run([sys.executable, "-c", code, how], capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stderr
        counts[how] = [int(v) for v in out.stdout.split()]
    assert counts["pinned"] == [1, 1, 1]
    workers = max(w for w in range(1, min(cores, 8) + 1) if 8 % w == 0)
    assert counts["free"] == [min(cores, 8), min(cores, 8), workers]
