"""Checkpoints: written atomically, loaded with ``torch.load(weights_only=True)``.

A checkpoint is one ``.pt`` file holding a dict of tensors and plain Python values only (so the
safe loader can read it): the model and optimizer state, the config, the global step and epoch,
every RNG state, the sampler's state, the rollout carry (the first step of the next epoch, which
the pre-update policy already took) and, when the env can snapshot itself, the env state. See
:mod:`shoal.trainer.ppo` for what "exact resume" covers.

Writes go to a temporary file in the same directory, are fsynced, then ``os.replace``-d over the
target, so a crash mid-write never leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import os
import re
import secrets
from typing import Any

import torch

__all__ = ["CheckpointError", "FORMAT", "save_checkpoint", "load_checkpoint", "list_checkpoints",
           "latest_checkpoint", "prune_checkpoints", "checkpoint_path", "snapshot_env",
           "FRESH_EPISODES_NOTE", "restore_env", "TRUST_FLAG"]

FORMAT = 1
KIND = "shoal-checkpoint"
_NAME = re.compile(r"^checkpoint_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt or does not fit the env/policy it is loaded into."""


FRESH_EPISODES_NOTE = "a run resumed from its checkpoints starts fresh episodes"


# The opt-in to unpickle a checkpoint's Python env state. Deliberately not a config key: the
# config is saved in the checkpoint, and a file must not be able to grant itself trust.
TRUST_FLAG = "--trust-pickled-env-state"


def restore_env(env: Any, state: dict[str, Any], trust_pickled: bool = False) -> str | None:
    """Loads a checkpoint's env state into ``env``; returns None, or why it was not loaded.

    C envs' state is plain arrays. Python envs' state holds the envs pickled, and unpickling runs
    whatever code the bytes name, so it is loaded only with ``trust_pickled`` (``shoal train
    --resume RUN --trust-pickled-env-state``, ``Trainer.resume(...,
    trust_pickled_env_state=True)``); without it the state is left alone and the reason is
    returned, and the caller restarts the episodes instead.
    """
    from ..vector.base import PickledStateError, SnapshotParamsError

    arrays = {k: (v.numpy() if isinstance(v, torch.Tensor) else v) for k, v in state.items()}
    try:
        if trust_pickled:
            env.load_state(arrays, allow_pickle=True)
        else:
            env.load_state(arrays)
    except PickledStateError:
        return (f"the checkpoint's env state is pickled Python envs, which are loaded only with "
                f"{TRUST_FLAG} (unpickling runs whatever code the file names: use it only for "
                f"checkpoints you made or trust)")
    except SnapshotParamsError as exc:   # the run was resumed with other env parameters
        return f"{exc.what}: the episodes restart under this run's parameters"
    return None


def snapshot_env(env: Any) -> tuple[dict[str, Any] | None, str | None]:
    """``(state, None)``: the env's snapshot as tensors and plain values, for a checkpoint; or
    ``(None, reason)`` when the env cannot snapshot itself (no ``save_state``, or it raises
    NotImplementedError: a built Gymnasium vector env, Python envs holding sockets, windows or
    simulator handles). Such checkpoints hold everything but the env, and a resume from them
    restarts the episodes (see :mod:`shoal.trainer.ppo`)."""
    import numpy as np

    save_state = getattr(env, "save_state", None)
    if not callable(save_state):
        return None, f"{getattr(env, 'name', type(env).__name__)} has no save_state()"
    try:
        state = save_state()
    except NotImplementedError as exc:
        return None, " ".join(str(exc).split()) or f"{type(env).__name__} cannot snapshot"
    return {k: (torch.from_numpy(np.array(v, copy=True)) if isinstance(v, np.ndarray) else v)
            for k, v in state.items()}, None


def checkpoint_path(run_dir: str, epoch: int) -> str:
    """``<run_dir>/checkpoints/checkpoint_<epoch>.pt``."""
    return os.path.join(run_dir, "checkpoints", f"checkpoint_{epoch:07d}.pt")


def atomic_write_bytes(path: str, write: Any) -> None:
    """Calls ``write(fileobj)`` on a temp file next to ``path``, fsyncs, then renames it over
    ``path`` (and fsyncs the directory so the rename itself is durable)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # os.open with 0o666 lets the umask decide the permissions, as for any new file
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{secrets.token_hex(4)}-"
                                  f"{os.path.basename(path)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def atomic_write_text(path: str, text: str) -> None:
    """Writes a text file atomically (same procedure as checkpoints)."""
    atomic_write_bytes(path, lambda fh: fh.write(text.encode()))


def save_checkpoint(path: str, payload: dict[str, Any]) -> str:
    """Writes ``payload`` (tensors and plain values) to ``path`` atomically; returns ``path``.

    A failed write (disk full, read-only or vanished run directory) raises
    :class:`CheckpointError` naming the cause and the newest checkpoint, which is left as it was
    (the temporary file is removed)."""
    payload = dict(payload, format=FORMAT, kind=KIND)

    def write(fh: Any) -> None:
        try:
            torch.save(payload, fh)
        except RuntimeError as exc:
            # a Ctrl-C inside a record's write makes torch's zip writer fail in its cleanup,
            # and that error replaces the KeyboardInterrupt: the interrupt is what happened
            if isinstance(exc.__context__, KeyboardInterrupt):
                raise exc.__context__ from None
            raise

    try:
        atomic_write_bytes(path, write)
    except OSError as exc:
        run_dir = os.path.dirname(os.path.dirname(os.path.abspath(path)))
        previous = latest_checkpoint(run_dir)
        kept = (f"the newest checkpoint, {previous}, is intact: free space or make the "
                f"directory writable, then continue with --resume {run_dir}"
                if previous else "no earlier checkpoint exists")
        raise CheckpointError(f"could not write checkpoint {path} "
                              f"({exc.strerror or type(exc).__name__}); {kept}") from None
    return path


def remove_stale_temp_files(run_dir: str) -> None:
    """Deletes the temporary files of checkpoint writes that a crash cut short (a run directory
    has one writer, so any left when a run starts are stale)."""
    directory = os.path.join(run_dir, "checkpoints")
    if not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        if name.startswith(".tmp-"):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass


def load_checkpoint(path: str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Reads a checkpoint with the safe loader; any problem raises :class:`CheckpointError`
    saying what is wrong with which file."""
    if os.path.isdir(path):
        found = latest_checkpoint(path)
        if found is None:
            raise CheckpointError(f"{path} holds no checkpoints (looked for "
                                  f"checkpoints/checkpoint_*.pt): pass a run directory of "
                                  f"`shoal train` or a .pt file")
        path = found
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated/garbage files
        raise CheckpointError(
            f"checkpoint {path!r} could not be read ({type(exc).__name__}): it is corrupt, "
            f"truncated or not a shoal checkpoint. Use an earlier checkpoint from the same run "
            f"directory (checkpoints/).") from None
    if not isinstance(data, dict) or data.get("kind") != KIND:
        raise CheckpointError(f"{path!r} is not a shoal checkpoint (no 'kind': '{KIND}' entry)")
    if data.get("format") != FORMAT:
        raise CheckpointError(f"{path!r} has checkpoint format {data.get('format')!r}; this "
                              f"version of shoal reads format {FORMAT}")
    for key in ("config", "model"):
        if key not in data:
            raise CheckpointError(f"{path!r} is incomplete: it has no '{key}' entry")
    data["path"] = path
    return data


def list_checkpoints(run_dir: str) -> list[str]:
    """Checkpoint files of a run directory, oldest first (by epoch number)."""
    directory = os.path.join(run_dir, "checkpoints")
    if not os.path.isdir(directory):
        return []
    found = []
    for name in os.listdir(directory):
        m = _NAME.match(name)
        if m:
            found.append((int(m.group(1)), os.path.join(directory, name)))
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str) -> str | None:
    """The newest checkpoint of a run directory, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def prune_checkpoints(run_dir: str, keep: int) -> None:
    """Deletes all but the ``keep`` newest checkpoints."""
    for path in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
