"""Export a trained torch policy to the flat weight blob that ``shoal/net/shoal_net.h`` reads.

The blob is little-endian 32-bit words: an int32 header describing the architecture, then the
float32 weights in a fixed order (docs/net.md lists both word by word). Weight matrices are
stored transposed (``[in][out]``) and convolution kernels as ``[ky][kx][in_c][out_c]``, the
orders the C loops read contiguously; the CNN projection's input rows are reordered from
torch's channels-first flattening to the channels-last maps the C code keeps.

Exportable: :class:`~shoal.trainer.policies.MLPPolicy` (shared or separate critic trunk),
:class:`~shoal.trainer.policies.CNNPolicy` and :class:`~shoal.trainer.policies.LSTMPolicy`
(MLP or CNN encoder), with gelu (exact), relu, tanh or silu, Box/Discrete observations
(scaled or one-hot; scaled ones optionally through the running normalisation of
:mod:`shoal.trainer.obs_norm`, written as a preprocessing stage), and Discrete, MultiDiscrete or
Box actions. Blobs are written in layout version 2; :func:`read_header` (and the C loader) also
read version 1, the layout before the normalisation stage. Anything else (a custom
module, a structured Dict/Tuple observation preprocessor) is refused with a ValueError naming
the part.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from ..trainer.obs_norm import ObservationNormalizer
from ..trainer.policies import (ActorCriticHeads, CNNEncoder, CNNPolicy, LSTMPolicy,
                                MLPEncoder, MLPPolicy, ObservationPreprocessor)

__all__ = ["export_policy", "export_checkpoint", "policy_from_checkpoint", "read_header",
           "write_blob", "MAGIC", "VERSION", "OBS_DTYPES", "ACTIVATIONS", "HEADER_FIELDS"]

MAGIC = 0x544E4853          # "SHNT" as a little-endian uint32
VERSION = 2                 # 2: the observation normalisation stage (header word 23)

#: observation dtype codes (header word 9)
OBS_DTYPES = {"float32": 0, "float64": 1, "uint8": 2, "int8": 3, "uint16": 4, "int16": 5,
              "uint32": 6, "int32": 7, "int64": 8}
#: activation codes (header word 7)
ACTIVATIONS = {nn.GELU: 0, nn.ReLU: 1, nn.Tanh: 2, nn.SiLU: 3}
HEADS = {"discrete": 0, "multidiscrete": 1, "box": 2}

#: the 24 fixed header words, in order (the Discrete/MultiDiscrete action sizes follow);
#: layout version 1 had the first 23 (no ``obs_norm``)
HEADER_FIELDS = ("magic", "version", "header_words", "num_floats", "encoder", "lstm", "shared",
                 "activation", "hidden", "obs_dtype", "obs_ndim", "obs_shape0", "obs_shape1",
                 "obs_shape2", "levels", "obs_offset", "mlp_layers", "channels", "strided",
                 "head", "num_params", "action_dims", "action_offset", "obs_norm")


#: the modules of shoal's built-in policies, each computed in C as its own forward computes it
#: (a subclass may add methods, but one that overrides forward would act differently in C)
_MODULES_RUN_IN_C: tuple[type, ...] = (
    MLPPolicy, CNNPolicy, LSTMPolicy, MLPEncoder, CNNEncoder, ObservationPreprocessor,
    ObservationNormalizer, ActorCriticHeads, nn.Sequential, nn.Linear, nn.Conv2d, nn.LSTMCell,
    *ACTIVATIONS)


def _check_modules(policy: nn.Module) -> None:
    """ValueError naming the first part of ``policy`` that the C policy would not compute as
    torch does: a module of another kind, a subclass of a built-in one that overrides its
    ``forward`` (or a policy's ``initial_state``), or a ``forward`` set on the instance.
    Forward hooks are not checked: the C policy runs none, and hooks that only observe (logging,
    profiling, the tests' thread probes) are legitimate; one that changes a module's inputs or
    outputs makes the C policy act differently from torch."""
    for name, module in policy.named_modules():
        kind, where = type(module), name or "the policy"
        base = next((b for b in _MODULES_RUN_IN_C if isinstance(module, b)), None)
        if base is None:
            raise ValueError(f"{where} is a {kind.__name__}, which the C policy cannot run (it "
                             f"runs shoal's MLPPolicy, CNNPolicy and LSTMPolicy as built): train "
                             f"this policy with the torch rollout")
        for method in ("forward", "initial_state"):
            on_instance = method in vars(module)     # e.g. module.forward = some_function
            if on_instance or getattr(kind, method, None) is not getattr(base, method, None):
                how = " (set on this instance)" if on_instance else ""
                raise ValueError(f"{where}: {kind.__name__} overrides {base.__name__}.{method}"
                                 f"{how}, which the C policy computes as {base.__name__} does: "
                                 f"train this policy with the torch rollout")


def _obs_dtype_code(dtype: Any) -> int:
    dt = np.dtype(dtype)
    if dt == np.bool_:
        dt = np.dtype(np.uint8)
    if dt.name not in OBS_DTYPES:
        raise ValueError(f"observation dtype {dt} is not supported by the C policy: use one of "
                         f"{', '.join(OBS_DTYPES)}")
    return OBS_DTYPES[dt.name]


def _activation_code(modules: list[nn.Module], where: str) -> int:
    codes = set()
    for m in modules:
        kind = type(m)
        if kind not in ACTIVATIONS:
            raise ValueError(f"{where}: activation {kind.__name__} is not supported by the C "
                             f"policy (gelu, relu, tanh, silu)")
        if isinstance(m, nn.GELU) and m.approximate != "none":
            raise ValueError(f"{where}: GELU(approximate={m.approximate!r}) is not supported; "
                             f"the C policy computes the exact (erf) GELU")
        codes.add(ACTIVATIONS[kind])
    if len(codes) > 1:
        raise ValueError(f"{where}: mixed activations are not supported by the C policy")
    return codes.pop() if codes else 0


def _f32(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float32).contiguous().numpy().ravel()


def _linear_t(layer: nn.Linear) -> list[np.ndarray]:
    """Weight as [in][out] (transposed) and bias."""
    if not isinstance(layer, nn.Linear) or layer.bias is None:
        raise ValueError(f"expected nn.Linear with a bias, got {layer}")
    return [_f32(layer.weight.t()), _f32(layer.bias)]


def _split_sequential(seq: nn.Sequential, layer_type: type, where: str
                      ) -> tuple[list[nn.Module], list[nn.Module]]:
    layers = list(seq)
    if len(layers) % 2 != 0:
        raise ValueError(f"{where}: expected alternating layers and activations")
    weights, acts = layers[0::2], layers[1::2]
    for w in weights:
        if not isinstance(w, layer_type):
            raise ValueError(f"{where}: expected {layer_type.__name__}, got {type(w).__name__}")
    return weights, acts


def _preprocessor_fields(pre: nn.Module) -> tuple[list[int], int, int, list[np.ndarray]]:
    """(obs_shape as 3 words + ndim, levels, offset, floats)."""
    if not isinstance(pre, ObservationPreprocessor):
        raise ValueError(
            f"the observation preprocessor {type(pre).__name__} (structured Dict/Tuple "
            f"observations) is not supported by the C policy: export a policy of a Box or "
            f"Discrete observation space")
    shape = list(pre.obs_shape)
    if len(shape) > 3:
        raise ValueError(f"observations of rank {len(shape)} are not supported (at most 3)")
    floats = [] if pre.levels else [np.broadcast_to(_f32(pre.scale).reshape(-1) if pre.scale.dim()
                                                    else _f32(pre.scale), (max(1, int(np.prod(shape))),)
                                                    ).astype(np.float32)]
    return shape, int(pre.levels), int(pre._offset), floats + _normalizer_floats(pre)


def _normalizer_floats(pre: ObservationPreprocessor) -> list[np.ndarray]:
    """The observation normalisation stage (``train.norm_obs``): ``mean [E]``, ``inv_std [E]``,
    ``clip [1]``, the float32 terms the torch normaliser itself computes with; empty without
    one."""
    norm = getattr(pre, "obs_norm", None)
    if norm is None:
        return []
    if not isinstance(norm, ObservationNormalizer) or pre.levels:
        raise ValueError(f"the observation normaliser {type(norm).__name__} is not supported by "
                         f"the C policy (only shoal.trainer.obs_norm.ObservationNormalizer on "
                         f"observations read as numbers)")
    mean, inv_std = norm.affine(torch.float32)
    return [_f32(mean.reshape(-1)), _f32(inv_std.reshape(-1)),
            np.array([float(norm.clip)], dtype=np.float32)]


def _mlp_floats(enc: MLPEncoder, where: str) -> tuple[list[np.ndarray], int, int]:
    weights, acts = _split_sequential(enc.net, nn.Linear, where)
    out: list[np.ndarray] = []
    for w in weights:
        out += _linear_t(w)
    return out, len(weights), _activation_code(acts, where)


def _cnn_floats(enc: CNNEncoder) -> tuple[list[np.ndarray], int, int, int]:
    convs, acts = _split_sequential(enc.conv, nn.Conv2d, "CNN encoder")
    strided = 0
    out: list[np.ndarray] = []
    channels = convs[0].out_channels
    for i, conv in enumerate(convs):
        if (conv.kernel_size != (3, 3) or conv.padding != (1, 1) or conv.dilation != (1, 1)
                or conv.groups != 1 or conv.bias is None or conv.out_channels != channels):
            raise ValueError(f"CNN encoder: convolution {i} ({conv}) is not the 3x3, padding 1 "
                             f"layout the C policy runs")
        if conv.stride == (2, 2):
            if strided != i:
                raise ValueError("CNN encoder: strided convolutions must come first")
            strided += 1
        elif conv.stride != (1, 1):
            raise ValueError(f"CNN encoder: stride {conv.stride} is not supported")
        # torch [out, in, ky, kx] -> [ky, kx, in, out]
        out += [_f32(conv.weight.permute(2, 3, 1, 0)), _f32(conv.bias)]
    if len(convs) != strided + 2:
        raise ValueError("CNN encoder: expected strided convolutions followed by exactly two "
                         "stride-1 convolutions")
    project, project_act = enc.project[0], enc.project[1]
    act = _activation_code(list(acts) + [project_act], "CNN encoder")
    h, w = enc.height, enc.width
    for _ in range(strided):
        h, w = (h + 1) // 2, (w + 1) // 2
    c = channels
    weight = project.weight.detach()                    # [hidden, c*h*w], flattened as (c, y, x)
    hwc = weight.reshape(-1, c, h, w).permute(0, 2, 3, 1).reshape(weight.shape[0], -1)
    out += [_f32(hwc.t()), _f32(project.bias)]
    return out, strided, channels, act


def export_policy(policy: nn.Module, obs_dtype: Any = None) -> bytes:
    """The blob for ``policy`` (see the module docstring for what can be exported).

    ``obs_dtype``: the dtype of the observation rows the C policy will read (the env's
    ``observations.dtype``); default: the observation space's dtype.
    """
    if not isinstance(policy, (MLPPolicy, CNNPolicy, LSTMPolicy)):
        raise ValueError(f"{type(policy).__name__} cannot be exported to C: only shoal's "
                         f"MLPPolicy, CNNPolicy and LSTMPolicy can")
    _check_modules(policy)
    encoder = policy.encoder
    floats: list[np.ndarray] = []
    lstm = isinstance(policy, LSTMPolicy)
    shared = 1
    mlp_layers = channels = strided = 0
    if isinstance(encoder, MLPEncoder):
        kind = 0
        shape, levels, offset, pre = _preprocessor_fields(encoder.preprocess)
        floats += pre
        enc_floats, mlp_layers, act = _mlp_floats(encoder, "MLP encoder")
        floats += enc_floats
        critic = getattr(policy, "critic_encoder", None)
        if critic is not None:
            shared = 0
            critic_floats, critic_layers, critic_act = _mlp_floats(critic, "critic encoder")
            if critic_layers != mlp_layers or critic_act != act:
                raise ValueError("the critic encoder must match the actor encoder's layout")
            floats += critic_floats
    elif isinstance(encoder, CNNEncoder):
        kind = 1
        shape, levels, offset, pre = _preprocessor_fields(encoder.preprocess)
        floats += pre
        enc_floats, strided, channels, act = _cnn_floats(encoder)
        floats += enc_floats
    else:
        raise ValueError(f"the encoder {type(encoder).__name__} cannot be exported to C: use "
                         f"encoder='mlp' or 'cnn'")
    hidden = int(policy.heads.actor.in_features)
    if lstm:
        cell = policy.cell
        if cell.bias_ih is None:
            raise ValueError("an LSTM cell without biases cannot be exported")
        floats += [_f32(cell.weight_ih.t()), _f32(cell.weight_hh.t()), _f32(cell.bias_ih),
                   _f32(cell.bias_hh)]
    dist = policy.distribution
    floats += _linear_t(policy.heads.actor)
    if dist.kind == "box":
        # the env's bounds (may be infinite), for shoal_net_clip_actions
        bounds = (dist._low.numpy().astype(np.float32), dist._high.numpy().astype(np.float32))
        floats += [_f32(policy.heads.log_std), *bounds]
        nvec: list[int] = []
        action_dims, action_offset = dist.action_dim, 0
    else:
        bounds = ()
        nvec = list(dist.nvec)
        action_dims = len(nvec)
        action_offset = int(getattr(dist, "_offset", 0)) if dist.kind == "discrete" else 0
    floats += [_f32(policy.heads.critic.weight.reshape(-1)), _f32(policy.heads.critic.bias)]
    if obs_dtype is None:
        space = encoder.preprocess.space
        obs_dtype = np.int64 if isinstance(space, spaces.Discrete) else space.dtype
    for i, part in enumerate(floats):
        if not np.isfinite(part).all() and not (dist.kind == "box" and any(
                part is bound for bound in bounds)):
            raise ValueError("the policy has a NaN or infinite weight: the run diverged; export "
                             "an earlier checkpoint")
    weights = np.concatenate(floats).astype("<f4")
    obs_norm = int(getattr(encoder.preprocess, "obs_norm", None) is not None)
    obs_shape = shape + [1] * (3 - len(shape))
    header = [MAGIC, VERSION, len(HEADER_FIELDS) + len(nvec), len(weights), kind, int(lstm),
              shared, act, hidden, _obs_dtype_code(obs_dtype), len(shape), *obs_shape, levels,
              offset, mlp_layers, channels, strided, HEADS[dist.kind], int(dist.num_params),
              action_dims, action_offset, obs_norm, *nvec]
    head = np.array(header, dtype="<i8")
    if (head < -2**31).any() or (head >= 2**32).any():
        raise ValueError("a header value does not fit in 32 bits")
    words = np.array([int(v) & 0xFFFFFFFF for v in header], dtype="<u4")
    return words.tobytes() + weights.tobytes()


def read_header(blob: bytes) -> dict[str, Any]:
    """The header fields of a blob as a dict (``nvec`` added for discrete heads; ``obs_norm``
    is 0 for a layout version 1 blob, which has no such word); checks only that the header
    itself is readable (the C loader checks the rest)."""
    fixed = len(HEADER_FIELDS) - 1          # version 1's fixed words
    if len(blob) < 4 * fixed:
        raise ValueError(f"{len(blob)} bytes is too short for a shoal net blob")
    if struct.unpack_from("<I", blob, 0)[0] != MAGIC:
        raise ValueError("not a shoal net blob (wrong magic number)")
    if struct.unpack_from("<i", blob, 4)[0] != 1:
        fixed = len(HEADER_FIELDS)
        if len(blob) < 4 * fixed:
            raise ValueError(f"{len(blob)} bytes is too short for a shoal net blob")
    words = struct.unpack_from(f"<{fixed}i", blob, 0)
    fields = dict(zip(HEADER_FIELDS, words))
    fields["magic"] &= 0xFFFFFFFF
    fields.setdefault("obs_norm", 0)
    extra = fields["header_words"] - fixed
    if 0 < extra <= (len(blob) // 4) - fixed:
        fields["nvec"] = list(struct.unpack_from(f"<{extra}i", blob, 4 * fixed))
    return fields


def write_blob(blob: bytes, path: str) -> str:
    """Writes ``blob`` to ``path`` (atomically); returns the path."""
    from ..trainer.checkpoint import atomic_write_bytes

    atomic_write_bytes(path, lambda f: f.write(blob))
    return path


def policy_from_checkpoint(path: str) -> tuple[nn.Module, np.dtype]:
    """The policy of a checkpoint (a ``.pt`` file or a run directory: its newest checkpoint)
    with its trained weights, and the dtype of its env's observation rows. Builds one copy of
    the env (from the checkpoint's config) to learn its spaces."""
    from ..trainer.checkpoint import load_checkpoint
    from ..trainer.config import apply_mapping, default_config
    from ..trainer.obs_norm import attach_for_state_dict
    from ..trainer.policies import make_policy
    from ..vector import make as make_env

    ckpt = load_checkpoint(path)
    cfg = default_config()
    apply_mapping(cfg, dict(ckpt["config"]), f"{ckpt['path']} config")
    kwargs = cfg.make_env_kwargs()
    kwargs.update(num_envs=1, backend="serial", num_buffers=1)
    kwargs.pop("num_workers", None)
    env = make_env(cfg.env.name, **kwargs)
    try:
        policy = make_policy(env, cfg.policy.name, hidden=cfg.policy.hidden)
        obs_dtype = env.observations.dtype
    finally:
        env.close()
    attach_for_state_dict(policy, ckpt["model"])       # a train.norm_obs run's statistics
    policy.load_state_dict(ckpt["model"])
    return policy, obs_dtype


def export_checkpoint(path: str, out: str | None = None) -> bytes:
    """The blob of a checkpoint's policy (see :func:`policy_from_checkpoint`); written to
    ``out`` too when given."""
    policy, obs_dtype = policy_from_checkpoint(path)
    blob = export_policy(policy, obs_dtype)
    if out is not None:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        write_blob(blob, out)
    return blob
