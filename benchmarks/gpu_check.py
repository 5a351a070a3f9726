"""The GPU path, checked and timed on one CUDA device in under five minutes.

    python benchmarks/gpu_check.py                     # on a machine with a CUDA GPU
    python benchmarks/gpu_check.py --seconds 40 --env-backend threads
    python benchmarks/gpu_check.py --dry-run           # tiny sizes on the CPU: checks the script

Prints, in this order:

1. Parity of the device against the CPU, float32 with TF32 off (restored afterwards):
   - advantages: ``compute_advantages`` on the device (the torch path) vs the CPU's C kernel, on
     a random ``[S, T]`` batch with episode ends and importance ratios;
   - policy: the breakout MLP and an LSTM-128 policy with the same weights on both: log-probs,
     values and the PPO loss of one minibatch, and every gradient (the CPU runs the fused LSTM,
     the device ``nn.LSTMCell``). Reported as the largest absolute difference over the largest
     absolute value.
2. Training steps/s on breakout with ``--train.device cuda``, each for ``--seconds`` of
   training, on the synchronous float32 torch rollout (``--train.rollout torch --train.overlap
   false --train.precision float32``: breakout ships the fused rollout, which runs on the CPU
   only): the shipped config's other settings (MLP), and PufferLib's LSTM batch shape
   (LSTM-128, 8,192 envs x 64 steps, minibatch 32,768, one pass). Median steps/s over the
   second half of the epochs and the time split of an epoch (env = stepping, inference =
   rollout policy steps including the host<->device copies of observations and actions,
   learn = advantages + minibatch updates, other = the rest). The "host<->device" line is the rollout's time outside env stepping: an
   upper bound on the transfer overhead (it also holds the policy's forward passes).

Without CUDA (or with ``--dry-run``) everything runs on the CPU at tiny sizes: the device
numbers are then meaningless, but every code path of the script is exercised
(tests/test_distributed.py runs it that way).
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Iterator

import numpy as np
import torch
from gymnasium import spaces

from shoal.trainer.advantage import compute_advantages
from shoal.trainer.config import TrainConfig, build_config
from shoal.trainer.distributions import make_distribution
from shoal.trainer.policies import make_policy, policy_initial_state
from shoal.trainer.ppo import Minibatch, RolloutStorage, Trainer, ppo_loss

# the synchronous float32 torch rollout: breakout ships the fused rollout, which is CPU-only
TORCH_ROLLOUT = {"train.rollout": "torch", "train.overlap": False, "train.precision": "float32"}
BREAKOUT_OBS = 118        # breakout's observation size (the parity batch uses random ones)
PUFFER_SHAPE = {"policy.name": "lstm", "policy.hidden": 128, "env.num_envs": 8192,
                "train.horizon": 64, "train.minibatch_size": 32768, "train.update_epochs": 1}
DRY_SHAPE = {"policy.name": "lstm", "policy.hidden": 16, "env.num_envs": 64,
             "train.horizon": 16, "train.minibatch_size": 256, "train.update_epochs": 1}


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """TF32 off for the parity checks (CUDA would otherwise round matmul inputs)."""
    matmul = torch.backends.cuda.matmul.allow_tf32
    cudnn = torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max(max |b|, 1e-12), on the CPU."""
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def advantage_parity(device: torch.device, S: int, T: int) -> float:
    g = torch.Generator().manual_seed(0)
    values = torch.randn(S, T + 1, generator=g)
    rewards = torch.randn(S, T, generator=g)
    dones = (torch.rand(S, T, generator=g) < 0.05).float()
    ratio = torch.exp(0.2 * torch.randn(S, T, generator=g))
    cpu = compute_advantages(values, rewards, dones, ratio, 0.99, 0.95, 1.0, 1.0)
    dev = compute_advantages(values.to(device), rewards.to(device), dones.to(device),
                             ratio.to(device), 0.99, 0.95, 1.0, 1.0, backend="torch")
    return relative(dev, cpu)


def policy_parity(device: torch.device, name: str, hidden: int, S: int, T: int
                  ) -> dict[str, float]:
    """One minibatch through the same policy on the CPU and on ``device``."""
    obs_space = spaces.Box(0.0, 1.0, (BREAKOUT_OBS,), np.float32)
    act_space = spaces.Discrete(3)
    torch.manual_seed(0)
    policy_cpu = make_policy((obs_space, act_space), name, hidden=hidden)
    policy_dev = make_policy((obs_space, act_space), name, hidden=hidden).to(device)
    policy_dev.load_state_dict(policy_cpu.state_dict())
    distribution = make_distribution(act_space)
    g = torch.Generator().manual_seed(1)
    state = policy_initial_state(policy_cpu, S, "cpu")
    b = RolloutStorage(S, T, (BREAKOUT_OBS,), torch.float32, tuple(distribution.action_shape),
                       distribution.action_dtype, state, torch.device("cpu"))
    b.obs.copy_(torch.rand(b.obs.shape, generator=g))
    b.actions.copy_(torch.randint(0, 3, b.actions.shape, generator=g))
    b.logprobs.copy_(-1.1 + 0.2 * torch.randn(b.logprobs.shape, generator=g))
    b.values.copy_(torch.randn(b.values.shape, generator=g))
    b.rewards.copy_(torch.randn(b.rewards.shape, generator=g))
    b.dones.copy_((torch.rand(b.dones.shape, generator=g) < 0.05).float())
    b.starts[:, 1:].copy_(b.dones)
    b.masks.fill_(1.0)
    if b.state0 is not None:
        for s in b.state0:
            s.copy_(0.3 * torch.randn(s.shape, generator=g))
    t = TrainConfig()
    idx = torch.arange(S)
    weights = torch.ones(S)
    loss_cpu, _, adv_cpu = ppo_loss(policy_cpu, distribution, Minibatch(b, idx, weights), t)
    loss_cpu.backward()

    d = RolloutStorage(S, T, (BREAKOUT_OBS,), torch.float32, tuple(distribution.action_shape),
                       distribution.action_dtype, state, device)
    for key in RolloutStorage.CARRIED + ("rewards", "dones"):
        getattr(d, key).copy_(getattr(b, key))
    if b.state0 is not None:
        for dst, src in zip(d.state0, b.state0):
            dst.copy_(src)
    loss_dev, _, adv_dev = ppo_loss(policy_dev, distribution,
                                    Minibatch(d, idx.to(device), weights.to(device)), t)
    loss_dev.backward()
    grads = max(relative(pd.grad, pc.grad)
                for pc, pd in zip(policy_cpu.parameters(), policy_dev.parameters())
                if pc.grad is not None and pd.grad is not None)
    return {"loss": relative(loss_dev, loss_cpu), "advantages": relative(adv_dev, adv_cpu),
            "gradients": grads}


def train_speed(device: torch.device, overrides: dict[str, Any], seconds: float,
                max_epochs: int) -> dict[str, Any]:
    """Trains breakout on ``device`` for ``seconds`` (or ``max_epochs``) on the torch rollout
    (the fused one runs on the CPU only); median SPS and split."""
    run_dir = tempfile.mkdtemp(prefix="shoal-gpu-check-")
    over = {**TORCH_ROLLOUT, "train.device": str(device), "log.dashboard": "off",
            "log.checkpoint_interval": 1_000_000, "log.run_dir": run_dir,
            "train.total_steps": 10**12, **overrides}
    records: list[dict] = []
    start = time.perf_counter()

    def stop(trainer: Trainer, metrics: dict) -> bool:
        if device.type == "cuda":
            torch.cuda.synchronize()
        records.append(metrics)
        return len(records) >= max_epochs or (
            seconds > 0 and time.perf_counter() - start >= seconds)

    try:
        trainer = Trainer(build_config("breakout", overrides=over), callback=stop)
        trainer.train()
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)
    later = records[len(records) // 2:] or records
    split = {k: statistics.mean(r["time"][k] for r in later) for k in later[0]["time"]}
    epoch = sum(split.values()) or 1.0
    return {"epochs": len(records), "batch": trainer.batch_size,
            "sps": statistics.median(r["sps"] for r in later),
            "split": {k: v / epoch for k, v in split.items()}, "epoch_seconds": epoch,
            "score": records[-1].get("score100")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="the device to check (default cuda)")
    parser.add_argument("--seconds", type=float, default=50.0,
                        help="training seconds per configuration (default 50)")
    parser.add_argument("--env-backend", default="threads",
                        help="env.backend for the training runs (default threads)")
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny sizes on the CPU: exercises the script only")
    args = parser.parse_args(argv)

    dry = args.dry_run or not torch.cuda.is_available()
    if dry and not args.dry_run:
        print("no CUDA device here: running the CPU dry run (tiny sizes; the figures mean "
              "nothing)")
    device = torch.device("cpu" if dry else args.device)
    if device.type == "cuda":
        print(f"device: {torch.cuda.get_device_name(device)}  torch {torch.__version__}  "
              f"CUDA {torch.version.cuda}")
    S, T = (16, 8) if dry else (2048, 64)
    seconds = 0.0 if dry else args.seconds
    max_epochs = 2 if dry else 10**9

    with exact_float32():
        print(f"\nparity, {device} vs cpu (max |difference| / max |cpu value|; float32, TF32 "
              f"off)")
        print(f"  advantages (torch path vs C kernel, {S}x{T}): "
              f"{advantage_parity(device, S, T):.2e}")
        for name, hidden in (("mlp", 128), ("lstm", 128)):
            r = policy_parity(device, name, hidden, min(S, 512), T)
            print(f"  policy {name}-{hidden}: loss {r['loss']:.2e}  recomputed advantages "
                  f"{r['advantages']:.2e}  gradients {r['gradients']:.2e}")

    backend = {"env.backend": args.env_backend}
    shipped = dict(backend, **({"env.num_envs": 64, "train.minibatch_size": 256,
                                "train.horizon": 16} if dry else {}))
    runs = [("shipped breakout config on the torch rollout (MLP)", shipped),
            ("PufferLib batch shape (LSTM-128, 8192 envs x 64, minibatch 32768)",
             dict(backend, **(DRY_SHAPE if dry else PUFFER_SHAPE)))]
    print(f"\ntraining breakout on {device}, {args.seconds if not dry else 0:g} s each")
    for label, over in runs:
        r = train_speed(device, over, seconds, max_epochs)
        split = "  ".join(f"{k} {100 * v:.0f}%" for k, v in r["split"].items())
        transfer = r["split"].get("inference", 0.0)
        print(f"  {label}: {r['sps']:,.0f} steps/s (batch {r['batch']:,}, {r['epochs']} "
              f"epochs, {r['epoch_seconds']:.3f} s/epoch)\n    split: {split}\n"
              f"    rollout outside env stepping (host<->device copies + policy steps): "
              f"{100 * transfer:.0f}% of an epoch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
