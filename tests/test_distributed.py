"""Data-parallel training on torch.distributed (gloo, CPU): every test starts real torchrun jobs
on loopback addresses only.

- gradient parity: two ranks with half a batch each, after the all-reduce, hold the gradient of
  one process on the whole batch (fused LSTM policy, ragged masks, advantage normalisation),
  the same bits on both ranks, summed through shared memory (the default on one host) and
  through gloo (SHOAL_DIST_SHM=0);
- a 2-rank job learns the bandit sanity env, rank 0 writing one run directory for the job;
- its traced collectives: one per minibatch (the gradients, carrying the next minibatch's
  statistics, and at the epoch's end its statistics and stop votes) and one per epoch (the first
  minibatch's statistics), the same on both ranks, none in the rollout; the gradient sums in
  shared memory, the rest on gloo;
- SIGTERM to one rank of a job: every rank stops at the same epoch boundary and checkpoints;
- stopped and resumed (``--resume``), and killed then restarted by torchrun (``--max-restarts``),
  a 2-rank job writes exactly the metrics of the uninterrupted one;
- two torchrun "nodes" (``--nnodes 2 --node-rank 0/1``) meet at a loopback rendezvous;
- killing one rank mid-epoch ends the job with an error naming that rank, within the documented
  bound, and leaves no process behind;
- killing torchrun itself (``kill -9``): its ranks notice, checkpoint after the same epoch and
  exit within the documented bound, leaving no process behind.
"""

from __future__ import annotations

import collections
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(REPO, "tests", "support", "dist_worker.py")
# the bandit env's shipped config: 64 envs x 16 steps per rank, 40,000 steps for the job
BANDIT_EPOCHS = 20   # ceil(40_000 / (2 ranks x 64 x 16))
EPOCH_END_MARK = "[epoch end]"   # shoal.trainer.distributed.EPOCH_END_MARK


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, nproc: int = 2, extra_env: dict | None = None,
             rdzv: list[str] | None = None) -> list[str]:
    """A torchrun command line: standalone-style static rendezvous on a free loopback port."""
    rdzv = rdzv or ["--nnodes", "1", "--master-addr", "127.0.0.1",
                    "--master-port", str(free_port())]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
            "--monitor-interval", "0.5", *rdzv, *args]


def environment(**extra: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [REPO, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep), OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def run(cmd: list[str], timeout: float = 240, **extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO, env=environment(**extra), capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n" \
                                 f"{proc.stderr[-6000:]}"
    return proc


def metrics(run_dir) -> list[tuple]:
    """What an exactly resumed run must reproduce (timings excluded)."""
    out = []
    with open(os.path.join(run_dir, "metrics.jsonl")) as fh:
        for line in fh:
            m = json.loads(line)
            out.append((m["epoch"], m["agent_steps"], m["losses"], m["episodes"], m["score100"]))
    return out


def train_cmd(run_dir, *flags: str) -> list[str]:
    return torchrun("-m", "shoal", "train", "bandit", "--run-dir", str(run_dir),
                    "--log.dashboard", "off", *flags)


@pytest.fixture(scope="module")
def whole_run(tmp_path_factory):
    """One uninterrupted 2-rank bandit run (the reference of the resume tests)."""
    run_dir = tmp_path_factory.mktemp("dist") / "whole"
    # traced: every rank writes its collectives into the run directory's trace/ at the end
    run(train_cmd(run_dir, "--log.checkpoint-interval", "2"),
        SHOAL_DIST_TRACE=str(run_dir / "trace"))
    return run_dir


@pytest.mark.parametrize("shm", ["1", "0"])
def test_gradient_parity_two_ranks_half_batch_each(tmp_path, shm):
    """Both ways of summing gradients: through shared memory (the default with every rank on
    one host) and through gloo (SHOAL_DIST_SHM=0)."""
    out = tmp_path / "grad.json"
    run(torchrun(WORKER, "grad", str(out)), SHOAL_DIST_SHM=shm)
    r = json.loads(out.read_text())
    assert r["world_size"] == 2
    # the minibatch's sum and the next one in its kept buffer took the way asked
    assert r["shared_memory_sums"] == (2 if shm == "1" else 0)
    assert r["segments_left"] == []                      # unlinked once mapped
    assert r["same_bits"]                                # every rank holds the same gradient
    assert r["max_abs"] > 1e-3                           # a real gradient, not all zeros
    assert r["max_abs_diff"] <= 1e-5 * max(1.0, r["max_abs"])
    assert r["norm_summed"] == pytest.approx(r["norm_whole"], rel=1e-5)   # clipping: global norm
    assert r["weights_max"] == pytest.approx(1.0)        # largest weight of the job's minibatch
    assert r["weights_err"] < 1e-6
    # gather_values: exact floats, nan, and a value larger than the one-round buffer
    assert r["gathered"] == [{"rank": 0, "x": 0.1, "pad": ""},
                             {"rank": 1, "x": 1.1, "pad": "x" * 9000}]
    assert r["gathered_nan"] is True
    assert r["reuse"] == {"doubled": True, "same_buffer": True}
    # a minibatch's count, advantage moments and weight scale riding in the gradient all-reduce
    # are the all-gathered ones and one process's over the whole minibatch
    m = r["moments"]
    assert m["riding"] == pytest.approx(m["gathered"], rel=1e-12)
    assert m["riding"][:3] == pytest.approx(m["whole"], rel=1e-6)
    assert m["riding"][3] == pytest.approx(m["own_scale"], rel=1e-12)
    assert m["whole"][0] > 10 and m["whole"][2] > 0.01      # real counts and spread
    # an epoch's end riding in the gradient all-reduce: what the separate statistics all-gather
    # and stop-flag all-reduce gave, to the bit (also when one rank's is too large to ride)
    for case in ("small", "large"):
        e = r["epoch_end"][case]
        assert e["riding"] == e["separate"], case
    assert r["epoch_end"]["small"]["stop"] is True and r["epoch_end"]["small"]["n"] == 11.0
    assert r["epoch_end"]["large"]["stop"] is False and r["epoch_end"]["large"]["n"] == 4.0


def test_collectives_per_epoch_one_per_minibatch(whole_run):
    """Per minibatch one gradient all-reduce (the next minibatch's statistics ride in it); per
    epoch one all-gather of the first minibatch's statistics, and nothing else: the epoch's
    statistics and the stop flag ride in its last gradient all-reduce; none in the rollout."""
    traces = [[json.loads(line) for line in
               (whole_run / "trace" / f"collectives.rank{r}.jsonl").read_text().splitlines()]
              for r in (0, 1)]
    assert [c["what"].split(" @ ")[0] for c in traces[0]] == \
        [c["what"].split(" @ ")[0] for c in traces[1]]          # the same, in the same order
    kinds = [c["what"].split(" @ ")[0] for c in traces[0]]
    sites = [c["what"].split(" @ ")[1].split(":")[0] for c in traces[0]]
    ends = [i for i, kind in enumerate(kinds) if EPOCH_END_MARK in kind]
    assert len(ends) == BANDIT_EPOCHS
    assert {kinds[i] for i in ends} == {f"gradient all-reduce {EPOCH_END_MARK}"}
    # both ranks on this host: every gradient sum went through shared memory, the rest gloo
    ways = {(kind.split(" [")[0], c["via"]) for kind, c in zip(kinds, traces[0])}
    assert ("gradient all-reduce", "shared memory") in ways
    assert ("gradient all-reduce", "process group") not in ways
    assert ("all-gather", "process group") in ways
    assert "_train" not in sites                 # no stop-flag collective after the epoch
    minibatches = 64 // (256 // 16)          # the bandit config: 64 segments, 16 per minibatch
    for a, b in zip(ends, ends[1:]):
        epoch = collections.Counter(
            (kind.split(" [")[0], site)
            for kind, site in zip(kinds[a + 1:b + 1], sites[a + 1:b + 1])
            if site != "state_dict")         # checkpoint: every second epoch
        # the first minibatch's all-gather is waited for in its loss, after the replay
        assert epoch == {("all-gather", "ppo_loss"): 1,
                         ("gradient all-reduce", "update"): minibatches}, epoch


def test_observation_statistics_merge_over_ranks(tmp_path):
    """train.norm_obs: each rank's batch moments are summed over ranks, so every rank holds
    numpy's mean and variance of the union of the ranks' live rows."""
    out = tmp_path / "obsnorm.json"
    run(torchrun(WORKER, "obsnorm", str(out)))
    r = json.loads(out.read_text())
    assert r["world_size"] == 2 and r["ranks_equal"]
    assert r["counts"] == [r["rows"], r["rows"]]
    assert r["mean_err"] < 1e-12 and r["var_err"] < 1e-9


def test_two_ranks_learn_bandit_rank0_writes_the_run(whole_run):
    summary = json.loads((whole_run / "summary.json").read_text())
    assert summary["finished"]
    assert summary["score"] >= 0.95
    assert summary["batch_size"] == 2 * 64 * 16           # the job's batch: both ranks
    rows = metrics(whole_run)
    assert [r[0] for r in rows] == list(range(1, BANDIT_EPOCHS + 1))
    assert rows[-1][1] == BANDIT_EPOCHS * 2 * 64 * 16
    last = json.loads((whole_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert set(last["time"]) >= {"env", "inference", "learn", "comm"}
    # episodes of both ranks: 2 x 64 envs finish a 5-step episode 16/5 times per epoch
    assert last["episodes"]["n"] > 64 * 16 / 5
    ckpt = torch.load(sorted((whole_run / "checkpoints").iterdir())[-1], weights_only=True)
    assert ckpt["world_size"] == 2 and len(ckpt["ranks"]) == 1
    assert not torch.equal(ckpt["rng"]["actions"], ckpt["ranks"][0]["rng"]["actions"])


def test_two_ranks_stop_and_resume_exactly(whole_run, tmp_path):
    part = tmp_path / "part"
    run(torchrun(WORKER, "train", str(part), "--stop", "7"))      # through shoal.train
    assert [r[0] for r in metrics(part)] == list(range(1, 8))
    run(torchrun("-m", "shoal", "train", "--resume", str(part), "--log.dashboard", "off"))
    assert metrics(part) == metrics(whole_run)
    # the same N is required, with a message saying so
    one = subprocess.run([sys.executable, "-m", "shoal", "train", "--resume", str(part)],
                         cwd=REPO, env=environment(), capture_output=True, text=True,
                         timeout=120)
    assert one.returncode == 2 and "2 rank(s)" in one.stderr


def test_torchrun_restart_resumes_from_last_checkpoint(whole_run, tmp_path):
    crashed = tmp_path / "crashed"
    proc = run(torchrun("--max-restarts", "1", WORKER, "train", str(crashed), "--crash", "9"))
    # rank 1 did die at epoch 9 of the first attempt (the worker's exit code 3)
    assert "(exitcode: 3) local_rank: 1" in proc.stderr, proc.stderr[-3000:]
    assert metrics(crashed) == metrics(whole_run)


def test_two_ranks_overlapped_fused_rollout_is_deterministic_and_resumes_exactly(tmp_path):
    """train.overlap under torchrun: each rank collects its next batch during the update (the
    update's collectives run on the training thread only), reproducibly, and a stopped job
    resumes each rank's pending batch."""
    flags = ("--train.rollout", "fused", "--train.overlap", "true",
             "--train.total-steps", str(8 * 2 * 64 * 16))
    whole, again, part = tmp_path / "whole", tmp_path / "again", tmp_path / "part"
    run(train_cmd(whole, *flags))
    run(train_cmd(again, *flags))
    assert metrics(whole) == metrics(again) and len(metrics(whole)) == 8
    run(torchrun(WORKER, "train", str(part), "--stop", "4", "--overlap"))
    run(torchrun("-m", "shoal", "train", "--resume", str(part), "--log.dashboard", "off"))
    assert metrics(part) == metrics(whole)
    ckpt = torch.load(sorted((part / "checkpoints").iterdir())[-1], weights_only=True)
    assert ckpt["fused"] is not None and ckpt["ranks"][0]["fused"] is not None
    assert not torch.equal(ckpt["fused"]["obs"], ckpt["ranks"][0]["fused"]["obs"])


def test_two_ranks_pipelined_log_what_two_synchronous_ranks_log(tmp_path):
    """train.pipeline under torchrun: each rank trains on its first envs while its rollout
    thread collects the rest (the update's collectives stay on the training thread, the
    episodes of both ranks merged once every range is in). The job logs what the same job on
    the synchronous fused path with the same minibatches logs: losses, episodes, explained
    variance, epoch by epoch."""
    flags = ("--train.rollout", "fused", "--train.overlap", "false", "--train.minibatches",
             "ranges", "--train.total-steps", str(4 * 2 * 64 * 16))
    sync, piped = tmp_path / "sync", tmp_path / "piped"
    run(train_cmd(sync, *flags))
    run(train_cmd(piped, *flags, "--train.pipeline", "true"))
    assert metrics(piped) == metrics(sync) and len(metrics(sync)) == 4
    assert metrics(sync)[-1][3]["n"] > 64 * 16 / 5       # both ranks' episodes


def test_normalised_weights_are_refused_across_ranks_before_the_run_starts(tmp_path):
    """train.overlap_weight_norm needs the whole minibatch: a 2-rank job (each rank half of
    it) stops at set-up with an error naming the setting and the fix, writing no run."""
    run_dir = tmp_path / "run"
    proc = subprocess.run(train_cmd(run_dir, "--train.rollout", "fused", "--train.overlap",
                                    "true", "--train.overlap-weight-norm", "true"),
                          cwd=REPO, env=environment(), capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "overlap_weight_norm" in out and "a job of 2 ranks" in out, out[-3000:]
    assert not (run_dir / "metrics.jsonl").exists()


def test_two_nodes_meet_at_a_loopback_rendezvous(tmp_path):
    port = free_port()
    run_dir = tmp_path / "nodes"
    procs = []
    for node in (0, 1):
        rdzv = ["--nnodes", "2", "--node-rank", str(node), "--rdzv-endpoint",
                f"127.0.0.1:{port}"]
        cmd = torchrun("-m", "shoal", "train", "bandit", "--run-dir", str(run_dir),
                       "--log.dashboard", "off", "--train.total-steps", "8192",
                       nproc=1, rdzv=rdzv)
        procs.append(subprocess.Popen(cmd, cwd=REPO, env=environment(),
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True))
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-3000:] for o in outputs)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["batch_size"] == 2 * 64 * 16 and summary["epochs"] == 4


# ---- a rank killed mid-epoch ----

def _environ(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            items = fh.read().split(b"\0")
    except OSError:
        return {}
    return dict(i.decode(errors="replace").partition("=")[::2] for i in items if b"=" in i)


def _marked(marker: str) -> dict[int, dict[str, str]]:
    """Live processes carrying the test's marker in their environment (the job and every
    process it started), with their environments."""
    found = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            env = _environ(int(name))
            if env.get("SHOAL_TEST_MARK") == marker:
                try:
                    with open(f"/proc/{name}/stat") as fh:
                        if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                            continue          # exited, waiting to be reaped
                except OSError:
                    continue
                found[int(name)] = env
    return found


def _start_job(run_dir, marker: str, epochs: int, *flags: str, **env: str) -> subprocess.Popen:
    """A 2-rank job of ``train_cmd`` in a session of its own, its processes marked with
    ``marker``, returned once ``epochs`` epochs are logged (still running)."""
    proc = subprocess.Popen(train_cmd(run_dir, "--train.total-steps", "100000000", *flags),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True,
                            env=environment(SHOAL_TEST_MARK=marker, **env))
    deadline = time.monotonic() + 180
    metrics_file = run_dir / "metrics.jsonl"
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics_file.exists() and len(metrics_file.read_text().splitlines()) >= epochs:
            break
        time.sleep(0.2)
    return proc


# A rank whose peer died fails at its next collective at once (closed connection) or after
# SHOAL_DIST_TIMEOUT at the latest; torchrun then stops the job. The test sets the timeout to
# 20 s and allows 60 s for the whole job to end (docs/distributed.md).
KILL_TIMEOUT = 20
KILL_BOUND = 60


def test_killing_a_rank_ends_the_job_naming_it_and_leaves_no_process(tmp_path):
    marker = uuid.uuid4().hex
    run_dir = tmp_path / "killed"
    proc = _start_job(run_dir, marker, 2, "--env.num-envs", "256", "--env.backend", "processes",
                      "--env.num-workers", "1", SHOAL_DIST_TIMEOUT=str(KILL_TIMEOUT))
    try:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        # rank 1 is a child of torchrun (its env workers, children of rank 1, share its RANK)
        rank1 = [pid for pid, env in _marked(marker).items()
                 if env.get("RANK") == "1" and _parent(pid) == proc.pid]
        assert rank1, "rank 1's process was not found"
        time.sleep(0.05)                                  # somewhere inside an epoch
        os.kill(rank1[0], signal.SIGKILL)
        killed_at = time.monotonic()
        output = proc.communicate(timeout=KILL_BOUND)[0]
        elapsed = time.monotonic() - killed_at
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    assert elapsed < KILL_BOUND
    assert "rank      : 1" in output or "rank: 1" in output, output[-3000:]
    time.sleep(1.0)
    assert _marked(marker) == {}, "processes left behind"


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1



# ---- in-process checks of the launch environment (no job started) ----

TORCHRUN_ENV = {"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": "29500", "TORCHELASTIC_MAX_RESTARTS": "2"}


def test_elastic_restart_target(monkeypatch, tmp_path):
    from shoal.trainer.checkpoint import checkpoint_path
    from shoal.trainer.distributed import elastic_resume_target

    for key, value in TORCHRUN_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "0")
    with pytest.raises(ValueError, match="--run-dir"):
        elastic_resume_target(None)                  # restarts could not find the run
    assert elastic_resume_target(str(tmp_path)) is None          # first attempt: a new run
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n')
    assert elastic_resume_target(str(tmp_path)) is None          # no checkpoint yet: start over
    assert not (tmp_path / "metrics.jsonl").exists()
    path = checkpoint_path(str(tmp_path), 4)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "wb").close()
    assert elastic_resume_target(str(tmp_path)) == str(tmp_path)


def test_timeout_setting_is_checked(monkeypatch):
    from shoal.trainer.distributed import DEFAULT_TIMEOUT_SECONDS, timeout_seconds

    monkeypatch.delenv("SHOAL_DIST_TIMEOUT", raising=False)
    assert timeout_seconds() == DEFAULT_TIMEOUT_SECONDS
    monkeypatch.setenv("SHOAL_DIST_TIMEOUT", "7.5")
    assert timeout_seconds() == 7.5
    for bad in ("soon", "0", "-3", "inf"):
        monkeypatch.setenv("SHOAL_DIST_TIMEOUT", bad)
        with pytest.raises(ValueError, match="SHOAL_DIST_TIMEOUT"):
            timeout_seconds()


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
def test_pinned_ranks_keep_to_their_share_of_the_cpus(tmp_path):
    """SHOAL_DIST_PIN=1: each rank's threads (gloo's and those it starts later) keep to its own
    share of the CPUs; close() gives the process back the CPUs it had."""
    from shoal.trainer.distributed import rank_cpus

    out = tmp_path / "pin.json"
    run(torchrun(WORKER, "pin", str(out)), SHOAL_DIST_PIN="1")
    r = json.loads(out.read_text())
    for rank, part in enumerate(r["ranks"]):
        share = rank_cpus(rank, 2, part["before"])
        assert part["after"] == part["thread"] == part["gloo"] == (share or part["before"])
    if len(r["ranks"][0]["before"]) >= 2:
        assert not set(r["ranks"][0]["after"]) & set(r["ranks"][1]["after"])
    assert r["restored"] == r["ranks"][0]["before"]


def test_pinned_trainer_threads_leave_gloo_threads_free(tmp_path):
    """SHOAL_DIST_PIN=trainer: each rank's trainer thread (and threads it starts later) keeps to
    its share of the CPUs; gloo's threads keep every CPU the process had."""
    from shoal.trainer.distributed import rank_cpus

    out = tmp_path / "pin.json"
    run(torchrun(WORKER, "pin", str(out)), SHOAL_DIST_PIN="trainer")
    r = json.loads(out.read_text())
    for rank, part in enumerate(r["ranks"]):
        share = rank_cpus(rank, 2, part["before"])
        assert part["after"] == part["thread"] == (share or part["before"])
        assert part["gloo"] == part["before"]
    if len(r["ranks"][0]["before"]) >= 2:
        assert not set(r["ranks"][0]["after"]) & set(r["ranks"][1]["after"])
    assert r["restored"] == r["ranks"][0]["before"]


def test_pin_setting_and_shares(monkeypatch):
    from shoal.trainer.distributed import PIN_ENV, pin_setting, rank_cpus

    monkeypatch.delenv(PIN_ENV, raising=False)
    assert pin_setting() == ""
    monkeypatch.setenv(PIN_ENV, "0")
    assert pin_setting() == ""
    monkeypatch.setenv(PIN_ENV, "1")
    assert pin_setting() == "rank"
    monkeypatch.setenv(PIN_ENV, "trainer")
    assert pin_setting() == "trainer"
    monkeypatch.setenv(PIN_ENV, "yes")
    with pytest.raises(ValueError, match="SHOAL_DIST_PIN='yes'"):
        pin_setting()
    assert rank_cpus(1, 2, {3, 1}) == [3]
    assert rank_cpus(1, 2, range(5)) == [2, 3]         # equal shares, the odd one unused
    assert rank_cpus(0, 3, [0, 1]) is None              # fewer CPUs than ranks: no pinning


def test_spin_setting_is_checked(monkeypatch):
    from shoal.trainer.distributed import DEFAULT_SPIN_MS, spin_seconds

    monkeypatch.delenv("SHOAL_DIST_SPIN_MS", raising=False)
    assert spin_seconds() == DEFAULT_SPIN_MS / 1000
    monkeypatch.setenv("SHOAL_DIST_SPIN_MS", "0")
    assert spin_seconds() == 0.0
    monkeypatch.setenv("SHOAL_DIST_SPIN_MS", "2.5")
    assert spin_seconds() == 0.0025
    for bad in ("soon", "-1", "inf", "nan"):
        monkeypatch.setenv("SHOAL_DIST_SPIN_MS", bad)
        with pytest.raises(ValueError, match="SHOAL_DIST_SPIN_MS"):
            spin_seconds()


def test_riding_moments_are_the_tensor_combination_to_the_bit():
    """The job's moments that ride in a gradient all-reduce are combined on the CPU as Python
    floats: the same bits as the tensor combination (the device path), for ragged ranks, a rank
    with no live step, weighted and unweighted draws; and a slot encoded into a kept buffer is
    the freshly allocated one."""
    from shoal.trainer.distributed import (_encode_slot, _job_moments_tensor, _riding_moments,
                                           job_moments, rank_share)

    g = torch.Generator().manual_seed(5)
    for world_size in (2, 3):
        for weighted in (True, False):
            shares = []
            for r in range(world_size):
                adv = 3.0 * torch.randn(6, 7, generator=g) + r
                masks = (torch.rand(6, 7, generator=g) < 0.6).float()
                if r == world_size - 1:
                    masks.zero_()                       # a rank with no live step
                peak = torch.rand((), generator=g) + 0.5 if weighted else None
                shares.append(rank_share(adv, masks, peak))
            summed = sum(_encode_slot(x, r, world_size) for r, x in enumerate(shares))
            kept = torch.full_like(summed, 7.0)          # a kept buffer holds old values
            _encode_slot(shares[1], 1, world_size, out=kept)
            assert torch.equal(kept, _encode_slot(shares[1], 1, world_size))
            rows = torch.stack(shares)
            for rank in range(world_size):
                as_tensors = _job_moments_tensor(rows, rows[rank], torch.float32)
                as_floats = job_moments(rows, rows[rank])
                riding = _riding_moments(summed, world_size, shares[0].shape, rank)
                assert torch.equal(torch.stack(list(as_floats)), torch.stack(list(as_tensors)))
                assert all(x.dtype == torch.float32 and x.dim() == 0 for x in as_floats)
                # the riding values are the shares to ~48 bits (a float32 pair each)
                assert torch.allclose(torch.stack(list(riding)), torch.stack(list(as_floats)),
                                      rtol=1e-6, atol=0)
            assert float(as_floats.count) == float(rows[:, 0].sum())


def test_statistics_combined_from_parts_match_the_whole():
    """Every rank's moments (Chan's combination) give the statistics of all steps together."""
    from shoal.trainer.distributed import explained_from_parts, variance_parts

    g = torch.Generator().manual_seed(3)
    values = torch.randn(12, 9, generator=g)
    returns = 5.0 + 2.0 * torch.randn(12, 9, generator=g) + values
    masks = (torch.rand(12, 9, generator=g) < 0.7).float()
    masks[8:] = 0.0                                       # the last "rank" has no live step
    whole = explained_from_parts([variance_parts(values, returns, masks)])
    m = masks > 0
    expected = 1 - float((returns - values)[m].var(correction=0) / returns[m].var(correction=0))
    assert whole == pytest.approx(expected, rel=1e-6)
    parts = [variance_parts(values[a:b], returns[a:b], masks[a:b]) for a, b in
             ((0, 3), (3, 8), (8, 12))]
    assert explained_from_parts(parts) == pytest.approx(whole, rel=1e-6)
    assert math.isnan(explained_from_parts([variance_parts(values, returns, 0 * masks)]))


def test_one_process_collective_is_the_identity():
    from shoal.trainer.distributed import Collective, merge_means

    one = Collective()
    x = torch.tensor([1.0, 2.0])
    assert one.sum(x) is x and one.max(x) is x and not one.distributed and one.is_main
    assert one.object_gather({"a": 1}) == [{"a": 1}] and one.any(False) is False
    assert merge_means([{"score": 1.0, "n": 3.0}, {"score": 0.0, "n": 1.0}, {"n": 0.0}]) == \
        {"score": 0.75, "n": 4.0}


def test_agent_watch_turns_true_once_the_parent_is_not_the_agent():
    from shoal.trainer.distributed import AGENT_EXITED, AgentWatch, Collective
    from shoal.trainer.signals import deferred_stop

    said: list[str] = []
    with deferred_stop(said.append) as request:
        assert Collective().watch_agent(request) is request     # no torchrun: nothing to watch
        alive = AgentWatch(request, os.getppid(), rank=0, announce=said.append)
        assert not alive() and alive.name is None and said == []
        # this process's own pid is never its parent's: as after torchrun's agent exited
        gone = AgentWatch(request, os.getpid(), rank=1, announce=said.append)
        assert gone() and gone() and gone.name == AGENT_EXITED
        assert said == [f"rank 1: torchrun's agent (pid {os.getpid()}) exited; stopping after "
                        f"this epoch's checkpoint"]              # said once
        os.kill(os.getpid(), signal.SIGTERM)                     # a signal's name wins
        assert alive() and alive.name == "SIGTERM" and gone.name == "SIGTERM"


def test_sigterm_to_one_rank_stops_every_rank_at_one_epoch_boundary(tmp_path):
    """The stop votes ride in an epoch's last gradient all-reduce: SIGTERM to rank 1 alone stops
    both ranks after the same epoch, with a checkpoint of that epoch holding both ranks."""
    marker = uuid.uuid4().hex
    run_dir = tmp_path / "term"
    proc = _start_job(run_dir, marker, 3)
    try:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        rank1 = [pid for pid, env in _marked(marker).items()
                 if env.get("RANK") == "1" and _parent(pid) == proc.pid]
        assert rank1, "rank 1's process was not found"
        os.kill(rank1[0], signal.SIGTERM)
        output = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert "SIGTERM: finishing this epoch" in output, output[-3000:]
    last = metrics(run_dir)[-1][0]
    assert last < 100000000 // (2 * 64 * 16)           # stopped, not finished
    ckpt = torch.load(sorted((run_dir / "checkpoints").iterdir())[-1], weights_only=True)
    assert ckpt["epoch"] == last                       # rank 0 stopped after the last epoch...
    assert ckpt["world_size"] == 2 and len(ckpt["ranks"]) == 1   # ...and rank 1 saved with it
    # rank 1 exits as `shoal train` does on SIGTERM (128 + 15), rank 0 as stopped cleanly
    assert "exitcode: 143" in output or "exitcode  : 143" in output, output[-3000:]


# ---- torchrun itself killed ----

# torchrun's agent killed by SIGKILL cannot stop its ranks (they run in sessions of their own):
# each rank notices at the end of an epoch that its parent is gone and votes stop, so all ranks
# checkpoint and exit after the same epoch: within two epochs and a checkpoint
# (docs/distributed.md), a fraction of a second for the bandit's; the test allows 60 s.
ORPHAN_BOUND = 60


def test_killing_torchrun_stops_its_ranks_after_a_checkpoint(tmp_path):
    marker = uuid.uuid4().hex
    run_dir = tmp_path / "orphaned"
    proc = _start_job(run_dir, marker, 3)
    try:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        ranks = sorted(pid for pid in _marked(marker) if _parent(pid) == proc.pid)
        assert len(ranks) == 2, "the two ranks were not found"
        os.kill(proc.pid, signal.SIGKILL)
        killed_at = time.monotonic()
        # the ranks hold torchrun's stdout: it ends when both have exited
        output = proc.communicate(timeout=ORPHAN_BOUND)[0]
        while _marked(marker) and time.monotonic() - killed_at < ORPHAN_BOUND:
            time.sleep(0.1)
        elapsed = time.monotonic() - killed_at
        left = _marked(marker)
    finally:
        for pid in _marked(marker):      # a failed test leaves nothing running either
            os.kill(pid, signal.SIGKILL)
        proc.wait()
    assert left == {}, "processes left behind"
    assert elapsed < ORPHAN_BOUND
    assert f"torchrun's agent (pid {proc.pid}) exited; stopping after this epoch's " \
           "checkpoint" in output, output[-3000:]
    last = metrics(run_dir)[-1][0]
    assert last < 100000000 // (2 * 64 * 16)           # stopped, not finished
    ckpt = torch.load(sorted((run_dir / "checkpoints").iterdir())[-1], weights_only=True)
    assert ckpt["epoch"] == last                       # both ranks stopped after the last epoch
    assert ckpt["world_size"] == 2 and len(ckpt["ranks"]) == 1
    with open(run_dir / "summary.json") as fh:
        assert json.load(fh)["stopped_by"] == "torchrun exited"
