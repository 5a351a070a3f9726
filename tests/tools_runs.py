"""Run directories for the tests of shoal's run tools (watch, inspect, export): a checkpoint
written straight from a freshly built policy (the tools only read its config and weights), so no
training is needed where the tool, not the policy's skill, is under test."""

from __future__ import annotations

import os
from typing import Any

import torch

import shoal
from shoal.trainer.checkpoint import checkpoint_path, save_checkpoint
from shoal.trainer.config import build_config
from shoal.trainer.policies import make_policy


def write_run(run_dir: str, env_name: str, policy: str = "mlp", hidden: int = 32,
              seed: int = 0, actor_gain: float = 1.0, **env_params: Any) -> str:
    """A run directory holding one checkpoint of an untrained ``policy`` for ``env_name``;
    returns ``run_dir``. The weights are drawn from torch seed ``seed`` (and the caller's torch
    RNG state is restored). ``actor_gain`` scales the actor layer's weights: the initial 0.01
    gain makes every logit nearly equal, so greedy actions would hinge on rounding."""
    overrides = {"policy.name": policy, "policy.hidden": hidden}
    overrides.update({f"env.{k}": v for k, v in env_params.items()})
    cfg = build_config(env_name, overrides=overrides)
    # the env as the run has it: the shipped config's parameters (e.g. maze's view and
    # prev_action, which shape the observation) under the given ones
    env = shoal.make(env_name, 1, seed=0, **dict(cfg.env.params))
    try:
        state = torch.get_rng_state()
        torch.manual_seed(seed)
        try:
            model = make_policy(env, policy, hidden=hidden)
            with torch.no_grad():
                model.heads.actor.weight.mul_(actor_gain)
        finally:
            torch.set_rng_state(state)
        spaces = {"observation": repr(env.single_observation_space),
                  "action": repr(env.single_action_space)}
    finally:
        env.close()
    save_checkpoint(checkpoint_path(run_dir, 1),
                    {"config": cfg.to_dict(), "model": model.state_dict(), "spaces": spaces,
                     "epoch": 1, "agent_steps": 0})
    os.makedirs(run_dir, exist_ok=True)
    return run_dir
