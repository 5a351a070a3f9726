"""A trainer's run state: assembling a checkpoint from a :class:`~shoal.trainer.ppo.Trainer` and
restoring a freshly built trainer from one.

:func:`state_dict` is what :meth:`Trainer.state_dict <shoal.trainer.ppo.Trainer.state_dict>`
returns (the model, optimizer, counters and score windows, with every rank's RNGs, slot-0 carry
and env state from :func:`rank_state`); :func:`save` and :func:`emergency_save` write it;
:func:`restore` loads one into a trainer and :func:`resume_config` gives the config a resumed
run continues with. What "exact resume" covers is in :mod:`shoal.trainer.ppo`'s docstring; the file
format (atomic writes, safe loading, env snapshots) is :mod:`shoal.trainer.checkpoint`.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch

from .checkpoint import (CheckpointError, atomic_write_text, checkpoint_path, prune_checkpoints,
                         remove_stale_temp_files, restore_env, save_checkpoint, snapshot_env)
from .config import (Config, ConfigError, apply_mapping, apply_overrides, default_config,
                     finalise, load_toml, section_fields)
from .fused_rollout import AgentRng

if TYPE_CHECKING:
    from .ppo import Trainer

__all__ = ["state_dict", "rank_state", "save", "emergency_save", "restore", "resume_config"]


def state_dict(trainer: Trainer) -> dict[str, Any]:
    """Everything a checkpoint holds (tensors on the CPU, plain values otherwise). In a
    data-parallel job every rank must call it: rank 0's RNGs, carry and env state sit at the
    top level as in one process, the other ranks' under ``ranks`` (rank 1 first)."""
    own = rank_state(trainer)
    ranks = trainer.dist.object_gather(own) or [own]
    cls = type(trainer.policy)
    return {
        "config": trainer.config.to_dict(),
        "model": {k: v.detach().to("cpu", copy=True)
                  for k, v in trainer.policy.state_dict().items()},
        "policy_class": f"{cls.__module__}.{cls.__qualname__}",
        "optimizer": trainer.optimizer.state_dict(),
        "epoch": trainer.epoch,
        "agent_steps": trainer.agent_steps,
        "wall_seconds": trainer.wall_before + (time.perf_counter() - trainer._session_start),
        **own,
        "world_size": trainer.dist.world_size,
        "ranks": ranks[1:],
        "scores": [list(c) for c in trainer.scores.chunks],
        "returns": [list(c) for c in trainer.returns.chunks],
        "episodes_total": trainer.episodes_total,
        "spaces": {"observation": repr(trainer.env.single_observation_space),
                   "action": repr(trainer.env.single_action_space),
                   "num_agents": trainer.S, "horizon": trainer.T},
    }


def rank_state(trainer: Trainer) -> dict[str, Any]:
    """This rank's own part of a checkpoint: RNGs, the slot-0 carry, the env state."""
    b = trainer.storage
    cpu = lambda x: x.detach().to("cpu", copy=True)  # noqa: E731
    carry = {name: cpu(getattr(b, name)[:, 0]) for name in b.CARRIED}
    carry["state0"] = None if b.state0 is None else [cpu(s) for s in b.state0]
    carry["state"] = None if trainer.state is None else [cpu(s) for s in trainer.state]
    env_state = None
    # an env that could not snapshot once never can; one stopped inside an epoch (a hard
    # interrupt) has stepped past the batch the carry describes: its episodes restart
    if trainer.no_snapshot is None and not trainer.mid_epoch:
        env_state, trainer.no_snapshot = snapshot_env(trainer.env)
    return {
        "rng": {
            "torch": trainer.process_state.torch_rng_state(),
            "actions": trainer.action_generator.get_state().cpu(),
            "sampler": trainer.sampler_generator.get_state().cpu(),
            "agents": None if trainer.agent_rng is None else trainer.agent_rng.state(),
            "numpy": torch.from_numpy(np.frombuffer(json.dumps(
                _np_rng_state(trainer.process_state.numpy_rng_state())).encode(),
                dtype=np.uint8).copy()),
        },
        "carry": carry,
        "env_state": env_state,
        "fused": None if trainer.fused is None or trainer.mid_epoch else trainer.fused.state_dict(),
        "reward_scaler": (None if trainer.reward_scaler is None
                          else trainer.reward_scaler.state_dict()),
    }


def save(trainer: Trainer) -> str:
    """Writes a checkpoint for the current epoch boundary; returns its path."""
    path = checkpoint_path(trainer.run_dir, trainer.epoch)
    state = trainer.state_dict()
    if trainer.dist.is_main:
        save_checkpoint(path, state)
        prune_checkpoints(trainer.run_dir, trainer.config.log.keep_checkpoints)
    trainer.last_checkpoint = path
    return path


def emergency_save(trainer: Trainer) -> None:
    """After an abrupt stop: keep the newest periodic checkpoint (saved at a boundary);
    write one now only if there is none (inside an epoch: without the env's state, so the
    resumed run restarts its episodes)."""
    try:
        # ranks stop at different points: no collective (a checkpoint) can run now
        if getattr(trainer, "last_checkpoint", None) is None and not trainer.dist.distributed:
            trainer.save()
        trainer.summary(finished=False)
    except Exception as exc:  # never mask the interrupt
        warnings.warn(f"could not save a checkpoint on interrupt: {exc}")


def restore(trainer: Trainer, ckpt: Mapping[str, Any]) -> None:
    """Loads a checkpoint's state into ``trainer``, freshly built (by its ``__init__``)."""
    saved_ranks = int(ckpt.get("world_size", 1))
    if saved_ranks != trainer.dist.world_size:
        raise CheckpointError(
            f"{ckpt.get('path')} was written by a job of {saved_ranks} rank(s) and this one "
            f"has {trainer.dist.world_size}: resume it with " + (
                "one process (no torchrun)" if saved_ranks == 1 else
                f"{saved_ranks} processes in all (torchrun --nproc-per-node x --nnodes = "
                f"{saved_ranks})"))
    own = ckpt if trainer.dist.rank == 0 else ckpt["ranks"][trainer.dist.rank - 1]
    spaces = ckpt.get("spaces", {})
    saved_rollout = dict(ckpt["config"]).get("train", {}).get("rollout", "torch")
    if ckpt.get("env_state") is not None and saved_rollout != trainer.config.train.rollout:
        # the fused rollout leaves the slot-T actions unstepped, the torch one steps them
        raise CheckpointError(
            f"{ckpt.get('path')} was saved by train.rollout='{saved_rollout}': resume it "
            f"with the same rollout path (--train.rollout {saved_rollout}, not "
            f"'{trainer.config.train.rollout}'), or start a new run for the other path")
    mine = {"observation": repr(trainer.env.single_observation_space),
            "action": repr(trainer.env.single_action_space), "num_agents": trainer.S,
            "horizon": trainer.T}
    for key in ("observation", "action"):
        if spaces.get(key) != mine[key]:
            raise CheckpointError(
                f"{ckpt.get('path')}: the checkpoint's {key} space is {spaces.get(key)} but "
                f"this env's is {mine[key]}: resume with the same env and env parameters")
    try:
        trainer.policy.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{ckpt.get('path')}: the model does not fit this policy "
                              f"({str(exc).splitlines()[0]}); was policy.name, "
                              f"policy.hidden or train.norm_obs changed?") from None
    if trainer.obs_norm is not None:   # saved with the model; the config's may be overridden
        trainer.obs_norm.clip.fill_(trainer.config.train.norm_obs_clip)
    trainer.optimizer.load_state_dict(ckpt["optimizer"])
    trainer.epoch = int(ckpt["epoch"])
    trainer.agent_steps = int(ckpt["agent_steps"])
    trainer.wall_before = float(ckpt.get("wall_seconds", 0.0))
    rng = own["rng"]
    trainer.process_state.set_rng_states(
        rng["torch"], _np_rng_tuple(json.loads(bytes(rng["numpy"].numpy()).decode())))
    trainer.action_generator.set_state(rng["actions"])
    trainer.sampler_generator.set_state(rng["sampler"])
    if trainer.agent_rng is not None and rng.get("agents") is not None:
        if rng["agents"].numel() == trainer.S:
            trainer.agent_rng.load(rng["agents"])
        else:   # another number of agents: fresh streams, seeded as the env's reset below
            trainer.agent_rng = AgentRng(trainer.S, trainer.dist.seed(trainer.config.train.seed) + 3
                                      + 1_000_003 * trainer.epoch)
    for mean, n in ckpt.get("scores", []):
        trainer.scores.add(mean, n)
    for mean, n in ckpt.get("returns", []):
        trainer.returns.add(mean, n)
    trainer.episodes_total = float(ckpt.get("episodes_total", 0.0))
    if trainer.reward_scaler is not None and own.get("reward_scaler") is not None:
        scaler = own["reward_scaler"]
        if scaler["returns"].shape == trainer.reward_scaler.returns.shape:
            trainer.reward_scaler.load_state_dict(scaler)
        else:   # another number of agents: their episodes restart, from a return of 0
            trainer.reward_scaler.stats.load_state_dict(scaler["stats"])
    trainer.resumed_from = ckpt.get("path")
    if trainer.dist.is_main:
        _truncate_metrics(trainer.metrics_path, trainer.epoch)
        remove_stale_temp_files(trainer.run_dir)

    same_batch = spaces.get("num_agents") == trainer.S and spaces.get("horizon") == trainer.T
    b = trainer.storage
    load_state = getattr(trainer.env, "load_state", None)
    env_state = own.get("env_state")
    saved_masks = own.get("carry", {}).get("action_masks")
    if env_state is not None and callable(load_state) and same_batch and \
            (0 if saved_masks is None else saved_masks.shape[-1]) != b.action_masks.shape[-1]:
        # the saved batch's slot 0 (and an overlapped run's whole batch) was acted with
        # action masks and this run reads none, or the other way round
        trainer.resume_note = ("train.action_masks differs from the checkpoint's: the episodes "
                            "restart from a reset (resume with the saved setting to "
                            "continue them)")
    elif env_state is not None and callable(load_state) and same_batch:
        trainer.resume_note = restore_env(trainer.env, env_state, trainer.trust_pickled_env_state)
    if env_state is not None and callable(load_state) and same_batch and not trainer.resume_note:
        carry = own["carry"]
        for name in b.CARRIED:
            if name in carry:    # checkpoints from before action masks lack theirs
                getattr(b, name)[:, 0].copy_(carry[name])
        if b.state0 is not None:
            for dst, src in zip(b.state0, carry["state0"]):
                dst.copy_(src)
            for dst, src in zip(trainer.state, carry["state"]):
                dst.copy_(src)
        if trainer.fused is not None and own.get("fused") is not None:
            trainer.fused.load_state_dict(own["fused"])
        trainer.exact_resume = True
    else:
        # No env snapshot: restart the episodes from a reset seeded by (seed, epoch), and
        # their discounted returns from 0 (the scaler's statistics are kept).
        trainer._reset_env(trainer.env_owned_seed + 1_000_003 * trainer.epoch)
        if trainer.reward_scaler is not None:
            trainer.reward_scaler.returns.zero_()
        trainer.exact_resume = False


def resume_config(ckpt: Mapping[str, Any], path: str, env_name: str | None,
                  files: list[str] | tuple, overrides: Mapping[str, Any] | None, env: Any,
                  origin: str) -> tuple[Config, str]:
    """The config the run of checkpoint ``ckpt`` (loaded from ``path``) continues with (the saved
    one, then ``files`` and ``overrides``) and its run directory; the other arguments are
    :meth:`Trainer.resume <shoal.trainer.ppo.Trainer.resume>`'s."""
    ckpt_path = ckpt["path"]
    run_dir = os.path.dirname(os.path.dirname(os.path.abspath(ckpt_path)))
    cfg = default_config()
    saved = dict(ckpt["config"])
    env_params: dict[str, Any] | None = None
    if env is not None and isinstance(saved.get("env"), Mapping):
        # The env object is given (an out-of-tree or custom env, maybe not registered):
        # its saved parameters describe it and are not checked against the registry.
        generic = set(section_fields("env"))
        table = dict(saved["env"])
        env_params = {k: v for k, v in table.items() if k not in generic}
        saved["env"] = {k: v for k, v in table.items() if k in generic}
    apply_mapping(cfg, saved, f"{ckpt_path} config")
    if "overlap_tail_when" not in dict(saved.get("train") or {}):
        # saved before train.overlap_tail_when: its tail ran in every update
        cfg.train.overlap_tail_when = "always"
    if env_params is not None:
        cfg.env.params = env_params
    if env_name and env_name != cfg.env.name:
        raise ConfigError(f"{path} is a run of env '{cfg.env.name}', not '{env_name}'")
    for f in files:
        apply_mapping(cfg, load_toml(f), f)
    apply_overrides(cfg, dict(overrides or {}), origin)
    cfg.log.run_dir = run_dir
    if env is None:
        finalise(cfg)
    return cfg, run_dir


def _np_rng_state(state: tuple) -> list:
    name, keys, pos, has_gauss, cached = state
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _np_rng_tuple(state: list) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return (name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached)


def _truncate_metrics(path: str, epoch: int) -> None:
    """Drops metric lines written after the checkpoint being resumed (a crash between
    checkpoints leaves some), so the resumed run's file reads as one uninterrupted run."""
    if not os.path.exists(path):
        return
    keep = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                if json.loads(line)["epoch"] <= epoch:
                    keep.append(line if line.endswith("\n") else line + "\n")
            except (ValueError, KeyError):
                continue
    atomic_write_text(path, "".join(keep))
