"""``shoal eval``: the mean score of a trained checkpoint.

    shoal eval ENV --checkpoint PATH [--episodes N] [--num-envs N] [--seed S] [--greedy]

PATH is a checkpoint file or a run directory (its newest checkpoint). The env is built with the
parameters the checkpoint was trained with. Prints the mean score (and return) over at least N
finished episodes.

The estimate is unbiased however episode length and score are related: each of the envs
contributes its first ``k = ceil(N / num_envs)`` episodes, whenever they end. (Stopping at the
first N episodes to finish, as all envs start together, would over-count short episodes: in a
game where dying early scores low, the estimate would be too low.)
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

__all__ = ["evaluate", "main", "load_policy"]


def load_policy(checkpoint: str | dict, env: Any, policy: Any = None, device: str = "cpu"):
    """The policy of a checkpoint, with its weights, on ``device``.

    ``policy`` is needed only for checkpoints of custom policies: an ``nn.Module`` of the same
    architecture (or a callable ``(obs_space, act_space) -> nn.Module``).
    """
    import torch

    from .checkpoint import CheckpointError, load_checkpoint
    from .obs_norm import attach_for_state_dict
    from .policies import POLICIES, make_policy

    ckpt = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    path = ckpt.get("path", "checkpoint")
    cfg = ckpt["config"]
    spaces = ckpt.get("spaces", {})
    for key, mine in (("observation", env.single_observation_space),
                      ("action", env.single_action_space)):
        if key in spaces and spaces[key] != repr(mine):
            raise CheckpointError(f"{path}: trained with {key} space {spaces[key]} but this env "
                                  f"has {mine!r}: use the env (and parameters) it was trained on")
    if policy is None:
        builtin = {f"{c.__module__}.{c.__qualname__}" for c in POLICIES.values()}
        cls = ckpt.get("policy_class")
        if cls is not None and cls not in builtin:
            raise CheckpointError(
                f"{path} holds a custom policy ({cls}); build one of the same architecture and "
                f"pass it: shoal.trainer.eval_cli.evaluate(..., policy=MyPolicy(...))")
        pol = cfg.get("policy", {})
        with torch.random.fork_rng(devices=[]):   # the init draws must not move the caller's RNG
            policy = make_policy(env, pol.get("name", "mlp"), hidden=int(pol.get("hidden", 128)))
    elif not isinstance(policy, torch.nn.Module):
        policy = policy(env.single_observation_space, env.single_action_space)
    try:
        attach_for_state_dict(policy, ckpt["model"])   # a train.norm_obs run's statistics
        policy.load_state_dict(ckpt["model"])
    except (RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{path}: the saved weights do not fit the policy "
                              f"({str(exc).splitlines()[0]})") from None
    return policy.to(device).eval()


def evaluate(checkpoint: str, episodes: int = 100, num_envs: int | None = None, seed: int = 12345,
             greedy: bool = False, env_name: str | None = None, policy: Any = None,
             device: str = "cpu", max_steps: int = 100_000_000) -> dict[str, float]:
    """Runs a checkpoint's policy until each env has finished its first
    ``ceil(episodes / num_envs)`` episodes; returns their mean ``score`` (and the other episode
    stats ``env.log_env()`` reports, plus ``episodes``). Episodes an env finishes beyond its
    share are not counted, so long episodes weigh as much as short ones.

    ``greedy`` takes the most likely action instead of sampling. ``max_steps`` bounds the agent
    steps (an error if too few episodes finished by then).
    """
    import numpy as np
    import torch

    from ..vector import make as make_env
    from .checkpoint import load_checkpoint
    from .config import ConfigError
    from .action_masks import env_action_masks
    from .policies import Inference

    if episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {episodes}")
    ckpt = load_checkpoint(checkpoint)
    cfg = ckpt["config"]
    env_cfg = dict(cfg.get("env", {}))
    name = env_cfg.get("name")
    if env_name is not None and env_name != name:
        raise ConfigError(f"{ckpt['path']} was trained on '{name}', not '{env_name}'")
    generic = {"name", "num_envs", "backend", "num_workers", "num_buffers", "seed"}
    params = {k: v for k, v in env_cfg.items() if k not in generic}
    n_envs = num_envs or max(1, min(episodes, 256))
    env = make_env(name, n_envs, seed=seed, **params)
    try:
        model = load_policy(ckpt, env, policy, device)
        inference = Inference(model, env.single_action_space, device, deterministic=greedy,
                              generator=torch.Generator(device=device).manual_seed(seed))
        # the env's action masks, as the run trained with them (train.action_masks)
        action_masks = env_action_masks(env, cfg.get("train", {}).get("action_masks", "auto"),
                                        inference.distribution)
        obs, _ = env.reset(seed)
        state = inference.initial_state(env.num_agents)
        starts = torch.ones(env.num_agents)
        totals: dict[str, float] = {}
        share = math.ceil(episodes / env.num_envs)       # each env's first `share` episodes
        counted = np.zeros(env.num_envs)
        steps = 0
        while (counted < share).any():
            actions, _, _, state = inference.act(obs, state, starts, action_masks=action_masks)
            obs, _, terminals, truncations, _ = env.step(inference.env_actions(actions))
            ended = terminals | truncations
            starts = torch.from_numpy(ended).float()
            steps += env.num_agents
            for i in np.unique(np.flatnonzero(ended) // env.agents_per_env):
                if counted[i] >= share:
                    continue
                stats = env.log_env(int(i))
                n = float(stats.pop("n", 0.0))
                for key, value in stats.items():
                    totals[key] = totals.get(key, 0.0) + value * n
                counted[i] += n
            if steps >= max_steps and (counted < share).any():
                raise RuntimeError(f"only {int(counted.sum())} episodes finished in {steps} agent "
                                   f"steps ({int((counted < share).sum())} envs short of their "
                                   f"{share}); raise max_steps")
        count = float(counted.sum())
    finally:
        env.close()
    result = {k: v / count for k, v in totals.items()}
    result["episodes"] = int(count)
    result.setdefault("score", result.get("episode_return", float("nan")))
    return result


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``shoal eval``."""
    parser = argparse.ArgumentParser(
        prog="shoal eval", description="Mean score of a trained checkpoint on its env.",
        allow_abbrev=False)
    parser.add_argument("env", nargs="?", help="env name (must match the checkpoint's)")
    parser.add_argument("--checkpoint", required=True,
                        help="checkpoint file, or a run directory (its newest checkpoint)")
    parser.add_argument("--episodes", type=int, default=100,
                        help="episodes to average over (at least; default 100): each env "
                             "contributes its first ceil(episodes / num-envs)")
    parser.add_argument("--num-envs", type=int, default=None,
                        help="env copies run together (default: min(episodes, 256))")
    parser.add_argument("--seed", type=int, default=12345, help="env and sampling seed")
    parser.add_argument("--greedy", action="store_true",
                        help="take the most likely action instead of sampling")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    args = parser.parse_args(argv)

    from .checkpoint import CheckpointError
    from .config import ConfigError

    try:
        result = evaluate(args.checkpoint, args.episodes, args.num_envs, args.seed, args.greedy,
                          env_name=args.env, device=args.device)
    except (CheckpointError, ConfigError, ValueError) as exc:
        print(f"shoal eval: {exc}", file=sys.stderr)
        return 2
    others = "  ".join(f"{k} {v:.4g}" for k, v in result.items()
                       if k not in ("score", "episodes"))
    print(f"score {result['score']:.4f} over {result['episodes']} episodes  {others}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
