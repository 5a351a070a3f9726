"""Policies: what the trainer runs, and the contract a custom one follows.

A policy is any ``nn.Module`` with::

    initial_state(batch: int, device) -> tuple of tensors, or None when stateless
    forward(obs, state, starts) -> (action_params, values, new_state)

* ``obs``: ``[B, L, *obs_shape]`` in the env's dtype (L = 1 in rollouts, L = T in training).
* ``state``: what ``initial_state`` returned or the previous call's ``new_state`` (None for
  stateless policies, which ignore it and ``starts``).
* ``starts``: ``[B, L]`` bool or float, 1 where an episode starts at that step: a recurrent
  policy zeroes its state *before* processing that step. Rollout and training pass the same
  boundaries, so the state a step sees is the same in both.
* ``action_params``: ``[B, L, num_params]`` as :mod:`shoal.trainer.distributions` defines
  (logits; ``[mean, log_std]`` for Box). ``values``: ``[B, L]``.

``initial_state`` may be omitted (treated as stateless). A policy may carry a ``distribution``
attribute (an :class:`~shoal.trainer.distributions.ActionDistribution`); otherwise one is built
from the env's action space.

Built in: :class:`MLPPolicy` (the default), :class:`CNNPolicy` for image-like observations
(``[H, W]`` or ``[H, W, C]``) and :class:`LSTMPolicy` (an MLP or CNN encoder feeding an
``LSTMCell`` unrolled over L with resets at ``starts``, fused on the CPU by
:mod:`shoal.trainer.lstm`). Build them with :func:`make_policy`.
Rollouts evaluate a policy through :class:`Inference`, which a C implementation can replace.

Observations are converted to float by :class:`ObservationPreprocessor`: small-range integer
observations (e.g. grid cell codes, 2048 tile exponents) are one-hot encoded, everything else is
scaled by ``1 / max(|low|, |high|)`` per element when that bound is finite. Scaled observations
can then go through a running normaliser (``train.norm_obs``, :mod:`shoal.trainer.obs_norm`),
the preprocessor's ``obs_norm``.

Structured (Dict/Tuple) observations of Python envs arrive as flat buffer rows
(:mod:`shoal.emulation.spaces`). When their leaves share one dtype the row is a Box of the leaves'
values and bounds, read as above. When the dtypes differ the row holds raw bytes: the MLP and LSTM
policies built for such a space (``make_policy(env)`` picks it from
``env.structured_observation_space``) decode the row with
:class:`~shoal.emulation.features.StructuredObservationPreprocessor` instead of reading bytes as
numbers.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from .distributions import ActionDistribution, make_distribution
from .lstm import lstm_sequence

__all__ = [
    "ObservationPreprocessor", "make_preprocessor", "policy_observation_space", "MLPEncoder",
    "CNNEncoder", "ActorCriticHeads", "MLPPolicy", "CNNPolicy", "LSTMPolicy", "make_policy",
    "Inference", "policy_initial_state", "orthogonal_init", "POLICIES", "PRECISIONS",
    "PRECISION_CHOICES", "cpu_bfloat16_units", "resolve_precision",
]

State = tuple[torch.Tensor, ...] | None

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU,
}


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"activation={name!r}: use one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def orthogonal_init(layer: nn.Module, gain: float = math.sqrt(2.0), bias: float = 0.0) -> nn.Module:
    """Orthogonal weights with ``gain`` and constant bias; returns the layer."""
    nn.init.orthogonal_(layer.weight, gain)
    if getattr(layer, "bias", None) is not None:
        nn.init.constant_(layer.bias, bias)
    return layer


# ---------------------------------------------------------------------------------------------
# Observations
# ---------------------------------------------------------------------------------------------

class ObservationPreprocessor(nn.Module):
    """Env observations ``[N, *obs_shape]`` (any dtype) -> float features (float32, or the
    dtype the module is converted to, e.g. by ``policy.double()``).

    ``one_hot="auto"`` one-hot encodes integer Box observations whose values lie in
    ``[0, max_levels)`` (then the output is ``[N, *obs_shape, levels]``); ``True`` forces it
    (integer spaces only), ``False`` disables it. Otherwise each element is multiplied by
    ``1 / max(|low|, |high|)`` where that is finite and positive (1 elsewhere), so the output
    is ``[N, *obs_shape]`` with values mostly in [-1, 1]. Discrete observations are one-hot.
    """

    def __init__(self, space: spaces.Space, one_hot: bool | str = "auto", max_levels: int = 32):
        super().__init__()
        if one_hot not in (True, False, "auto"):
            raise ValueError(f"one_hot={one_hot!r}: use True, False or 'auto'")
        if isinstance(space, spaces.Discrete):
            self.obs_shape: tuple[int, ...] = ()
            self.levels = int(space.n)
            self._offset = int(space.start)
            self.register_buffer("scale", torch.ones(()), persistent=False)
        elif isinstance(space, spaces.Box):
            self.obs_shape = tuple(space.shape)
            self._offset = 0
            integer = np.issubdtype(space.dtype, np.integer) or space.dtype == np.bool_
            low = np.broadcast_to(np.asarray(space.low, np.float64), space.shape)
            high = np.broadcast_to(np.asarray(space.high, np.float64), space.shape)
            levels = int(high.max()) + 1 if integer and high.size and np.isfinite(high).all() else 0
            fits = integer and bool((low >= 0).all()) and 0 < levels <= max_levels
            if one_hot is True and not (integer and bool((low >= 0).all()) and levels > 0):
                raise ValueError(f"one_hot=True needs non-negative integer observations, got {space}")
            self.levels = levels if (one_hot is True or (one_hot == "auto" and fits)) else 0
            bound = np.maximum(np.abs(low), np.abs(high))
            scale = np.where(np.isfinite(bound) & (bound > 0), 1.0 / np.where(bound > 0, bound, 1.0),
                             1.0)
            self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32),
                                 persistent=False)
        elif isinstance(space, (spaces.Dict, spaces.Tuple)):
            raise TypeError(
                f"ObservationPreprocessor takes Box or Discrete observations, got the structured "
                f"space {space}: use make_preprocessor(space) (it picks "
                f"shoal.emulation.features.StructuredObservationPreprocessor)")
        else:
            raise TypeError(f"unsupported observation space {space}: use Box or Discrete")
        self.space = space
        # running normalisation of the scaled features (train.norm_obs; shoal.trainer.obs_norm)
        self.obs_norm: nn.Module | None = None

    @property
    def out_shape(self) -> tuple[int, ...]:
        """Per-observation output shape."""
        return (*self.obs_shape, self.levels) if self.levels else self.obs_shape

    @property
    def out_size(self) -> int:
        return int(np.prod(self.out_shape))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if self.levels:
            index = obs.long()
            if self._offset:
                index = index - self._offset
            return nn.functional.one_hot(index.clamp(0, self.levels - 1), self.levels).to(
                self.scale.dtype)
        x = obs.to(self.scale.dtype) * self.scale
        return x if self.obs_norm is None else self.obs_norm(x)


def is_structured(space: spaces.Space) -> bool:
    """True for Dict and Tuple observation spaces (stored by Python envs as flat rows)."""
    return isinstance(space, (spaces.Dict, spaces.Tuple))


def make_preprocessor(space: spaces.Space, one_hot: bool | str = "auto",
                      max_levels: int = 32) -> nn.Module:
    """The observation preprocessor for ``space``.

    Box and Discrete: :class:`ObservationPreprocessor`. Dict and Tuple (the env's own structured
    space; the policy receives its buffer rows):
    :class:`~shoal.emulation.features.StructuredObservationPreprocessor`, which decodes each leaf
    from the row (Discrete/MultiDiscrete leaves one-hot, the others scaled; ``one_hot`` only
    concerns Box/Discrete observations).
    """
    if is_structured(space):
        if one_hot not in (True, False, "auto"):
            raise ValueError(f"one_hot={one_hot!r}: use True, False or 'auto'")
        from ..emulation.features import StructuredObservationPreprocessor

        return StructuredObservationPreprocessor(space, max_levels=max_levels)
    return ObservationPreprocessor(space, one_hot, max_levels)


def _obs_ndim(space: spaces.Space) -> int:
    """Dimensions of one observation as the policy receives it (a buffer row for Dict/Tuple)."""
    if is_structured(space):
        from ..emulation.spaces import observation_layout

        return len(observation_layout(space).row_shape)
    return len(getattr(space, "shape", ()) or ())


# ---------------------------------------------------------------------------------------------
# Encoders: observations [N, *obs_shape] -> features [N, hidden]
# ---------------------------------------------------------------------------------------------

class MLPEncoder(nn.Module):
    """Flattened observations through ``layers`` Linear + activation layers of width ``hidden``."""

    def __init__(self, observation_space: spaces.Space, hidden: int = 128, layers: int = 2,
                 activation: str = "gelu", one_hot: bool | str = "auto"):
        super().__init__()
        if layers < 1:
            raise ValueError(f"layers={layers} must be >= 1")
        self.preprocess = make_preprocessor(observation_space, one_hot)
        blocks: list[nn.Module] = []
        width = self.preprocess.out_size
        for _ in range(layers):
            blocks += [orthogonal_init(nn.Linear(width, hidden)), _activation(activation)]
            width = hidden
        self.net = nn.Sequential(*blocks)
        self.hidden = hidden

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(obs)
        return self.net(x.reshape(x.shape[0], -1))


class CNNEncoder(nn.Module):
    """Image-like observations ``[H, W]`` or ``[H, W, C]`` (channels last, as envs store them).

    Stride-2 3x3 convolutions halve the image until both sides are at most ``max_side``
    (none for small grids such as a maze view), then two 3x3 convolutions keep the size, and a
    Linear layer maps the flattened result to ``hidden`` features. One-hot codes (see
    :class:`ObservationPreprocessor`) become channels.
    """

    def __init__(self, observation_space: spaces.Space, hidden: int = 128, channels: int = 32,
                 activation: str = "gelu", one_hot: bool | str = "auto", max_side: int = 16):
        super().__init__()
        if is_structured(observation_space):
            raise ValueError(
                f"the CNN encoder needs image-like observations [H, W] or [H, W, C], got the "
                f"structured space {observation_space}: use the MLP policy (name='mlp'), the "
                f"LSTM policy with encoder='mlp', or a custom policy that routes the image leaf "
                f"(shoal.emulation.unflatten) through a CNN")
        shape = tuple(getattr(observation_space, "shape", ()) or ())
        if len(shape) not in (2, 3):
            raise ValueError(
                f"the CNN encoder needs image-like observations [H, W] or [H, W, C], got shape "
                f"{shape}: use the MLP policy (name='mlp') for flat observations"
            )
        self.preprocess = ObservationPreprocessor(observation_space, one_hot)
        self.height, self.width = shape[0], shape[1]
        in_channels = (shape[2] if len(shape) == 3 else 1) * max(self.preprocess.levels, 1)
        layers: list[nn.Module] = []
        h, w, c = self.height, self.width, in_channels
        while max(h, w) > max_side:
            layers += [orthogonal_init(nn.Conv2d(c, channels, 3, stride=2, padding=1)),
                       _activation(activation)]
            h, w, c = (h + 1) // 2, (w + 1) // 2, channels
        for _ in range(2):
            layers += [orthogonal_init(nn.Conv2d(c, channels, 3, padding=1)), _activation(activation)]
            c = channels
        self.conv = nn.Sequential(*layers)
        self.project = nn.Sequential(orthogonal_init(nn.Linear(c * h * w, hidden)),
                                     _activation(activation))
        self.hidden = hidden

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(obs)                     # [N, H, W(, C)(, levels)]
        x = x.reshape(x.shape[0], self.height, self.width, -1).permute(0, 3, 1, 2)
        x = self.conv(x)
        return self.project(x.reshape(x.shape[0], -1))


def _encoder(kind: str | nn.Module, observation_space: spaces.Space, hidden: int,
             activation: str, one_hot: bool | str, layers: int) -> nn.Module:
    if isinstance(kind, nn.Module):
        return kind
    if kind == "mlp":
        return MLPEncoder(observation_space, hidden, layers, activation, one_hot)
    if kind == "cnn":
        return CNNEncoder(observation_space, hidden, activation=activation, one_hot=one_hot)
    raise ValueError(f"encoder={kind!r}: use 'mlp', 'cnn' or an nn.Module returning [N, hidden]")


# ---------------------------------------------------------------------------------------------
# Heads
# ---------------------------------------------------------------------------------------------

class ActorCriticHeads(nn.Module):
    """Features -> (action_params [N, num_params], values [N]).

    The actor layer starts with std 0.01 weights (near-uniform / zero-mean initial policy), the
    critic with std 1. Box spaces add a learned state-independent ``log_std`` (initialised to
    ``log_std_init``) appended to the mean, as the distribution expects.
    """

    def __init__(self, hidden: int, action_space: spaces.Space, log_std_init: float = 0.0,
                 critic_hidden: int | None = None):
        super().__init__()
        self.distribution = make_distribution(action_space)
        box = self.distribution.kind == "box"
        outputs = self.distribution.action_dim if box else self.distribution.num_params
        self.actor = orthogonal_init(nn.Linear(hidden, outputs), gain=0.01)
        self.critic = orthogonal_init(nn.Linear(critic_hidden or hidden, 1), gain=1.0)
        self.log_std = nn.Parameter(torch.full((outputs,), float(log_std_init))) if box else None

    def forward(self, actor_features: torch.Tensor,
                critic_features: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        params = self.actor(actor_features)
        if self.log_std is not None:
            params = torch.cat([params, self.log_std.expand_as(params)], dim=-1)
        critic_in = actor_features if critic_features is None else critic_features
        return params, self.critic(critic_in).squeeze(-1)


def _leading(obs: torch.Tensor, obs_ndim: int) -> tuple[int, int]:
    if obs.dim() != obs_ndim + 2:
        raise ValueError(
            f"policies take obs shaped [B, L, *obs_shape] ({obs_ndim + 2} dims), got "
            f"{tuple(obs.shape)}: add the sequence dimension with obs.unsqueeze(1) for one step"
        )
    return obs.shape[0], obs.shape[1]


# ---------------------------------------------------------------------------------------------
# Policies
# ---------------------------------------------------------------------------------------------

class MLPPolicy(nn.Module):
    """The default policy: an MLP encoder (``layers`` x ``hidden``) and actor/critic heads.

    ``shared=True`` (default) feeds one trunk to both heads; ``shared=False`` gives the critic
    its own trunk, which can help when value and policy features conflict (e.g. continuous
    control), at twice the trunk cost.
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space,
                 hidden: int = 128, layers: int = 2, shared: bool = True,
                 activation: str = "gelu", one_hot: bool | str = "auto",
                 log_std_init: float = 0.0):
        super().__init__()
        self.encoder = MLPEncoder(observation_space, hidden, layers, activation, one_hot)
        self.critic_encoder = None if shared else MLPEncoder(observation_space, hidden, layers,
                                                             activation, one_hot)
        self.heads = ActorCriticHeads(hidden, action_space, log_std_init)
        self.distribution: ActionDistribution = self.heads.distribution
        self.obs_ndim = len(self.encoder.preprocess.obs_shape)

    def initial_state(self, batch: int, device: torch.device | str | None = None) -> State:
        """Stateless: None."""
        return None

    def forward(self, obs: torch.Tensor, state: State = None, starts: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, State]:
        B, L = _leading(obs, self.obs_ndim)
        flat = obs.reshape(B * L, *obs.shape[2:])
        features = self.encoder(flat)
        critic = None if self.critic_encoder is None else self.critic_encoder(flat)
        params, values = self.heads(features, critic)
        return params.reshape(B, L, -1), values.reshape(B, L), state


class CNNPolicy(nn.Module):
    """A :class:`CNNEncoder` trunk shared by the actor and critic heads."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space,
                 hidden: int = 128, channels: int = 32, activation: str = "gelu",
                 one_hot: bool | str = "auto", log_std_init: float = 0.0):
        super().__init__()
        self.encoder = CNNEncoder(observation_space, hidden, channels, activation, one_hot)
        self.heads = ActorCriticHeads(hidden, action_space, log_std_init)
        self.distribution: ActionDistribution = self.heads.distribution
        self.obs_ndim = len(self.encoder.preprocess.obs_shape)

    def initial_state(self, batch: int, device: torch.device | str | None = None) -> State:
        """Stateless: None."""
        return None

    def forward(self, obs: torch.Tensor, state: State = None, starts: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, State]:
        B, L = _leading(obs, self.obs_ndim)
        params, values = self.heads(self.encoder(obs.reshape(B * L, *obs.shape[2:])))
        return params.reshape(B, L, -1), values.reshape(B, L), state


class LSTMPolicy(nn.Module):
    """Encoder -> ``LSTMCell`` unrolled over L -> actor/critic heads.

    State is ``(h, c)``, each ``[B, hidden]``. Where ``starts[:, t]`` is 1 the state is zeroed
    before step t, so one call over a whole segment gives exactly what step-by-step calls with
    the state reset at episode starts give. ``encoder`` is ``"mlp"``, ``"cnn"`` or any module
    mapping ``[N, *obs_shape]`` to ``[N, hidden]``.
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space,
                 hidden: int = 128, encoder: str | nn.Module = "mlp", layers: int = 1,
                 activation: str = "gelu", one_hot: bool | str = "auto",
                 log_std_init: float = 0.0):
        super().__init__()
        self.encoder = _encoder(encoder, observation_space, hidden, activation, one_hot, layers)
        self.cell = nn.LSTMCell(hidden, hidden)
        for name, param in self.cell.named_parameters():
            if "weight" in name:
                nn.init.orthogonal_(param, 1.0)
            else:
                nn.init.zeros_(param)
        self.heads = ActorCriticHeads(hidden, action_space, log_std_init)
        self.distribution: ActionDistribution = self.heads.distribution
        self.hidden = hidden
        self.obs_ndim = _obs_ndim(observation_space)

    def initial_state(self, batch: int, device: torch.device | str | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Zeros ``(h, c)``, each ``[batch, hidden]``."""
        device = device if device is not None else self.cell.weight_hh.device
        dtype = self.cell.weight_hh.dtype
        return (torch.zeros(batch, self.hidden, device=device, dtype=dtype),
                torch.zeros(batch, self.hidden, device=device, dtype=dtype))

    def forward(self, obs: torch.Tensor, state: State = None, starts: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        B, L = _leading(obs, self.obs_ndim)
        features = self.encoder(obs.reshape(B * L, *obs.shape[2:])).reshape(B, L, -1)
        h, c = state if state is not None else self.initial_state(B, features.device)
        if h.shape != (B, self.hidden) or c.shape != (B, self.hidden):
            raise ValueError(f"LSTM state must be two [{B}, {self.hidden}] tensors, got "
                             f"{tuple(h.shape)} and {tuple(c.shape)}")
        keep = None
        if starts is not None:
            if starts.shape != (B, L):
                raise ValueError(f"starts must be [B, L] = [{B}, {L}], got {tuple(starts.shape)}")
            keep = 1.0 - starts.to(features.dtype)
        outputs, h, c = lstm_sequence(self.cell, features, h, c, keep)
        out = outputs.reshape(B * L, self.hidden)
        params, values = self.heads(out)
        return params.reshape(B, L, -1), values.reshape(B, L), (h, c)


POLICIES: dict[str, type[nn.Module]] = {"mlp": MLPPolicy, "cnn": CNNPolicy, "lstm": LSTMPolicy}


def policy_observation_space(env: Any, row_space: spaces.Space | None = None) -> spaces.Space:
    """The observation space the built-in policies are built for on vector env ``env``.

    That is the buffer-row space (``env.single_observation_space``, or ``row_space``), except
    for a Python env whose ``structured_observation_space`` is a Dict/Tuple with leaves of
    different dtypes: its rows hold raw bytes, so the policy gets the structured space and
    decodes each leaf (:func:`make_preprocessor`). Same-dtype structured rows are a Box of the
    leaves' values and bounds, read as they are.
    """
    if row_space is None:
        row_space = getattr(env, "single_observation_space", None)
    structured = getattr(env, "structured_observation_space", None)
    if not is_structured(structured):
        return row_space
    from ..emulation.spaces import observation_layout

    layout = observation_layout(structured)
    if not layout.as_bytes:
        return row_space
    row_shape = tuple(getattr(row_space, "shape", None) or ())
    if row_shape != tuple(layout.row_shape):
        raise ValueError(
            f"{getattr(env, 'name', type(env).__name__)}: structured_observation_space "
            f"{structured} is stored in byte rows of shape {layout.row_shape}, but the env's rows "
            f"are {row_space}: a wrapper changed the observations without updating "
            f"structured_observation_space; set it to the space the rows hold (or delete it)")
    return structured


def _spaces_of(env_or_spaces: Any) -> tuple[spaces.Space, spaces.Space]:
    if isinstance(env_or_spaces, (tuple, list)) and len(env_or_spaces) == 2:
        return env_or_spaces[0], env_or_spaces[1]
    for obs_attr, act_attr in (("single_observation_space", "single_action_space"),
                               ("observation_space", "action_space")):
        obs = getattr(env_or_spaces, obs_attr, None)
        act = getattr(env_or_spaces, act_attr, None)
        if obs is not None and act is not None:
            return obs, act
    raise TypeError(
        "make_policy needs a vector env (with single_observation_space/single_action_space), "
        f"a gymnasium env, or an (observation_space, action_space) pair; got {type(env_or_spaces)}"
    )


def make_policy(env_or_spaces: Any, name: str | Callable[..., nn.Module] = "mlp",
                **kwargs: Any) -> nn.Module:
    """A policy for an env's single-agent spaces.

    ``name``: ``"mlp"`` (default), ``"cnn"``, ``"lstm"`` (``encoder="cnn"`` for images), or a
    class/callable taking ``(observation_space, action_space, **kwargs)``. ``kwargs`` go to the
    policy (``hidden``, ``layers``, ``shared``, ``activation``, ``one_hot``, ...).

    For a Python env with mixed-dtype Dict/Tuple observations (byte rows) the built-in policies
    get ``env.structured_observation_space`` (see :func:`policy_observation_space`), so they
    decode each leaf instead of reading the bytes as numbers. Other callables get the row space
    (``env.single_observation_space``), as the trainer's ``policy=`` callables do; they can
    decode rows with :func:`make_preprocessor` of the structured space.
    """
    observation_space, action_space = _spaces_of(env_or_spaces)
    builtin = isinstance(name, str) or (isinstance(name, type)
                                        and issubclass(name, tuple(POLICIES.values())))
    if builtin and not isinstance(env_or_spaces, (tuple, list)):
        observation_space = policy_observation_space(env_or_spaces, observation_space)
    if callable(name) and not isinstance(name, str):
        return name(observation_space, action_space, **kwargs)
    if name not in POLICIES:
        raise ValueError(f"unknown policy {name!r}: use one of {', '.join(POLICIES)} or pass a "
                         "class taking (observation_space, action_space, **kwargs)")
    return POLICIES[name](observation_space, action_space, **kwargs)


def policy_initial_state(policy: nn.Module, batch: int, device: torch.device | str) -> State:
    """``policy.initial_state(batch, device)``, or None for policies without one."""
    fn = getattr(policy, "initial_state", None)
    return None if fn is None else fn(batch, device)


# ---------------------------------------------------------------------------------------------
# Rollout inference
# ---------------------------------------------------------------------------------------------

PRECISIONS = ("float32", "bfloat16")
# what ``train.precision`` accepts: a precision, or "auto" (resolve_precision picks one)
PRECISION_CHOICES = PRECISIONS + ("auto",)
# the x86 features that give the CPU native bfloat16 products (torch's names, /proc/cpuinfo's)
_BF16_FEATURES = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16"}


def cpu_bfloat16_units() -> list[str]:
    """The CPU's native bfloat16 units (``["AMX-BF16", "AVX512-BF16"]``, a subset, or ``[]``).

    Asks torch (``torch.cpu.get_capabilities()``, where this torch has it); else reads the
    ``flags`` of /proc/cpuinfo; ``[]`` when neither answers."""
    flags: set[str] = set()
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if callable(get_capabilities):
        caps = get_capabilities()
        flags = {name for name in _BF16_FEATURES if caps.get(name)}
    else:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                for line in f:
                    if line.startswith("flags"):
                        flags = set(line.split(":", 1)[1].split()) & set(_BF16_FEATURES)
                        break
        except OSError:
            pass
    return [label for name, label in _BF16_FEATURES.items() if name in flags]


def resolve_precision(precision: str, device: torch.device | str) -> tuple[str, str | None]:
    """``(precision to run in, note)``: ``"auto"`` becomes ``"bfloat16"`` when ``device`` is
    the CPU and the CPU has native bfloat16 units (AMX-BF16 or AVX512-BF16: without them
    bfloat16 is slower than float32), ``"float32"`` otherwise (a GPU included: bfloat16 there is
    untested). The note says what ``"auto"`` chose and why (None for an explicit precision,
    which is returned as given)."""
    if precision != "auto":
        check_precision(precision)
        return precision, None
    device = torch.device(device)
    if device.type != "cpu":
        return "float32", f"precision auto -> float32 (train.device is {device})"
    units = cpu_bfloat16_units()
    if units:
        return "bfloat16", f"precision auto -> bfloat16 (CPU has {'/'.join(units)})"
    return "float32", "precision auto -> float32 (CPU has no AMX-BF16/AVX512-BF16)"


def autocast(device: torch.device | str, precision: str = "float32"
             ) -> contextlib.AbstractContextManager:
    """The context the policy runs in for ``precision``: nothing for float32; for bfloat16,
    ``torch.autocast`` (matmuls and convolutions in bfloat16, accumulating in float32; weights
    and everything outside the policy stay float32)."""
    check_precision(precision)
    if precision == "float32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def check_precision(precision: str) -> None:
    """Raises ValueError naming the choices unless ``precision`` is one of PRECISIONS."""
    if precision == "auto":
        raise ValueError("precision 'auto' must be resolved first (resolve_precision: the "
                         "Trainer does it when it is built)")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


class Inference:
    """Rollout-time evaluation of a policy: one step for a batch of agents, no autograd.

    ``act(obs, state, starts)`` takes one step's observations ``[B, *obs_shape]`` (numpy or
    torch, any device) and ``starts`` ``[B]`` (None = no episode starts), runs the policy with
    ``L = 1`` under ``torch.inference_mode`` and returns ``(actions [B, *action_shape],
    logprobs [B], values [B], new_state)``. ``actions`` are what the log-probabilities score
    (raw Gaussian samples for Box); :meth:`env_actions` converts them for ``env.send``.

    Observations and starts are copied into staging tensors on ``device`` that are reused
    across calls of the same batch size. Returned tensors are inference tensors: copy them
    into storage (``buf[...] = x``) or ``.clone()`` them before using them in autograd.
    This class is the seam where a C implementation of inference can be swapped in.
    """

    def __init__(self, policy: nn.Module, action_space: spaces.Space | None = None,
                 device: torch.device | str | None = None, deterministic: bool = False,
                 generator: torch.Generator | None = None, precision: str = "float32"):
        self.policy = policy
        self.precision = precision
        check_precision(precision)
        distribution = getattr(policy, "distribution", None)
        if not isinstance(distribution, ActionDistribution):
            if action_space is None:
                raise ValueError("the policy has no `distribution` attribute: pass action_space "
                                 "(the env's single_action_space) to Inference")
            distribution = make_distribution(action_space)
        self.distribution = distribution
        if device is None:
            first = next(iter(policy.parameters()), None)
            device = first.device if first is not None else "cpu"
        self.device = torch.device(device)
        self.deterministic = deterministic
        self.generator = generator
        self._staging: dict[tuple, torch.Tensor] = {}
        self._checked = False

    def initial_state(self, batch: int) -> State:
        """The policy's initial state for ``batch`` agents on this device."""
        return policy_initial_state(self.policy, batch, self.device)

    def _stage(self, key: str, x: Any, dtype: torch.dtype | None = None) -> torch.Tensor:
        """``x`` as a tensor on the device, via a reused staging buffer when it must be copied."""
        if isinstance(x, torch.Tensor):
            if x.device == self.device and (dtype is None or x.dtype == dtype):
                return x
            src = x
        else:
            src = torch.from_numpy(np.ascontiguousarray(x))
        want = dtype or src.dtype
        k = (key, tuple(src.shape), want)
        buf = self._staging.get(k)
        if buf is None:
            buf = torch.empty(src.shape, dtype=want, device=self.device)
            self._staging[k] = buf
        buf.copy_(src)
        return buf

    def act(self, obs: Any, state: State = None, starts: Any = None, uniforms: Any = None,
            action_masks: Any = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, State]:
        """One rollout step; see the class docstring. ``uniforms`` ``[B, num_params]``: sample
        from these (each row's draws from its own stream, :mod:`shoal.trainer.fused_rollout`)
        instead of the generator. ``action_masks`` (bool ``[B, num_params]``, None = all valid):
        invalid actions are never taken (:mod:`shoal.trainer.action_masks`)."""
        with torch.inference_mode():
            obs_t = self._stage("obs", obs)
            B = obs_t.shape[0]
            starts_t = None if starts is None else self._stage("starts", starts, torch.float32)
            if starts_t is not None and starts_t.shape != (B,):
                raise ValueError(f"starts must be [B] = [{B}], got {tuple(starts_t.shape)}")
            with autocast(self.device, self.precision):
                params, values, new_state = self.policy(
                    obs_t.unsqueeze(1), state,
                    None if starts_t is None else starts_t.unsqueeze(1))
            if not self._checked:
                self._check_outputs(params, values, B)
            params = params.reshape(B, -1).float()
            if action_masks is not None:
                from .action_masks import mask_logits

                params = mask_logits(params, self._stage("action_masks", action_masks),
                                     self.distribution.nvec)
            values = values.reshape(B).float()
            if new_state is not None and state is not None:
                # autocast may hand back a lower-precision state; keep the caller's dtype
                new_state = tuple(n.to(s.dtype) for n, s in zip(new_state, state))
            if self.deterministic:
                actions = self.distribution.mode(params)
                logprobs = self.distribution.log_prob(params, actions)
            elif uniforms is not None:
                from ..net.runtime import sample_from_uniforms

                actions, logprobs = sample_from_uniforms(self.distribution, params, uniforms)
            else:
                actions, logprobs = self.distribution.sample_with_log_prob(params, self.generator)
        return actions, logprobs, values, new_state

    def _check_outputs(self, params: torch.Tensor, values: torch.Tensor, B: int) -> None:
        n = self.distribution.num_params
        if tuple(params.shape) != (B, 1, n):
            raise ValueError(
                f"the policy returned action_params of shape {tuple(params.shape)}; expected "
                f"[B, L, num_params] = [{B}, 1, {n}] for {self.distribution.space}"
            )
        if values.numel() != B:
            raise ValueError(f"the policy returned values of shape {tuple(values.shape)}; "
                             f"expected [B, L] = [{B}, 1]")
        self._checked = True

    def env_actions(self, actions: torch.Tensor, out: np.ndarray | None = None) -> np.ndarray:
        """``actions`` as a numpy array for ``env.send``: int32 for discrete spaces, float32
        clipped to the Box bounds for continuous ones. Writes into ``out`` when given."""
        with torch.inference_mode():
            converted = self.distribution.to_env(actions)
            if converted.device.type != "cpu":
                converted = converted.cpu()
            array = converted.numpy()
        if out is None:
            return array
        np.copyto(out, array.reshape(out.shape), casting="unsafe")
        return out
