"""Worker programs of tests/test_distributed.py, started by torchrun (one process per rank).

    torchrun --nproc-per-node 2 tests/support/dist_worker.py grad OUT.json
    torchrun --nproc-per-node 2 tests/support/dist_worker.py train RUN_DIR [--stop E] [--crash E]
    torchrun --nproc-per-node 2 tests/support/dist_worker.py obsnorm OUT.json
    SHOAL_DIST_PIN=1 torchrun --nproc-per-node 2 tests/support/dist_worker.py pin OUT.json

``grad``: every rank computes the PPO gradient of its half of a batch, the gradients are summed
over ranks, and rank 0 writes how far that is from one process's gradient of the whole batch,
whether every rank got the same bits and how many sums went through shared memory.
``train``: trains the bandit sanity env through :func:`shoal.train` (rank count from torchrun);
``--stop E`` stops after epoch E (a checkpoint is written), ``--crash E`` makes rank 1 die at
the end of epoch E in the first attempt of the worker group (torchrun restarts it when run with
``--max-restarts``), ``--overlap`` trains 8 epochs with the fused rollout collecting the next
batch during the update.
``pin`` (run with SHOAL_DIST_PIN=1): rank 0 writes every rank's CPUs before connect(), after
it, of a thread started after it, and its own after close().
``obsnorm``: every rank merges its own batches (different sizes, scales and dead rows) into an
observation normaliser (train.norm_obs) through the collective; rank 0 writes how far each
rank's statistics are from numpy's over the union of all ranks' live rows.
"""

from __future__ import annotations

import argparse
import json
import math
import os

import numpy as np
import torch
from gymnasium import spaces

import shoal
from shoal.trainer.config import TrainConfig
from shoal.trainer.advantage import compute_advantages
from shoal.trainer.distributed import (EpochEnd, connect, epoch_statistics, minibatch_moments,
                                       rank_share, variance_parts)
from shoal.trainer.distributions import make_distribution
from shoal.trainer.policies import make_policy, policy_initial_state
from shoal.trainer.ppo import Minibatch, RolloutStorage, ppo_loss
from shoal.trainer.sampling import sample_segments


OVERLAP_STEPS = 8 * 2 * 64 * 16     # 8 epochs of 2 ranks (the overlapped-rollout test)


def _batch(policy: torch.nn.Module, distribution, S: int, T: int, obs_size: int):
    """A random batch, the same on every rank (fixed generator)."""
    g = torch.Generator().manual_seed(123)
    state = policy_initial_state(policy, S, "cpu")
    b = RolloutStorage(S, T, (obs_size,), torch.float32, tuple(distribution.action_shape),
                       distribution.action_dtype, state, torch.device("cpu"))
    b.obs.copy_(torch.randn(b.obs.shape, generator=g))
    b.actions.copy_(torch.randint(0, 4, b.actions.shape, generator=g))
    b.logprobs.copy_(-1.4 + 0.3 * torch.randn(b.logprobs.shape, generator=g))
    b.values.copy_(torch.randn(b.values.shape, generator=g))
    b.rewards.copy_(torch.randn(b.rewards.shape, generator=g))
    b.dones.copy_((torch.rand(b.dones.shape, generator=g) < 0.15).float())
    b.starts[:, 1:].copy_(b.dones)
    # ragged masks: the two halves have different numbers of live steps
    b.masks.copy_((torch.rand(b.masks.shape, generator=g) < 0.8).float())
    b.masks[: S // 2, : T // 2] = 0.0
    for s in b.state0:
        s.copy_(0.5 * torch.randn(s.shape, generator=g))
    # the estimates a minibatch is drawn with (the trainer's plain GAE of the batch)
    compute_advantages(b.values, b.rewards, b.dones, None, 0.99, 0.95, 1.0, 1.0, out=b.advantages)
    return b


def grad_parity(out_path: str) -> None:
    coll = connect()
    rank, n = coll.rank, coll.world_size
    torch.manual_seed(0)
    obs_space = spaces.Box(-1, 1, (6,), np.float32)
    act_space = spaces.Discrete(4)
    policy = make_policy((obs_space, act_space), "lstm", hidden=16)   # the fused CPU LSTM
    distribution = make_distribution(act_space)
    S, T = 8, 12
    b = _batch(policy, distribution, S, T, 6)
    t = TrainConfig()
    t.norm_adv, t.vf_clip_coef = True, 0.2
    # raw importance weights: one process divides them by the largest of the whole batch, a
    # rank by the largest of its half and passes that peak along (the job's is rescaled by it)
    raw_weights = torch.rand(S, generator=torch.Generator().manual_seed(7)) + 0.5
    params = list(policy.parameters())

    def grads() -> torch.Tensor:
        out = torch.cat([p.grad.reshape(-1) for p in params]).clone()
        for p in params:
            p.grad = None
        return out

    # one process, the whole batch
    everything = torch.arange(S)
    loss, _, _ = ppo_loss(policy, distribution,
                          Minibatch(b, everything, raw_weights / raw_weights.max()), t)
    loss.backward()
    whole = grads()
    norm_whole = float(whole.norm())

    # this rank's half, summed over ranks
    mine = everything[rank * S // n:(rank + 1) * S // n]
    peak = raw_weights[mine].max()
    half = Minibatch(b, mine, raw_weights[mine] / peak, weight_peak=peak)
    loss, _, _ = ppo_loss(policy, distribution, half, t, ranks=coll)
    loss.backward()
    # the trainer's way: a minibatch's statistics ride in the gradient all-reduce before it
    riding = coll.sum_gradients(params, wait=False,
                                next_share=rank_share(half.advantages, half.masks, peak)).wait()
    norm_summed = float(torch.nn.utils.clip_grad_norm_(params, float("inf")))
    # the next minibatch's sum reuses the flat buffer of the first (nothing allocated per
    # minibatch): every rank now holds the job's gradient, so the sum is exactly twice it
    held = [p.grad.clone() for p in params]
    kept = dict(coll._buckets)
    coll.sum_gradients(params, wait=False,
                       next_share=rank_share(half.advantages, half.masks, peak)).wait()
    reuse = {"doubled": all(torch.equal(p.grad, n * h) for p, h in zip(params, held)),
             "same_buffer": len(kept) == 1 and all(
                 coll._buckets[k] is b for k, b in kept.items())}
    for p, h in zip(params, held):
        p.grad.copy_(h)
    summed = grads()
    gathered_job = minibatch_moments(half.advantages, half.masks, peak, coll)
    local = minibatch_moments(b.advantages, b.masks[:, :T], None)
    moments = {"riding": [float(x) for x in riding[:3]] + [float(riding.weight_scale)],
               "gathered": [float(x) for x in gathered_job[:3]] +
                           [float(gathered_job.weight_scale)],
               "whole": [float(x) for x in local[:3]],
               "own_scale": float(peak / raw_weights.max())}

    # prioritised sampling weights: normalised by the largest of the job's minibatch
    adv = torch.randn(S, T, generator=torch.Generator().manual_seed(11 + rank)) * (1 + rank)
    draw = sample_segments(adv, None, 3, alpha=0.8, beta=0.6,
                           generator=torch.Generator().manual_seed(5 + rank))
    w = coll.importance_weights(draw, S, 0.6)
    raw = (S * draw.probabilities[draw.indices]).pow(-0.6)
    parts = coll.object_all_gather({"w": w, "raw": raw})
    all_w = torch.cat([p["w"] for p in parts])
    all_raw = torch.cat([p["raw"] for p in parts])

    # every rank holds the same bits of the job's gradient; which way the sums went
    summed_by_rank = coll.object_all_gather(summed)
    same_bits = all(torch.equal(summed_by_rank[0], x) for x in summed_by_rank)
    shared_memory_sums = coll.shared_memory_sums

    gathered = coll.gather_values({"rank": rank, "x": 0.1 + rank, "pad": "x" * (9000 * rank)})
    gathered_nan = coll.gather_values(float("nan"))
    epoch_end = epoch_end_parity(coll, b, T)

    if rank == 0:
        with open(out_path, "w") as fh:
            json.dump({"world_size": n,
                       "max_abs_diff": float((summed - whole).abs().max()),
                       "max_abs": float(whole.abs().max()),
                       "norm_whole": norm_whole, "norm_summed": norm_summed,
                       "weights_max": float(all_w.max()),
                       "weights_err": float((all_w - all_raw / all_raw.max()).abs().max()),
                       "gathered": gathered,
                       "gathered_nan": all(math.isnan(v) for v in gathered_nan),
                       "moments": moments, "epoch_end": epoch_end, "reuse": reuse,
                       "same_bits": same_bits, "shared_memory_sums": shared_memory_sums,
                       # rank 0 made the segments (named after its pid) and unlinked them
                       "segments_left": sorted(f for f in os.listdir("/dev/shm")
                                               if f.startswith(f"shoal-grad-{os.getpid()}-"))
                       if os.path.isdir("/dev/shm") else []},
                      fh)
    coll.close()


def epoch_end_parity(coll, b, T: int) -> dict:
    """An epoch's end riding in a gradient all-reduce against the separate collectives it
    replaces (the statistics' all-gather, the stop flag's all-reduce): the same values, to the
    bit; also with one rank's episode statistics too large to ride (then gathered)."""
    rank = coll.rank
    half = slice(rank * b.S // 2, (rank + 1) * b.S // 2)
    explained = variance_parts(b.values[half, :T], b.advantages[half] + b.values[half, :T],
                               b.masks[half, :T])
    shares = {"policy": -0.0123456789 * (rank + 1) / 3, "value": 0.5 / 7 + rank, "kl": 1e-9 / 3}
    out = {}
    for name, episodes in (("small", {"score": 1 / 3 + rank, "n": 5.0 + rank}),
                           ("large", {"score": 2.0, "n": 3.0,
                                      **{f"k{i}": i / 7 for i in range(200 * rank)}})):
        if rank == 0 and name == "large":
            episodes = {"score": 1.0, "n": 1.0}     # fits: rank 1's alone does not
        stop = rank == 1 and name == "small"
        riding = EpochEnd(coll, shares, explained, episodes, stop)
        coll.sum_gradients([], wait=False, epoch_end=riding).wait()
        separate = epoch_statistics(coll, shares, explained, episodes)
        separate_stop = coll.any(stop)
        out[name] = {"riding": repr(tuple(riding.job)[:4]),
                     "separate": repr(tuple(separate) + (separate_stop,)),
                     "stop": riding.job.stop, "n": riding.job.episodes["n"]}
    return out


def train(run_dir: str, stop: int, crash: int, overlap: bool = False) -> None:
    first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"

    def callback(trainer, metrics) -> bool:
        if crash and trainer.epoch == crash and trainer.dist.rank == 1 and first_attempt:
            os._exit(3)      # as a crash: no cleanup, no checkpoint
        return bool(stop) and trainer.epoch == stop

    extra = dict(train_rollout="fused", train_overlap=True, train_total_steps=OVERLAP_STEPS) \
        if overlap else {}
    shoal.train("bandit", log_run_dir=run_dir, log_dashboard="off",
                log_checkpoint_interval=2, callback=callback, **extra)


def obs_norm(out_path: str) -> None:
    from shoal.trainer.obs_norm import ObservationNormalizer

    coll = connect()
    rank, n = coll.rank, coll.world_size
    norm = ObservationNormalizer((3,))
    mine = []
    for step, rows in enumerate((5, 40, 1)):
        rng = np.random.default_rng(100 * rank + step)
        x = rng.normal(1000.0 * (rank + 1), 10.0 + rank, (rows * (rank + 1), 3))
        live = rng.random(len(x)) < 0.75
        live[0] = True
        norm.update(torch.from_numpy(x), torch.from_numpy(live), coll)
        mine.append(x[live])
    parts = coll.object_all_gather({"rows": torch.from_numpy(np.concatenate(mine)),
                                    "mean": norm.mean, "var": norm.var, "count": norm.count})
    if rank == 0:
        union = torch.cat([p["rows"] for p in parts]).numpy()
        with open(out_path, "w") as fh:
            json.dump({"world_size": n, "rows": len(union),
                       "counts": [float(p["count"]) for p in parts],
                       "mean_err": max(float(np.abs(p["mean"].numpy() - union.mean(0)).max()
                                             / np.abs(union.mean(0)).max()) for p in parts),
                       "var_err": max(float(np.abs(p["var"].numpy() - union.var(0)).max()
                                            / union.var(0).max()) for p in parts),
                       "ranks_equal": all(torch.equal(p["mean"], parts[0]["mean"])
                                          and torch.equal(p["var"], parts[0]["var"])
                                          for p in parts)}, fh)
    coll.close()


def pinned(out_path: str) -> None:
    """SHOAL_DIST_PIN=1 or trainer: the CPUs of the main thread before connect(), after it, of a
    thread started after it, of gloo's threads, and after close()."""
    import threading

    before = sorted(os.sched_getaffinity(0))
    coll = connect()
    after = sorted(os.sched_getaffinity(0))
    seen: list[list[int]] = []
    thread = threading.Thread(target=lambda: seen.append(sorted(os.sched_getaffinity(0))))
    thread.start()
    thread.join()
    gloo = set()    # the CPUs gloo's threads (started by connect()) may run on
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/comm") as fh:
            if "gloo" in fh.read():
                gloo |= os.sched_getaffinity(int(tid))
    parts = coll.object_all_gather({"before": before, "after": after, "thread": seen[0],
                                    "gloo": sorted(gloo)})
    coll.close()
    if coll.rank == 0:
        with open(out_path, "w") as fh:
            json.dump({"ranks": parts, "restored": sorted(os.sched_getaffinity(0))}, fh)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("grad", "train", "obsnorm", "pin"))
    parser.add_argument("path")
    parser.add_argument("--stop", type=int, default=0)
    parser.add_argument("--crash", type=int, default=0)
    parser.add_argument("--overlap", action="store_true",
                        help="the fused rollout, overlapped with the update")
    args = parser.parse_args()
    if args.mode == "grad":
        grad_parity(args.path)
    elif args.mode == "obsnorm":
        obs_norm(args.path)
    elif args.mode == "pin":
        pinned(args.path)
    else:
        train(args.path, args.stop, args.crash, args.overlap)


if __name__ == "__main__":
    main()
