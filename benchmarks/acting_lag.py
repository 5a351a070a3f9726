"""How far the overlapped path's acting policy is from the learner that trains on its batch, and
whether extrapolating the acting weights would bring it closer (issue 8's per-step lag).

With ``train.overlap`` the batch trained on in update e+1 was acted by the weights W(e-1) from
before update e, while the learner starts update e+1 from W(e). This script trains breakout's
shipped settings (overlapped fused rollout) and, after every epoch, measures on the states of
the batch just collected (the first ``--rows`` envs, all its steps) the exact KL divergence
of the learner's policy W(e) from candidate acting policies

    W(e-1) + alpha * (W(e-1) - W(e-2))        for each alpha in --alphas

(alpha 0: the weights that acted, as the code does; alpha 1: "the last update again", a linear
guess at W(e)). If the updates of successive epochs pointed the same way, alpha near 1 would
act closer to the learner and shrink the staleness. It also prints the update's own approx-KL.
Only a measurement: the run itself acts with alpha 0. Per-step figures: valid on a busy machine.

    python benchmarks/acting_lag.py --steps 10e6 --alphas 0,0.5,1,2
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
from typing import Any

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--env", default="breakout")
    ap.add_argument("--steps", type=float, default=10e6, help="agent steps to train")
    ap.add_argument("--schedule-steps", type=float, default=20e6,
                    help="the learning-rate schedule's length (the shipped 20M: unchanged)")
    ap.add_argument("--alphas", default="0,0.5,1,2")
    ap.add_argument("--rows", type=int, default=64, help="envs of each batch measured")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--windows", type=int, default=4, help="report medians over this many "
                                                           "equal stretches of the run")
    args = ap.parse_args()
    alphas = [float(a) for a in args.alphas.split(",")]

    from shoal.trainer.config import build_config
    from shoal.trainer.ppo import Trainer

    run_dir = tempfile.mkdtemp(prefix="shoal-acting-lag-")
    cfg = build_config(args.env, overrides={
        "train.rollout": "fused", "train.overlap": True, "train.minibatches": "draws",
        "train.seed": args.seed,
        "train.total_steps": int(args.steps), "train.schedule_steps": int(args.schedule_steps),
        "log.dashboard": "off", "log.run_dir": os.path.join(run_dir, "run"),
        "log.checkpoint_interval": 10**6})
    history: list[dict[str, torch.Tensor]] = []      # the weights after each epoch, last three
    rows: list[dict[str, Any]] = []
    probe: list[torch.nn.Module] = []

    def logits(policy: torch.nn.Module, obs: torch.Tensor) -> torch.Tensor:
        return torch.log_softmax(policy(obs)[0].float(), -1)

    def measure(trainer: Trainer, metrics: dict[str, Any]) -> None:
        history.append({k: v.detach().clone() for k, v in trainer.policy.state_dict().items()})
        del history[:-3]
        if len(history) < 3:
            return
        if not probe:
            probe.append(copy.deepcopy(trainer.policy).requires_grad_(False))
        net = probe[0]
        before2, before, learner = history      # W(e-2), W(e-1) (acted), W(e) (trains on it)
        obs = trainer.storage.obs[:args.rows, :trainer.T]
        with torch.no_grad():
            net.load_state_dict(learner)
            lp_l = logits(net, obs)
            row: dict[str, Any] = {"steps": metrics["agent_steps"],
                                   "approx_kl": metrics["losses"]["approx_kl"]}
            for a in alphas:
                net.load_state_dict({k: before[k] + a * (before[k] - before2[k])
                                     if before[k].is_floating_point() else before[k]
                                     for k in before})
                lp_c = logits(net, obs)
                row[a] = float((lp_c.exp() * (lp_c - lp_l)).sum(-1).mean())
        rows.append(row)

    trainer = Trainer(cfg, callback=measure)
    if trainer.distribution.kind != "discrete":
        raise SystemExit(f"{args.env}: this script measures Discrete action spaces only")
    trainer.train()

    print(f"{args.env}, overlapped fused rollout, seed {args.seed}: KL(acting || learner) on "
          f"the batch each learner trains on, medians over the epochs of each stretch")
    print("steps            " + "".join(f"alpha {a:<7g}" for a in alphas) + "update approx-KL")
    size = max(1, -(-len(rows) // args.windows))     # the last stretch takes the remainder
    for w in range(0, len(rows), size):
        part = rows[w:w + size]
        cells = "".join(f"{statistics.median(r[a] for r in part):<13.5f}" for a in alphas)
        print(f"{part[0]['steps'] / 1e6:5.1f}-{part[-1]['steps'] / 1e6:5.1f}M     {cells}"
              f"{statistics.median(r['approx_kl'] for r in part):.5f}")
    ratios = [r[a] / r[0.0] for r in rows for a in alphas if a == 1.0 and r[0.0] > 0]
    if ratios:
        print(f"alpha 1 / alpha 0, median over epochs: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
