"""A training loop written by hand around shoal's pieces: env, policy, inference, advantages.

Plain PPO, top to bottom: collect a [S, T] batch from a vector env, compute GAE advantages with
shoal's kernel, then a few epochs of clipped-ratio minibatch updates. No checkpoints, no logging
beyond print. shoal's own trainer (shoal/trainer/ppo.py) adds prioritised segment sampling,
V-trace-clipped advantages recomputed per minibatch, double-buffered stepping, recurrent
policies, resume and dashboards on top of the same steps.

    python examples/own_loop.py                  # 60k steps on `template`, a few seconds
    python examples/own_loop.py --steps 20000
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import shoal
from shoal.trainer import Inference, compute_advantages, make_policy


def main() -> None:
    parser = argparse.ArgumentParser(description="PPO by hand on shoal's `template` corridor.")
    parser.add_argument("--steps", type=int, default=60_000, help="agent steps to train for")
    args = parser.parse_args()

    num_envs, T = 64, 16                   # S = 64 segments of T = 16 steps per batch
    gamma, lam, clip, lr = 0.99, 0.95, 0.2, 0.01
    update_epochs, minibatch_segments = 2, 16
    torch.manual_seed(0)
    torch.set_num_threads(1)               # small batches: one thread is fastest on a few cores

    # The env: a corridor of 16 cells, reward 1 at the right end, truncated after 32 steps.
    env = shoal.make("template", num_envs=num_envs, seed=0, length=16, max_steps=32)
    S = env.num_agents
    policy = make_policy(env, "mlp", hidden=64)
    inference = Inference(policy, env.single_action_space, "cpu")   # rollout: no autograd
    dist = inference.distribution          # logits -> actions, log-probs, entropy
    optimizer = torch.optim.Adam(policy.parameters(), lr=lr)

    obs_shape = env.single_observation_space.shape
    obs_buf = torch.zeros(S, T, *obs_shape)
    act_buf = torch.zeros(S, T, dtype=dist.action_dtype)
    logp_buf = torch.zeros(S, T)
    values = torch.zeros(S, T + 1)         # column T: value of the state after the batch
    rewards = torch.zeros(S, T)
    dones = torch.zeros(S, T)

    obs, _ = env.reset()
    epochs = max(1, args.steps // (S * T))
    for epoch in range(1, epochs + 1):
        # ---- 1. rollout ----
        for t in range(T):
            actions, logp, value, _ = inference.act(obs)
            obs_buf[:, t] = torch.from_numpy(obs)
            act_buf[:, t], logp_buf[:, t], values[:, t] = actions, logp, value
            obs, reward, terminal, truncated, infos = env.step(inference.env_actions(actions))
            rewards[:, t] = torch.from_numpy(reward)
            dones[:, t] = torch.from_numpy(terminal | truncated)
            # A time limit is not the end of the return: add γ·V(last observation).
            cut = np.flatnonzero(truncated & ~terminal)
            if cut.size:
                final = infos["final_observation"][cut]
                _, _, v_final, _ = inference.act(final)
                rewards[cut, t] += gamma * v_final
        values[:, T] = inference.act(obs)[2]

        # ---- 2. advantages (plain GAE: dones stop the recursion at episode ends) ----
        advantages = compute_advantages(values, rewards, dones, None, gamma, lam)
        returns = advantages + values[:, :T]

        # ---- 3. PPO update over minibatches of whole segments ----
        for _ in range(update_epochs):
            for idx in torch.randperm(S).split(minibatch_segments):
                params, new_values, _ = policy(obs_buf[idx], None, None)
                new_logp, entropy = dist.log_prob_and_entropy(params, act_buf[idx])
                ratio = (new_logp - logp_buf[idx]).exp()
                adv = advantages[idx]
                adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                policy_loss = -torch.min(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv).mean()
                value_loss = 0.5 * (new_values - returns[idx]).square().mean()
                loss = policy_loss + 0.5 * value_loss - 0.01 * entropy.mean()
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
                optimizer.step()

        stats = env.log()                  # means over the episodes finished since last call
        if stats and (epoch <= 4 or epoch % 10 == 0 or epoch == epochs):
            print(f"epoch {epoch:4d}  steps {epoch * S * T:7,d}  score {stats['score']:.3f}  "
                  f"episode length {stats['episode_length']:.1f}")
    env.close()


if __name__ == "__main__":
    main()
