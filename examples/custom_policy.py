"""A custom policy: a GRU written as a plain nn.Module, trained by shoal's PPO on `recall`.

`recall` shows a symbol, then blank steps, then asks which symbol it was: a memoryless policy
scores at most 1/4, a policy with memory scores 1. Any nn.Module following the contract of
shoal/trainer/policies.py can be trained:

    initial_state(batch, device) -> tuple of tensors (or None: stateless)
    forward(obs [B, L, *obs_shape], state, starts [B, L]) -> (action_params [B, L, n],
                                                             values [B, L], new_state)

`starts[:, t]` is 1 where an episode starts at step t: reset the state *before* that step.
`action_params` are logits for Discrete actions ([mean, log_std] for Box); the trainer builds
the action distribution from the env's action space unless the policy has a `distribution`
attribute.

    python examples/custom_policy.py                # 100k steps, a few seconds
    python examples/custom_policy.py --steps 30000  # a quick check
"""

from __future__ import annotations

import argparse
import math
import os
import time

import torch
from torch import nn

import shoal


class GRUPolicy(nn.Module):
    """Linear encoder -> GRU cell unrolled over L (reset at episode starts) -> actor, critic."""

    def __init__(self, observation_space, action_space, hidden: int = 32):
        super().__init__()
        obs_size = math.prod(observation_space.shape)
        self.encoder = nn.Sequential(nn.Linear(obs_size, hidden), nn.Tanh())
        self.gru = nn.GRUCell(hidden, hidden)
        self.actor = nn.Linear(hidden, int(action_space.n))
        self.critic = nn.Linear(hidden, 1)
        # near-zero logits: start from a uniform policy (as shoal's built-in heads do), so that
        # early updates cannot make it confidently wrong before it has explored
        nn.init.orthogonal_(self.actor.weight, gain=0.01)
        nn.init.zeros_(self.actor.bias)
        self.hidden = hidden

    def initial_state(self, batch: int, device=None) -> tuple[torch.Tensor]:
        return (torch.zeros(batch, self.hidden, device=device),)

    def forward(self, obs, state, starts):
        B, L = obs.shape[:2]
        x = self.encoder(obs.reshape(B, L, -1).float())
        (h,) = state if state is not None else self.initial_state(B, obs.device)
        outputs = []
        for t in range(L):
            if starts is not None:  # a new episode starts at step t: forget the previous one
                h = h * (1.0 - starts[:, t].float()).unsqueeze(-1)
            h = self.gru(x[:, t], h)
            outputs.append(h)
        out = torch.stack(outputs, 1)                       # [B, L, hidden]
        return self.actor(out), self.critic(out).squeeze(-1), (h,)


def main() -> None:
    parser = argparse.ArgumentParser(description="Train a custom GRU policy on recall.")
    parser.add_argument("--steps", type=int, default=100_000, help="agent steps to train for")
    parser.add_argument("--run-dir", default=None,
                        help="where to write the run (default: examples/runs/recall-<time>)")
    args = parser.parse_args()
    run_dir = args.run_dir or os.path.join(os.path.dirname(os.path.abspath(__file__)), "runs",
                                           time.strftime("recall-%Y%m%d-%H%M%S"))

    summary = shoal.train(
        "recall",
        policy=GRUPolicy,                 # a class or factory (obs_space, act_space) -> Module,
                                          # or a ready nn.Module
        env_num_envs=64,
        train_total_steps=args.steps,
        train_horizon=16,                 # segments of 16 steps: the GRU is unrolled over them
        train_minibatch_size=256,
        train_learning_rate=0.01,
        train_device="cpu",
        train_torch_threads=1,            # tiny batches: one thread is fastest
        log_dashboard="off",
        log_run_dir=run_dir,
    )
    print(f"recall with a custom GRU: score {summary['score']:.3f} after "
          f"{summary['agent_steps']:,} steps ({summary['wall_seconds']:.1f} s); "
          f"a memoryless policy scores at most 0.25")

    # A checkpoint of a custom policy is loaded into a module of the same architecture.
    from shoal.trainer.eval_cli import evaluate

    result = evaluate(summary["run_dir"], episodes=200, policy=GRUPolicy, greedy=True)
    print(f"greedy evaluation: score {result['score']:.3f} over {result['episodes']} episodes")


if __name__ == "__main__":
    main()
