"""The fused rollout, overlap and learner threads against the torch rollout, measured in one run.

Sides (``--sides``, any of). Each but ``shipped`` sets the rollout path, overlap and precision
explicitly (float32 unless it says bfloat16), whatever the env's shipped file chooses:

* ``torch``:   ``--train.rollout torch --train.overlap false --train.precision float32`` (the
  synchronous float32 torch path)
* ``fused``:   ``--train.rollout fused --train.overlap false --train.precision float32``
* ``overlap``: ``--train.rollout fused --train.overlap true --train.precision float32``
* ``entropy``: ``overlap`` plus ``--train.ent-coef 0.02`` (twice the default entropy bonus)
* ``chunks``:  ``overlap`` plus ``--train.overlap-chunks 8`` (the next batch collected in 8
  chunks, chunk j acted by the learner's weights after j/8 of the update's gradient steps)
* ``cores``:   ``overlap`` plus ``--train.learner-threads 2`` (the update's minibatches split
  over two threads, so the second core works through the whole update)
* ``bf16``:    ``torch`` with ``--train.precision bfloat16`` (products in bfloat16; the LSTM
  through its fused bfloat16 path)
* ``overlap-bf16``: ``overlap`` with ``--train.precision bfloat16`` (the learner's products in
  bfloat16; the C policy still acts in float32)
* ``shipped``: no overrides: ``shoal train ENV`` as shipped (breakout: the pipelined fused
  rollout with ``train.precision = "auto"`` and the free-core tail, i.e.
  ``pipeline-free-core``; before it ``pipeline``; before issue 8's pipeline, the fused rollout
  with overlap, ``overlap-bf16`` on a CPU with bfloat16 units)
* ``tail``: ``overlap-bf16`` plus ``--train.overlap-tail-threads 2`` (the update's last quarter
  of gradient steps on two torch threads, once the rollout thread is done)
* ``tail-late``: ``tail`` with ``--train.overlap-tail-start 0.875`` (the last eighth)
* ``sync-cores``, ``sync-one-thread``: the synchronous fused rollout, precision "auto", the
  learner on two (one) torch threads
* ``pipeline``: ``--train.rollout fused --train.overlap false --train.pipeline true
  --train.minibatches ranges --train.precision auto``, one torch thread throughout (synchronous
  PPO, the learner training on each minibatch's envs as soon as they are collected)
* ``pipeline-tail``, ``pipeline-tail-late``: ``pipeline`` with the update's last quarter
  (eighth) of gradient steps on two torch threads once the rollout thread is done, in every
  update (``--train.overlap-tail-when always``; so are ``tail`` and ``tail-late``)
* ``pipeline-free-core``: ``pipeline-tail`` in the updates whose rollout thread had its core to
  itself, where two threads compute one thread's bits (``--train.overlap-tail-when
  free_core``: breakout's shipped path)
* ``ranges``: ``torch`` with ``--train.minibatches ranges`` (pipeline's minibatch schedule)
* ``breakout-path``: breakout's shipped overlapped settings, on any env

Modes, each alternating the sides run after run and reporting medians:

``--mode sps`` (default): ``shoal train breakout`` with the shipped settings and each side's
overrides; training steps/s over epochs ``--skip``.. of a run of ``--epochs`` epochs (a fresh
run per side and round, seed = round), the inference share of an epoch ((rollout time - env
stepping) / epoch time, from metrics.jsonl), the CPU use over the run (process user+sys time /
wall), and the policy's forward + sample per agent-step, C net vs torch (one thread each)::

    python benchmarks/fused_bench.py --mode sps --rounds 3 --epochs 12

``--mode score``: ``shoal train breakout`` with the shipped settings to ``--steps`` (default
the shipped 20M) per side and seed: the wall-clock (the trainer's own clock, start-up
excluded) to a mean score of ``--target`` (default 100) per side, the ratio to the first side,
the score at equal agent steps (per-step learning curves compared at ``--points`` milestones),
CPU use and inference share. Every run is appended to ``--log`` (JSON lines) and the summary is
computed over every run of that file, so the seeds can be split over several invocations::

    python benchmarks/fused_bench.py --mode score --sides torch,cores --seeds 0,1 --log score.jsonl
    python benchmarks/fused_bench.py --mode score --sides torch,cores --seeds 2 --log score.jsonl

``--mode sanity``: the same per-step comparison on sanity envs (``--envs``, default recall and
target, the learning tests' envs) with their shipped configs and budgets::

    python benchmarks/fused_bench.py --mode sanity --sides torch,cores --seeds 0,1,2

``--mode profile``: where the overlapped path's CPU time goes, per epoch (breakout shipped
settings, side ``overlap``, or each of ``--sides``, alternating run by run): on the learner's
thread the anchoring of the stale batch, the rest of the update, its copies of its weights for
the chunks (``train.overlap_chunks``) and the time it waits for the rollout thread; on the rollout
thread the anchoring it does ahead of the learner (since the minibatches' gathering moved there,
that too, and the explained variance of the anchored values) and the collection. Thread CPU time, so it stays
meaningful on a busy machine (medians over ``--rounds`` runs of ``--epochs`` epochs). Run it
against another checkout of shoal (``PYTHONPATH=../other``) to compare two versions::

    python benchmarks/fused_bench.py --mode profile --rounds 3 --epochs 12
    python benchmarks/fused_bench.py --mode profile --rounds 3 --epochs 12 --sides overlap,overlap-bf16
    python benchmarks/fused_bench.py --mode profile --sides overlap,chunks --rounds 2 --epochs 12

``--mode run-cpu``: the CPU use of ``shoal train breakout`` as a user starts it (a fresh
``python -m shoal train breakout --run-dir DIR`` process per run, with each side's overrides as
command-line flags and ``--train.seed`` = round): process user+sys time / wall time over the
whole run (start-up, checkpoints and exit included; from ``wait4``), and over its epochs only
(from the moment the first epoch's metrics line appears to the moment the last one does;
``/proc/PID/stat`` polled every 20 ms: a watcher waking more often takes time slices from the
run's threads), with the run's steps/s over the same span. ``--checkouts``
lists shoal checkouts to run (each with ``PYTHONPATH`` set to it; default this one), crossed
with ``--sides`` (default ``shipped``), alternating run by run; medians over ``--rounds``, and
each side's ratio to the first. ``--steps`` (default the shipped 20M) sets each run's length.
On a quiet machine (CPU use is meaningless while other processes compete for the cores)::

    git worktree add /tmp/base main    # (and python setup.py build_ext --inplace there)
    python benchmarks/fused_bench.py --mode run-cpu --checkouts /tmp/base,. --rounds 3

``--sides overlap,overlap-bf16`` in ``--mode sps`` gives the steps/s of a bfloat16 learner against
a float32 one (and the torch side as the baseline when listed first).

Timings on a shared machine are noisy: compare the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np
import torch

from run_records import median_known, read_jsonl


# Every side but "shipped" names its rollout path, overlap, pipeline, minibatch schedule,
# precision, torch threads and tail threads, so it measures the same thing whatever an env's
# shipped file chooses (breakout's ships the pipelined fused rollout, precision "auto", one torch
# thread).
# (and minibatches drawn as the default "draws": the sides measured before breakout shipped
# train.pipeline, whose "ranges" schedule only the pipeline sides and "ranges" use)
_SYNC = {"train.overlap": False, "train.precision": "float32", "train.torch_threads": 1,
         "train.pipeline": False, "train.minibatches": "draws", "train.overlap_tail_threads": 0}
# (and the stale batch's importance weights truncated at the default 2; breakout's overlapped
# path used 1)
_OVERLAP = {"train.rollout": "fused", "train.overlap": True, "train.precision": "float32",
            "train.torch_threads": 1, "train.overlap_weight_cap": 2.0, "train.pipeline": False,
            "train.minibatches": "draws", "train.overlap_tail_threads": 0}
# synchronous PPO on both cores by pipelining (breakout's shipped path since issue 8's pipeline)
_PIPELINE = {"train.rollout": "fused", "train.overlap": False, "train.pipeline": True,
             "train.minibatches": "ranges", "train.precision": "auto", "train.torch_threads": 1,
             "train.overlap_tail_threads": 0}
SIDES: dict[str, dict[str, Any]] = {
    "torch": {"train.rollout": "torch", **_SYNC},
    "fused": {"train.rollout": "fused", **_SYNC},
    "overlap": dict(_OVERLAP),
    # overlap with twice the default entropy bonus (the overlapped policy's entropy otherwise
    # settles at about half the synchronous one's: BENCHMARKS.md; breakout ships 0.02 now)
    "entropy": {**_OVERLAP, "train.ent_coef": 0.02},
    # overlap with the next batch collected in 8 chunks, each acted by fresher weights
    "chunks": {**_OVERLAP, "train.overlap_chunks": 8},
    "cores": {**_OVERLAP, "train.learner_threads": 2},
    "bf16": {"train.rollout": "torch", **_SYNC, "train.precision": "bfloat16"},
    "overlap-bf16": {**_OVERLAP, "train.precision": "bfloat16"},
    # overlap-bf16 with the update's last quarter of gradient steps on 2 torch threads, once
    # the rollout thread is done (breakout ships torch_threads = 1)
    # (in every update, as they were measured before the free-core test: overlap_tail_when)
    "tail": {**_OVERLAP, "train.precision": "bfloat16", "train.torch_threads": 1,
             "train.overlap_tail_threads": 2, "train.overlap_tail_start": 0.75,
             "train.overlap_tail_when": "always"},
    # the same with only the last of breakout's 8 steps on 2 threads (never waits as long)
    "tail-late": {**_OVERLAP, "train.precision": "bfloat16", "train.torch_threads": 1,
                  "train.overlap_tail_threads": 2, "train.overlap_tail_start": 0.875,
                  "train.overlap_tail_when": "always"},
    # the env's config as shipped, no overrides (breakout: fused, overlap, precision auto)
    "shipped": {},
    # both cores busy with no stale batch: the synchronous fused rollout (the envs over both
    # cores) and the learner on two torch threads (BENCHMARKS.md, "Both cores without a stale
    # batch"; run it with GOMP_SPINCOUNT=1000 when other runs share the cores)
    "sync-cores": {"train.rollout": "fused", "train.overlap": False, "train.precision": "auto",
                   "train.torch_threads": 2, "train.pipeline": False,
                   "train.minibatches": "draws", "train.overlap_tail_threads": 0},
    # the same with the learner on one torch thread: what the second one gives
    "sync-one-thread": {"train.rollout": "fused", "train.overlap": False,
                        "train.precision": "auto", "train.torch_threads": 1,
                        "train.pipeline": False, "train.minibatches": "draws",
                        "train.overlap_tail_threads": 0},
    # synchronous PPO on both cores by pipelining: the learner trains on each minibatch's envs
    # as soon as they are collected, the rollout thread collecting the rest with the same
    # weights (train.pipeline; minibatches in storage order, "ranges")
    "pipeline": dict(_PIPELINE),
    # pipeline with the update's last quarter (eighth) of gradient steps on two torch threads,
    # once the rollout thread has collected the batch, in every update
    "pipeline-tail": {**_PIPELINE, "train.overlap_tail_threads": 2,
                      "train.overlap_tail_start": 0.75, "train.overlap_tail_when": "always"},
    "pipeline-tail-late": {**_PIPELINE, "train.overlap_tail_threads": 2,
                           "train.overlap_tail_start": 0.875,
                           "train.overlap_tail_when": "always"},
    # the same tail in the updates whose rollout thread had its core to itself, where the
    # threads compute one thread's bits (breakout's shipped path since the free-core test)
    "pipeline-free-core": {**_PIPELINE, "train.overlap_tail_threads": 2,
                           "train.overlap_tail_start": 0.75,
                           "train.overlap_tail_when": "free_core"},
    # the synchronous torch path with pipeline's minibatch schedule (its per-step control)
    "ranges": {"train.rollout": "torch", **_SYNC, "train.minibatches": "ranges"},
    # the overlapped path breakout shipped before the pipeline, on any env (the sanity envs ship
    # the synchronous torch path)
    "breakout-path": {"train.rollout": "fused", "train.overlap": True, "train.precision": "auto",
                      "train.torch_threads": 1, "train.overlap_weight_cap": 1.0,
                      "train.overlap_advantages": "collector_later", "train.pipeline": False,
                      "train.minibatches": "draws", "train.overlap_tail_threads": 0},
}


def train_run(env: str, side: str, seed: int, steps: int | None = None,
              epochs: int | None = None) -> dict[str, Any]:
    """One ``shoal train env`` run with the side's overrides, in this process. Returns its
    metrics records and the process CPU time / wall time over training."""
    from shoal.trainer.config import build_config
    from shoal.trainer.ppo import Trainer

    run_dir = tempfile.mkdtemp(prefix=f"shoal-fused-bench-{env}-{side}-")
    cfg = build_config(env, overrides={
        **SIDES[side], "train.seed": seed, "log.dashboard": "off",
        "log.run_dir": os.path.join(run_dir, "run"), "log.checkpoint_interval": 10**6})
    batch = cfg.env.num_envs * cfg.train.horizon
    if epochs is not None:
        cfg.train.total_steps = epochs * batch
    elif steps is not None:
        cfg.train.total_steps = int(steps)
    trainer = Trainer(cfg)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    trainer.train()
    cpu = (time.process_time() - cpu0) / (time.perf_counter() - wall0)
    rows = read_jsonl(os.path.join(run_dir, "run", "metrics.jsonl"))
    return {"env": env, "side": side, "seed": seed, "cpu": cpu, "records": [
        {"steps": m["agent_steps"], "t": m["elapsed"], "sps": m["sps"], "score": m["score100"],
         "inference_share": m["time"]["inference"] / max(1e-9, sum(m["time"].values()))}
        for m in rows]}


def policy_round(seconds: float) -> dict[str, tuple[float, float]]:
    """(wall, cpu) microseconds per agent-step of forward + sample for each side."""
    from shoal.net.runtime import CPolicy, agent_rng
    from shoal.trainer.policies import Inference, make_policy
    from shoal.vector import make

    env = make("breakout", num_envs=256)
    policy = make_policy(env, "mlp", hidden=128)
    obs_space = env.single_observation_space
    B = env.num_agents
    env.close()
    obs_space.seed(0)
    obs = np.stack([obs_space.sample() for _ in range(B)])
    inference = Inference(policy, device="cpu", generator=torch.Generator().manual_seed(0))
    cpolicy = CPolicy.from_policy(policy, obs.dtype)
    rng = agent_rng(B, 0)

    def torch_step():
        inference.act(obs, None, None)

    def c_step():
        params, _ = cpolicy.forward(obs)
        cpolicy.sample(params, rng)

    out = {}
    for name, fn in (("torch", torch_step), ("c", c_step)):
        fn()
        wall0, cpu0, n = time.perf_counter(), time.process_time(), 0
        while time.perf_counter() - wall0 < seconds:
            fn()
            n += 1
        out[name] = ((time.perf_counter() - wall0) / n / B * 1e6,
                     (time.process_time() - cpu0) / n / B * 1e6)
    return out


# ---- summaries --------------------------------------------------------------------------------

def time_to(records: list[dict], target: float) -> float:
    """The trainer's clock at the first epoch whose score is at least ``target`` (inf: never)."""
    for r in records:
        if r["score"] is not None and r["score"] >= target:
            return r["t"]
    return math.inf


def score_at(records: list[dict], steps: float) -> float | None:
    """The score of the last epoch ending at or before ``steps`` agent steps."""
    score = None
    for r in records:
        if r["steps"] > steps:
            break
        score = r["score"]
    return score


def _fmt(x: float | None, spec: str = ".3g") -> str:
    if x is None:
        return "-"
    return "not reached" if math.isinf(x) else format(x, spec)


def run_costs(run: dict, skip: int = 2) -> tuple[float, float]:
    """(CPU use, median inference share of the epochs after the first ``skip``)."""
    rows = run["records"][skip:] or run["records"]
    return run["cpu"], statistics.median(r["inference_share"] for r in rows)


def print_curves(runs: list[dict], sides: list[str], points: int, label: str) -> None:
    """Score at equal agent steps per side (median over seeds, and each seed)."""
    total = min(r["records"][-1]["steps"] for r in runs)
    print(f"\n{label}: score (mean of the last 100 episodes) at equal agent steps, median over "
          f"seeds [each seed]")
    for k in range(1, points + 1):
        at = total * k / points
        cells = []
        for side in sides:
            per_seed = [score_at(r["records"], at) for r in runs if r["side"] == side]
            cells.append(f"{side} {_fmt(median_known(per_seed), '.3f')} "
                         f"[{' '.join(_fmt(s, '.3f') for s in per_seed)}]")
        print(f"  {at / 1e6:8.3f}M steps: " + " | ".join(cells))


def print_costs(runs: list[dict], sides: list[str]) -> None:
    for side in sides:
        mine = [r for r in runs if r["side"] == side]
        if not mine:
            continue
        costs = [run_costs(r) for r in mine]
        sps = statistics.median(r["records"][-1]["steps"] / max(1e-9, r["records"][-1]["t"])
                                for r in mine)
        print(f"  {side}: CPU use (process user+sys / wall) "
              f"{100 * statistics.median(c for c, _ in costs):.0f}% of one core, inference "
              f"share of an epoch {100 * statistics.median(s for _, s in costs):.1f}%, "
              f"steps/s over the run {sps:.0f}")


# ---- modes ------------------------------------------------------------------------------------

def mode_sps(args: argparse.Namespace, sides: list[str]) -> None:
    before = torch.get_num_threads()
    sps: dict[str, list[float]] = {side: [] for side in sides}
    share: dict[str, list[float]] = {side: [] for side in sides}
    cpu: dict[str, list[float]] = {side: [] for side in sides}
    per_step: dict[str, list[tuple[float, float]]] = {"torch": [], "c": []}
    for r in range(args.rounds):
        order = sides if r % 2 == 0 else sides[::-1]
        for side in order:
            run = train_run("breakout", side, seed=r, epochs=args.epochs)
            rows = run["records"][args.skip:] or run["records"]
            cpu[side].append(run["cpu"])
            sps[side].append(statistics.median(m["sps"] for m in rows))
            share[side].append(statistics.median(m["inference_share"] for m in rows))
            print(f"round {r} {side:7s}: {sps[side][-1]:9.0f} steps/s, inference "
                  f"{100 * share[side][-1]:4.1f}% of an epoch, CPU {100 * cpu[side][-1]:.0f}% "
                  f"of one core", flush=True)
        if args.policy_seconds > 0:
            torch.set_num_threads(1)
            p = policy_round(args.policy_seconds)
            torch.set_num_threads(before)
            for k, v in p.items():
                per_step[k].append(v)
            print(f"round {r} policy forward+sample per agent-step: torch {p['torch'][0]:.2f} us "
                  f"(cpu {p['torch'][1]:.2f}), C {p['c'][0]:.2f} us (cpu {p['c'][1]:.2f})",
                  flush=True)

    med = statistics.median
    base = sides[0]
    print("\nmedians over", args.rounds, "rounds")
    for side in sides[1:]:
        print(f"shoal train breakout steps/s: {side} {med(sps[side]):.0f}, {base} "
              f"{med(sps[base]):.0f}, ratio {med(sps[side]) / med(sps[base]):.2f}x")
    for side in sides:
        print(f"{side}: inference share of an epoch {100 * med(share[side]):.1f}%, CPU use over "
              f"a run (process user+sys / wall) {100 * med(cpu[side]):.0f}% of one core")
    if per_step["torch"]:
        tw, tc = med(v[0] for v in per_step["torch"]), med(v[1] for v in per_step["torch"])
        cw, cc = med(v[0] for v in per_step["c"]), med(v[1] for v in per_step["c"])
        print(f"policy forward+sample per agent-step (MLP-128, 256 agents): C {cw:.2f} us wall / "
              f"{cc:.2f} us CPU, torch {tw:.2f} us wall / {tc:.2f} us CPU; torch/C "
              f"{tw / cw:.2f}x wall, {tc / cc:.2f}x CPU")


def profile_run(seed: int, epochs: int, skip: int, side: str = "overlap") -> dict[str, float]:
    """One overlapped breakout run with its phases timed (thread CPU time; wall time for the
    learner's waits): milliseconds per epoch after the first ``skip`` epochs."""
    import threading
    from importlib import import_module, util as importlib_util

    from shoal.trainer import fused_rollout, stale_batch
    from shoal.trainer.ppo import Trainer

    totals: dict[str, float] = {}
    lock = threading.Lock()

    def add(key: str, seconds: float) -> None:
        with lock:
            totals[key] = totals.get(key, 0.0) + seconds

    def timed(owner: Any, name: str, key: Any, wall: bool = False) -> None:
        inner = getattr(owner, name, None)
        if inner is None:    # a version of shoal without this phase
            return

        def run(*a: Any, **k: Any) -> Any:
            clock = time.perf_counter if wall else time.thread_time
            t0 = clock()
            try:
                return inner(*a, **k)
            finally:
                label = key(*a) if callable(key) else key
                if label:
                    add(label, clock() - t0)
        setattr(owner, name, run)
        saved.append((owner, name, inner))

    saved: list[tuple[Any, str, Any]] = []
    timed(Trainer, "update", "learner: update, CPU (anchoring of minibatch 0 included)")
    timed(fused_rollout, "anchor_at_learner", "learner: whole-batch anchoring, CPU")
    pipelined = getattr(stale_batch, "PipelinedAnchor", None)
    timed(pipelined, "minibatch_ready",
          lambda self, k: "learner: anchoring of minibatch 0, CPU" if k == 0 else None)
    timed(pipelined, "minibatch_ready",
          lambda self, k: "learner: waiting for the rollout thread's anchoring, wall"
          if k else None, wall=True)
    timed(pipelined, "finish",
          "learner: waiting for the rollout thread's anchoring, wall", wall=True)
    timed(pipelined, "work_ahead", "rollout thread: anchoring, CPU")
    timed(pipelined, "work_rest", "rollout thread: anchoring, CPU")
    timed(fused_rollout.FusedRollout, "_call", "rollout thread: collecting, CPU")
    timed(fused_rollout.FusedRollout, "_help_collect",
          "learner: collecting the rest of the next batch, CPU")
    timed(fused_rollout, "wait",
          "learner: waiting for the rollout thread at the end of the update, wall", wall=True)
    acting = getattr(fused_rollout, "ActingRefresh", None)
    timed(acting, "stepped", "learner: copying its weights for the chunks, CPU")
    timed(acting, "finish", "learner: copying its weights for the chunks, CPU")
    timed(acting, "collect", "rollout thread: collecting (chunks' waits included), wall",
          wall=True)
    tail = getattr(import_module("shoal.trainer.tail_threads"), "TailThreads", None) \
        if importlib_util.find_spec("shoal.trainer.tail_threads") else None
    timed(tail, "_switch", "learner: waiting for the rollout thread before the tail threads, "
          "wall", wall=True)
    epochs_seen = [0]
    inner_epoch = Trainer.run_epoch

    def run_epoch(self: Any) -> Any:
        if epochs_seen[0] == skip:
            totals.clear()
        epochs_seen[0] += 1
        t0, p0 = time.thread_time(), time.process_time()
        try:
            return inner_epoch(self)
        finally:
            add("learner: whole epoch, CPU", time.thread_time() - t0)
            # every thread: the learner's, the rollout thread's and torch's worker threads
            # (idle OpenMP workers spin for a while before they sleep: their CPU counts here)
            add("process: every thread, CPU", time.process_time() - p0)

    Trainer.run_epoch = run_epoch   # type: ignore[method-assign]
    try:
        run = train_run("breakout", side, seed=seed, epochs=epochs)
    finally:
        Trainer.run_epoch = inner_epoch   # type: ignore[method-assign]
        for owner, name, inner in reversed(saved):
            setattr(owner, name, inner)
    n = max(1, epochs - skip)
    out = {k: 1000 * v / n for k, v in totals.items()}
    rows = run["records"][skip:] or run["records"]
    out["epoch, wall"] = 1000 * statistics.median(
        (r["steps"] - p["steps"]) / max(1e-9, r["sps"]) for p, r in zip(rows, rows[1:])) \
        if len(rows) > 1 else math.nan
    return out


def mode_profile(args: argparse.Namespace, sides: list[str]) -> None:
    rounds: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    for r in range(args.rounds):
        for side in (sides if r % 2 == 0 else sides[::-1]):
            rounds[side].append(profile_run(r, args.epochs, args.skip, side))
    for side in sides:
        keys = sorted({k for run in rounds[side] for k in run})
        print(f"{side} ({SIDES[side]}), breakout shipped settings: ms per epoch (median of "
              f"{args.rounds} runs of {args.epochs} epochs, the first {args.skip} left out) "
              f"[each run]")
        for key in keys:
            vals = [run.get(key, 0.0) for run in rounds[side]]
            print(f"  {key}: {statistics.median(vals):.1f} "
                  f"[{', '.join(f'{v:.1f}' for v in vals)}]")


def _cli_flags(overrides: dict[str, Any]) -> list[str]:
    """A side's overrides as ``shoal train`` flags (``--train.overlap-weight-cap 2.0``)."""
    flags: list[str] = []
    for key, value in overrides.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        flags += [f"--{key.replace('_', '-')}", text]
    return flags


def _process_cpu_seconds(pid: int) -> float | None:
    """User+sys CPU seconds of process ``pid`` so far (all its threads), None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    # fields after the command: state is [0], utime [11], stime [12] (proc(5): 14 and 15)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_cpu_once(checkout: str, side: str, seed: int, steps: int | None) -> dict[str, float]:
    """One ``python -m shoal train breakout`` process from ``checkout``: its CPU use over the
    whole run and over its epochs (module docstring), and the steps/s over its epochs."""
    import subprocess
    import threading

    run_dir = os.path.join(tempfile.mkdtemp(prefix="shoal-run-cpu-"), "run")
    cmd = [sys.executable, "-m", "shoal", "train", "breakout", "--run-dir", run_dir,
           "--train.seed", str(seed), *_cli_flags(SIDES[side])]
    if steps is not None:
        cmd += ["--train.total-steps", str(steps)]
    env = dict(os.environ, PYTHONPATH=os.path.abspath(checkout))
    metrics = os.path.join(run_dir, "metrics.jsonl")
    marks: list[tuple[float, float, int]] = []   # (wall, process CPU, metrics bytes) per change
    start = time.perf_counter()
    # started outside any checkout: ``python -m`` puts the working directory first on sys.path
    proc = subprocess.Popen(cmd, env=env, cwd=os.path.dirname(run_dir),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    done = threading.Event()

    def watch() -> None:
        size = 0
        while not done.is_set():
            try:
                now = os.path.getsize(metrics)
            except OSError:
                now = 0
            if now != size:
                cpu = _process_cpu_seconds(proc.pid)
                if cpu is not None:
                    marks.append((time.perf_counter(), cpu, now))
                size = now
            time.sleep(0.02)   # (polled every 2 ms, runs with the update's tail read 0.88-0.90x)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    done.set()
    watcher.join()
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-2000:]}")
    rows = read_jsonl(metrics)
    shutil.rmtree(os.path.dirname(run_dir), ignore_errors=True)
    if len(marks) < 2 or len(rows) < 3:
        raise SystemExit("the run was too short to time its epochs: pass more --steps")
    (w0, c0, _), (w1, c1, _) = marks[0], marks[-1]
    epoch_steps = rows[-1]["agent_steps"] - rows[0]["agent_steps"]
    return {"run": (usage.ru_utime + usage.ru_stime) / wall, "epochs": (c1 - c0) / (w1 - w0),
            "wall": wall, "sps": epoch_steps / (w1 - w0)}


def mode_run_cpu(args: argparse.Namespace, sides: list[str]) -> None:
    checkouts = args.checkouts.split(",") if args.checkouts else \
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))]
    combos = [(c, s) for c in checkouts for s in sides]
    label = {combo: (f"{combo[0]}" if len(sides) == 1 else f"{combo[0]} {combo[1]}")
             if len(checkouts) > 1 else combo[1] for combo in combos}
    results: dict[tuple[str, str], list[dict[str, float]]] = {combo: [] for combo in combos}
    for r in range(args.rounds):
        for combo in (combos if r % 2 == 0 else combos[::-1]):
            out = run_cpu_once(combo[0], combo[1], r, args.steps)
            results[combo].append(out)
            print(f"round {r} {label[combo]}: whole run {100 * out['run']:.1f}% of one core "
                  f"({out['wall']:.1f} s), epochs {100 * out['epochs']:.1f}%, "
                  f"{out['sps']:.0f} steps/s", flush=True)
    med = statistics.median
    base = combos[0]
    print(f"\nshoal train breakout, CPU use (process user+sys / wall; 100% = one core), medians "
          f"of {args.rounds} runs")
    for combo in combos:
        runs = results[combo]
        line = (f"  {label[combo]}: whole run {100 * med(r['run'] for r in runs):.1f}%, epochs "
                f"{100 * med(r['epochs'] for r in runs):.1f}%, {med(r['sps'] for r in runs):.0f} "
                f"steps/s over the epochs, {med(r['wall'] for r in runs):.1f} s per run")
        if combo != base:
            ratio = med(r["sps"] for r in runs) / med(r["sps"] for r in results[base])
            line += f"; steps/s {ratio:.3f}x {label[base]}"
        print(line)


def mode_score(args: argparse.Namespace, sides: list[str]) -> None:
    steps = args.steps
    for i, seed in enumerate(args.seeds):
        order = sides if i % 2 == 0 else sides[::-1]
        for side in order:
            run = train_run("breakout", side, seed, steps=steps)
            run["mode"] = "score"
            with open(args.log, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(run) + "\n")
            rec = run["records"]
            print(f"seed {seed} {side:7s}: {rec[-1]['steps'] / 1e6:.2f}M steps in "
                  f"{rec[-1]['t']:.0f} s, score {_fmt(rec[-1]['score'], '.1f')}, time to "
                  f"{args.target:g}: {_fmt(time_to(rec, args.target), '.1f')} s, CPU "
                  f"{100 * run['cpu']:.0f}%", flush=True)
    runs = [r for r in read_jsonl(args.log, missing_ok=True)
            if r.get("mode") == "score" and r["side"] in sides]
    print(f"\nbreakout, shipped settings: over every run in {args.log} "
          f"(seeds {sorted({r['seed'] for r in runs})})")
    times: dict[str, float] = {}
    for side in sides:
        per_seed = [(r["seed"], time_to(r["records"], args.target)) for r in runs
                    if r["side"] == side]
        if not per_seed:
            continue
        times[side] = statistics.median(t for _, t in per_seed)
        print(f"  {side}: wall-clock to a score of {args.target:g}, median "
              f"{_fmt(times[side], '.1f')} s [" + ", ".join(
                  f"seed {s}: {_fmt(t, '.1f')}" for s, t in per_seed) + "]")
    base = sides[0]
    for side in sides[1:]:
        if side in times and base in times:
            ratio = (times[side] / times[base]
                     if math.isfinite(times[base]) and math.isfinite(times[side]) else None)
            print(f"  ratio {side} / {base} (median times): {_fmt(ratio, '.2f')}")
    print_costs(runs, sides)
    print_curves(runs, sides, args.points, "breakout")


def mode_sanity(args: argparse.Namespace, sides: list[str]) -> None:
    for env in args.envs:
        runs = []
        for i, seed in enumerate(args.seeds):
            order = sides if i % 2 == 0 else sides[::-1]
            for side in order:
                run = train_run(env, side, seed, steps=args.steps)
                runs.append(run)
                rec = run["records"]
                print(f"{env} seed {seed} {side:7s}: {rec[-1]['steps']} steps, score "
                      f"{_fmt(rec[-1]['score'], '.3f')}", flush=True)
        print_curves(runs, sides, args.points, env)
        print_costs(runs, sides)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("sps", "score", "sanity", "profile", "run-cpu"),
                    default="sps")
    ap.add_argument("--checkouts", default=None,
                    help="run-cpu: comma-separated shoal checkouts to compare (PYTHONPATH each; "
                         "default this one)")
    ap.add_argument("--sides", default=None,
                    help=f"comma-separated, first = baseline (any of {', '.join(SIDES)}; "
                         f"default: all for sps, torch,cores otherwise)")
    ap.add_argument("--rounds", type=int, default=5, help="sps: rounds")
    ap.add_argument("--epochs", type=int, default=12, help="sps: epochs per training run")
    ap.add_argument("--skip", type=int, default=2, help="sps: first epochs left out (start-up)")
    ap.add_argument("--policy-seconds", type=float, default=2.0,
                    help="sps: seconds per side of the policy forward timing (0 = skip it)")
    ap.add_argument("--seeds", default="0,1,2", help="score/sanity: seeds")
    ap.add_argument("--steps", type=float, default=None,
                    help="score/sanity/run-cpu: agent steps per run (default: the shipped "
                         "config's)")
    ap.add_argument("--target", type=float, default=100.0, help="score: the score to time")
    ap.add_argument("--points", type=int, default=10,
                    help="score/sanity: milestones of the per-step comparison")
    ap.add_argument("--log", default="fused_bench_score.jsonl",
                    help="score: JSON lines file every run is appended to (the summary covers "
                         "every run in it)")
    ap.add_argument("--envs", default="recall,target", help="sanity: envs")
    args = ap.parse_args()
    sides = (args.sides.split(",") if args.sides else
             [s for s in SIDES if s not in ("bf16", "overlap-bf16", "chunks", "entropy")] if args.mode == "sps" else
             ["overlap"] if args.mode == "profile" else
             ["shipped"] if args.mode == "run-cpu" else ["torch", "cores"])
    unknown = [s for s in sides if s not in SIDES]
    if unknown:
        ap.error(f"unknown side(s) {unknown}: choose from {', '.join(SIDES)}")
    args.seeds = [int(s) for s in args.seeds.split(",")]
    args.envs = args.envs.split(",")
    if args.steps is not None:
        args.steps = int(args.steps)
    {"sps": mode_sps, "score": mode_score, "sanity": mode_sanity,
     "profile": mode_profile, "run-cpu": mode_run_cpu}[args.mode](args, sides)


if __name__ == "__main__":
    main()
