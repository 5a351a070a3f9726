"""What the run tools (watch, inspect, export) share: a checkpoint's env and policy, stepped one
agent-step at a time with the policy's action probabilities and value in view.

A run is a ``shoal train`` run directory (its newest checkpoint is used) or a checkpoint file.
The env is rebuilt with the parameters the checkpoint was trained with; checkpoints are read
with the safe loader (:func:`shoal.trainer.checkpoint.load_checkpoint`), so nothing in them runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["RunEnv", "Decision", "GENERIC_ENV_KEYS", "load_run", "env_params_of", "PolicyStepper",
           "make_run_env"]

#: keys of a config's [env] table that are not the env's own parameters
GENERIC_ENV_KEYS = frozenset({"name", "num_envs", "backend", "num_workers", "num_buffers", "seed"})


@dataclass
class RunEnv:
    """A checkpoint and the env it was trained on."""

    checkpoint: dict[str, Any]
    env_name: str
    env_params: dict[str, Any]
    policy_name: str


def env_params_of(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The env's own parameters a checkpoint was trained with (no generic keys)."""
    env_cfg = dict(checkpoint["config"].get("env", {}))
    return {k: v for k, v in env_cfg.items() if k not in GENERIC_ENV_KEYS}


def load_run(path: str) -> RunEnv:
    """The newest checkpoint of run directory ``path`` (or checkpoint file ``path``) with the
    name and parameters of its env. Raises CheckpointError when there is none."""
    from ..trainer.checkpoint import CheckpointError, load_checkpoint

    ckpt = load_checkpoint(path)
    name = ckpt["config"].get("env", {}).get("name")
    if not name:
        raise CheckpointError(f"{ckpt['path']} names no env in its config ([env] name)")
    policy = ckpt["config"].get("policy", {}).get("name", "mlp")
    return RunEnv(ckpt, str(name), env_params_of(ckpt), str(policy))


class PolicyStepper:
    """A checkpoint's policy acting for every agent row of a vector env, one step at a time,
    keeping its recurrent state across steps and resetting it where episodes ended.

    :meth:`act` returns a :class:`Decision`: the env actions and, per row, the action
    probabilities (discrete heads, concatenated over action dimensions; the Gaussian mean for
    Box), the entropy and the value estimate.
    """

    def __init__(self, checkpoint: dict[str, Any], env: Any, greedy: bool = False,
                 seed: int = 0) -> None:
        import torch

        from ..trainer.eval_cli import load_policy
        from ..trainer.policies import policy_initial_state

        self._torch = torch
        self.policy = load_policy(checkpoint, env)
        self.distribution = getattr(self.policy, "distribution", None)
        if self.distribution is None:
            from ..trainer.distributions import make_distribution

            self.distribution = make_distribution(env.single_action_space)
        self.greedy = greedy
        self.generator = torch.Generator().manual_seed(seed)
        self.state = policy_initial_state(self.policy, env.num_agents, "cpu")
        self.starts = torch.ones(env.num_agents)

    def act(self, obs: np.ndarray) -> "Decision":
        """The policy's decision for one step of observations ``[N, *obs_shape]``."""
        torch = self._torch
        threads = torch.get_num_threads()
        # one row (or a few): a second thread only adds wake-up latency, and on a busy machine
        # OpenMP spin-waiting made each tiny op 7 ms; the caller's setting is restored below
        torch.set_num_threads(1)
        try:
            return self._act(obs)
        finally:
            torch.set_num_threads(threads)

    def _act(self, obs: np.ndarray) -> "Decision":
        torch = self._torch
        dist = self.distribution
        with torch.inference_mode():
            obs_t = torch.from_numpy(np.ascontiguousarray(obs)).unsqueeze(1)
            params, values, self.state = self.policy(obs_t, self.state, self.starts.unsqueeze(1))
            params = params[:, 0].float()
            values = values.reshape(-1).float()
            if self.greedy:
                actions = dist.mode(params)
            else:
                actions = dist.sample(params, self.generator)
            entropy = dist.entropy(params)
            if dist.kind == "box":
                probs = params[:, : dist.action_dim]
            else:
                probs = torch.cat([torch.softmax(p, -1) for p in params.split(dist.nvec, -1)], -1)
            env_actions = dist.to_env(actions).numpy().copy()
        return Decision(env_actions, actions.numpy().copy(), probs.numpy().copy(),
                        values.numpy().copy(), entropy.numpy().copy(), params.numpy().copy())

    def episode_ends(self, done: np.ndarray) -> None:
        """Marks rows whose episode ended on the last step (their state resets next step)."""
        self.starts = self._torch.from_numpy(np.asarray(done, dtype=np.float32).copy())


@dataclass
class Decision:
    """One step of a policy for N rows."""

    env_actions: np.ndarray   #: what env.step takes
    actions: np.ndarray       #: the distribution's actions (int64 indices, or raw Gaussian draws)
    probs: np.ndarray         #: [N, P]: softmax per discrete dimension, or the Gaussian mean
    values: np.ndarray        #: [N] value estimates
    entropy: np.ndarray       #: [N] entropy of the action distribution
    params: np.ndarray        #: [N, num_params] raw action parameters (logits, or mean/log-std)


def make_run_env(name: str, params: dict[str, Any], num_envs: int = 1, seed: int = 0,
                 render_mode: str | None = None) -> Any:
    """A serial vector env of ``name`` with ``params``; for Python envs ``render_mode`` is passed
    to the env's creator (C envs render every mode)."""
    from ..vector import make

    params = dict(params)
    if render_mode is not None and name.startswith(("gym:", "pz:")):
        params["render_mode"] = render_mode
    return make(name, num_envs, seed=seed, **params)


def python_render_modes(env: Any) -> list[str] | None:
    """The render modes a Python env declares (``metadata["render_modes"]``); None for C envs."""
    inner = getattr(env, "envs", None)
    target = inner[0] if inner else getattr(env, "vector_env", None)
    if target is None:
        return None
    metadata = getattr(target, "metadata", None) or {}
    return [str(m) for m in metadata.get("render_modes", [])]
