"""Action masks of Python envs: the ``"action_mask"`` entry of a Dict observation.

The common convention (PettingZoo's classic envs, many Gymnasium envs with invalid actions) is an
observation ``{"observation": ..., "action_mask": ...}`` whose mask has one entry per action, 1 for
a valid one. An emulated env with such an observation space gets:

- buffer rows holding only the observation part (``"observation"`` alone when it is the only
  other key, else a Dict of the other keys): ``env.structured_observation_space`` is that part;
- ``env.action_masks``, bool ``[agents, sum(nvec)]``: the mask of the observation in each row
  (nonzero entries are valid), written with every observation; the trainer applies it
  (:mod:`shoal.trainer.action_masks`). Rows of absent agents hold an all-valid mask.

The mask must have one entry per logit of the flat action space: ``n`` for ``Discrete(n)``,
``sum(nvec)`` for ``MultiDiscrete`` (dimension by dimension), in any shape of that many elements.
"""

from __future__ import annotations

from typing import Any, Mapping

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ..vector.base import action_nvec
from .spaces import action_layout

__all__ = ["MASK_KEY", "split_action_mask", "MaskedRowWriter", "InfoActionMask"]

#: the Dict-observation key that holds the action mask
MASK_KEY = "action_mask"


def split_action_mask(observation_space: spaces.Space, action_space: spaces.Space,
                      name: str) -> tuple[spaces.Space, int]:
    """(the observation space buffer rows hold, action-mask entries per agent): the space
    unchanged and 0 unless it is a Dict with an ``"action_mask"`` key. Raises ValueError naming
    the fix for a mask that cannot fit the action space."""
    if not (isinstance(observation_space, spaces.Dict) and MASK_KEY in observation_space.spaces):
        return observation_space, 0
    mask_space = observation_space.spaces[MASK_KEY]
    rest = {k: v for k, v in observation_space.spaces.items() if k != MASK_KEY}
    if not rest:
        raise ValueError(f"{name}: the observation space holds only an 'action_mask': add the "
                         f"observation itself under another key (conventionally 'observation')")
    inner = rest["observation"] if list(rest) == ["observation"] else spaces.Dict(rest)
    nvec = action_nvec(action_layout(action_space).flat_space)
    if nvec is None:
        raise ValueError(f"{name}: the observation has an 'action_mask' but the action space "
                         f"{action_space} is continuous: masks mark valid discrete actions. Fix: "
                         f"remove the mask, or use a Discrete/MultiDiscrete action space")
    width = int(sum(nvec))
    size = int(np.prod(mask_space.shape)) if getattr(mask_space, "shape", None) is not None else -1
    if not isinstance(mask_space, (spaces.Box, spaces.MultiBinary, spaces.MultiDiscrete)) \
            or size != width:
        raise ValueError(f"{name}: the observation's 'action_mask' is {mask_space} but the action "
                         f"space {action_space} has {width} choices: the mask needs one entry per "
                         f"choice (e.g. spaces.Box(0, 1, ({width},), np.int8)), 1 where valid")
    return inner, width


class MaskedRowWriter:
    """Writes a Dict observation's observation part into a buffer row through ``inner`` (a
    :class:`~shoal.emulation.spaces.RowWriter` of that part) and its ``"action_mask"`` into
    ``mask`` (a bool row; None drops it, for final observations)."""

    __slots__ = ("inner", "mask", "observation_only")

    def __init__(self, inner: Any, mask: np.ndarray | None, observation_only: bool) -> None:
        self.inner = inner
        self.mask = mask
        self.observation_only = observation_only

    def write(self, value: Any) -> None:
        if not isinstance(value, Mapping) or MASK_KEY not in value:
            raise ValueError(f"the observation space has an 'action_mask' but the env returned "
                             f"{type(value).__name__} without one: return a dict with the "
                             f"'observation' and 'action_mask' keys, as the space says")
        if self.observation_only:
            self.inner.write(value["observation"])
        else:
            self.inner.write({k: v for k, v in value.items() if k != MASK_KEY})
        if self.mask is not None:
            np.not_equal(np.asarray(value[MASK_KEY]).reshape(-1), 0, out=self.mask)

    def clear(self) -> None:
        self.inner.clear()
        if self.mask is not None:
            self.mask[...] = True


class InfoActionMask(gym.Wrapper):
    """A Gymnasium env whose ``info`` dict carries the action mask (``info["action_mask"]``),
    turned into the Dict-observation convention shoal reads::

        shoal.from_gymnasium(lambda: InfoActionMask(MyEnv()), num_envs=8)

    Observations become ``{"observation": obs, "action_mask": mask}`` (the mask as int8, one entry
    per action choice, from the ``info`` of the same ``reset``/``step``; all ones when the info has
    none); everything else is the wrapped env's.
    """

    def __init__(self, env: Any, key: str = MASK_KEY) -> None:
        super().__init__(env)
        self.key = key
        nvec = action_nvec(action_layout(env.action_space).flat_space)
        if nvec is None:
            raise ValueError(f"InfoActionMask: the action space {env.action_space} is continuous; "
                             f"masks mark valid discrete actions")
        self.width = int(sum(nvec))
        self.observation_space = spaces.Dict({
            "observation": env.observation_space,
            MASK_KEY: spaces.Box(0, 1, (self.width,), np.int8)})

    def _wrap(self, obs: Any, info: Any) -> dict[str, Any]:
        mask = info.get(self.key) if isinstance(info, Mapping) else None
        if mask is None:
            mask = np.ones(self.width, np.int8)
        else:
            mask = (np.asarray(mask).reshape(-1) != 0).astype(np.int8)
            if mask.size != self.width:
                raise ValueError(f"info[{self.key!r}] has {mask.size} entries but the action space "
                                 f"{self.action_space} has {self.width} choices")
        return {"observation": obs, MASK_KEY: mask}

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[Any, Any]:
        obs, info = self.env.reset(seed=seed, options=options)
        return self._wrap(obs, info), info

    def step(self, action: Any) -> tuple[Any, Any, Any, Any, Any]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._wrap(obs, info), reward, terminated, truncated, info
