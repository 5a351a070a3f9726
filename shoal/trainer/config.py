"""The trainer's configuration: typed sections with defaults, TOML files and override parsing.

A :class:`Config` has four sections, each a dataclass: ``env`` (:class:`EnvConfig`), ``train``
(:class:`TrainConfig`), ``policy`` (:class:`PolicyConfig`) and ``log`` (:class:`LogConfig`).
Every key has a type, a default and a one-line meaning (the field's ``help`` metadata), which
``shoal train --help`` prints.

Where values come from, later ones winning:

1. the dataclass defaults (``configs/default.toml`` holds the same values, for reading);
2. ``configs/<env>.toml`` shipped in the package (per-env tuning, e.g. breakout's num_envs);
3. a user's TOML file (``--config FILE.toml`` / ``config=`` in :func:`shoal.train`);
4. single overrides (``--train.learning-rate 0.01`` / ``train_learning_rate=0.01``).

The env's own parameters (a maze's size, ...) live in the ``[env]`` table next to the generic
keys and are checked against the env's spec; an unknown key anywhere is an error naming the
closest known keys.

Python envs (``gym:ID``, ``pz:MODULE.ENV``; see :mod:`shoal.emulation`) have no spec: any other
key of their ``[env]`` table is a keyword argument of ``gymnasium.make`` / the PettingZoo creator
(``--env.max-episode-steps 200``). On the command line such a value is read as an integer, a
float or true/false when it looks like one, else as a string; a TOML file keeps its exact types.
Their name is checked when the config is built (the id is registered, the module imports); the
keyword arguments when the env is made.

:func:`build_config` builds the config of an env named by the config; :func:`config_for_env` the
config of an env object built beforehand (``shoal.train(env_object)``), whose env keys describe
that object.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import os
import tomllib
from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = [
    "Config", "ConfigError", "EnvConfig", "LogConfig", "PolicyConfig", "TrainConfig",
    "SECTIONS", "build_config", "config_file_path", "config_for_env", "default_config",
    "env_defaults_path",
    "load_toml", "shipped_config_names", "to_toml",
]

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")


class ConfigError(ValueError):
    """A bad key or value in a config; the message names the problem and the fix."""


def _f(default: Any, help: str, choices: tuple[Any, ...] | None = None, low: float | None = None,
       high: float | None = None, above: float | None = None) -> Any:
    """A dataclass field carrying its meaning and allowed values for --help and validation
    (``low``/``high``: inclusive bounds; ``above``: an exclusive lower bound)."""
    meta = {"help": help, "choices": choices, "low": low, "high": high, "above": above}
    return field(default=default, metadata=meta)


# the most threads any thread-count setting may ask for: far above any machine's cores, and
# below what breaks a library (torch.set_num_threads(100000) then segfaults in the first
# parallel product)
MAX_THREADS = 1024


@dataclass
class EnvConfig:
    """Which env to train on and how to vectorise it; the env's own parameters sit here too."""

    name: str = _f("", "env to train on: a registered env (`shoal envs` lists them), gym:ID "
                       "or pz:MODULE.ENV")
    num_envs: int = _f(256, "env copies stepped together; batch = num_envs x agents x horizon",
                       low=1)
    backend: str = _f("serial", "vectorisation backend",
                      choices=("serial", "threads", "processes"))
    num_workers: int = _f(0, "worker threads/processes for the backend (0 = one per core the "
                             "process may use)", low=0, high=MAX_THREADS)
    num_buffers: int = _f(1, "env groups for double buffering (2 = step one while acting on "
                             "the other)", low=1, high=16)
    seed: int = _f(-1, "seed of the envs (-1 = use train.seed)", low=-1)
    params: dict[str, Any] = field(default_factory=dict,
                                   metadata={"help": "the env's own parameters"})


@dataclass
class TrainConfig:
    """PPO with V-trace-style advantages, prioritised segment sampling and cosine LR decay."""

    total_steps: int = _f(10_000_000, "agent steps to train for (all agents summed)", low=1)
    horizon: int = _f(64, "segment length T: steps per agent per epoch, and the BPTT length",
                      low=1)
    batch_size: int = _f(0, "steps per epoch; 0 = num_envs x agents x horizon (if set it must "
                            "equal that)", low=0)
    minibatch_size: int = _f(4096, "steps per gradient step (a multiple of horizon; capped "
                                    "at the batch)", low=1)
    update_epochs: int = _f(4, "passes over each batch", low=1)
    minibatches: str = _f("draws", "passes: each pass a random permutation of the batch's "
                                    "segments, every segment used once; draws: independent "
                                    "prioritised draws (prio_alpha); ranges: each pass the "
                                    "segments in storage order, minibatch k the k-th run of "
                                    "minibatch_size/horizon rows (what train.pipeline trains "
                                    "on as it is collected)",
                          choices=("passes", "draws", "ranges"))
    target_kl: float = _f(0.0, "stop an update's remaining minibatches once a minibatch's "
                               "approx KL to the rollout policy exceeds this (0 = off)", low=0.0)
    norm_reward: bool = _f(True, "scale rewards by the running root mean square of the "
                                 "discounted return (statistics kept in checkpoints)")
    norm_obs: bool = _f(False, "normalise each observation element by its running mean and "
                               "std, clipped to +-norm_obs_clip (part of the policy: kept in "
                               "checkpoints, applied by eval, watch and export)")
    norm_obs_clip: float = _f(10.0, "clip of the normalised observations (train.norm_obs)",
                              above=0.0)
    learning_rate: float = _f(0.003, "peak learning rate", low=0.0)
    anneal_lr: bool = _f(True, "cosine-decay the learning rate to 0 over total_steps")
    schedule_steps: int = _f(0, "agent steps the schedules (the learning-rate cosine, prio "
                                "beta's rise to 1) span; 0 = total_steps. Longer than "
                                "total_steps: the run stops part-way along them", low=0)
    gamma: float = _f(0.99, "discount factor", low=0.0, high=1.0)
    gae_lambda: float = _f(0.95, "GAE lambda", low=0.0, high=1.0)
    rho_clip: float = _f(1.0, "V-trace clip of the importance ratio in the TD term (rho bar)",
                         low=0.0)
    c_clip: float = _f(1.0, "V-trace clip of the importance ratio in the trace (c bar)", low=0.0)
    clip_coef: float = _f(0.2, "PPO policy ratio clip", low=0.0)
    vf_clip_coef: float = _f(0.2, "value clip around the rollout value (0 = no clipping)",
                             low=0.0)
    vf_coef: float = _f(0.5, "weight of the value loss", low=0.0)
    ent_coef: float = _f(0.01, "weight of the entropy bonus", low=0.0)
    max_grad_norm: float = _f(1.0, "clip the global gradient norm to this (0 = no clipping)",
                              low=0.0)
    norm_adv: bool = _f(True, "normalise advantages within each minibatch")
    optimizer: str = _f("adam", "adam, or muon (Muon for 2-D weight matrices, Adam for the rest)",
                        choices=("adam", "muon"))
    adam_beta1: float = _f(0.9, "Adam beta1", low=0.0, high=1.0)
    adam_beta2: float = _f(0.999, "Adam beta2", low=0.0, high=1.0)
    adam_eps: float = _f(1e-8, "Adam epsilon", low=0.0)
    muon_momentum: float = _f(0.95, "Muon momentum", low=0.0, high=1.0)
    weight_decay: float = _f(0.0, "decoupled weight decay of Muon's matrices", low=0.0)
    prio_alpha: float = _f(0.0, "prioritised sampling exponent: priority = (sum |A|)^alpha "
                                "(0 = uniform)", low=0.0)
    prio_beta0: float = _f(0.4, "initial importance-weight exponent, annealed linearly to 1",
                           low=0.0, high=1.0)
    device: str = _f("auto", "torch device: cpu, cuda, cuda:N or auto (cuda if available; the "
                             "CPU with the fused rollout, which runs there)")
    seed: int = _f(0, "seed of torch, the sampler and (by default) the envs", low=0)
    torch_threads: int = _f(0, "torch CPU threads (0 = torch's default)", low=0,
                            high=MAX_THREADS)
    compile: bool = _f(False, "torch.compile the policy for training (slow to start)")
    rollout: str = _f("torch", "rollout path: torch (the policy in torch, any env), or fused "
                               "(C envs: env steps and the C policy, shoal_net.h, run a whole "
                               "segment in one C call, no Python per step; docs/net.md)",
                      choices=("torch", "fused"))
    rollout_threads: int = _f(0, "threads of the fused rollout (0 = one per CPU core, or with "
                                 "overlap the cores the learner's threads leave)", low=0,
                             high=MAX_THREADS)
    learner_threads: int = _f(1, "threads the update splits each minibatch over (fixed "
                                 "shards, summed in order: deterministic; meant for "
                                 "torch_threads = 1, docs/train.md)", low=1,
                             high=MAX_THREADS)
    overlap: bool = _f(False, "fused rollout only: collect the next batch while the learner "
                              "trains on this one (acting policy one update behind, the update "
                              "anchored at the learner's policy with the collector's actions "
                              "importance-weighted, docs/train.md; deterministic)")
    pipeline: bool = _f(False, "the synchronous fused rollout: the learner trains on each "
                                "minibatch's envs as soon as they are collected, while the "
                                "rollout thread collects the others with the same weights "
                                "(synchronous PPO, nothing stale, two cores busy; the same "
                                "run, faster; applies with rollout = fused, overlap = false, "
                                "minibatches = ranges, norm_reward = false, and the run says "
                                "so where it does not; docs/train.md)")
    overlap_chunks: int = _f(1, "overlap: collect the next batch in this many chunks of steps, "
                                "chunk j acted by the learner's weights after j/chunks of the "
                                "update's gradient steps (1 = the weights from the update's "
                                "start throughout; fresher data but no faster per step on "
                                "breakout; feedforward policies only, docs/train.md)", low=1)
    overlap_tail_threads: int = _f(0, "overlap or pipeline: torch threads of the update's "
                                      "gradient steps from overlap_tail_start on, once the "
                                      "rollout thread has finished its epoch (0 or 1 = off; "
                                      "applies with learner_threads = 1; deterministic: "
                                      "overlap_tail_when, docs/train.md)", low=0,
                                  high=MAX_THREADS)
    overlap_tail_start: float = _f(0.75, "overlap_tail_threads: the fraction of the update's "
                                         "gradient steps run before the switch (the learner "
                                         "waits there for the rollout thread)", low=0.0, high=1.0)
    overlap_tail_when: str = _f("free_core", "overlap_tail_threads: in which updates: "
                                             "free_core (where the rollout thread had its core "
                                             "to itself that epoch, and only where the step "
                                             "computes the same bits on those threads as on "
                                             "one, so the numbers never depend on load) or "
                                             "always (every update, by the schedule; another "
                                             "process on the cores slows each tail step)",
                                choices=("free_core", "always"))
    overlap_weight_cap: float = _f(2.0, "overlap: truncation of the importance weight "
                                        "pi_learner / pi_collector of each step's policy term "
                                        "(1 keeps the policy's entropy at the synchronous "
                                        "level on breakout, docs/train.md)", above=0.0)
    overlap_advantages: str = _f("learner", "overlap: the ratios in the stale batch's V-trace "
                                            "advantages: learner (pi_current / pi_learner, as "
                                            "if the learner had acted), collector (pi_current / "
                                            "pi_collector in every step: IMPALA's correction), "
                                            "or collector_later (the value targets of collector; "
                                            "the policy term's advantage corrects only the "
                                            "steps after its own; docs/train.md)",
                                 choices=("learner", "collector", "collector_later"))
    overlap_weight_norm: bool = _f(False, "overlap: divide the stale batch's truncated "
                                          "importance weights by their mean over the "
                                          "minibatch's steps (they re-weight the steps but do "
                                          "not shrink the policy term against the entropy and "
                                          "value terms; one process, learner_threads = 1; "
                                          "docs/train.md)")
    loss_head: str = _f("auto", "the PPO loss from the logits and values on: auto (one C pass "
                                "with its gradient for Discrete and even MultiDiscrete actions "
                                "on the CPU, torch ops otherwise) or torch (always torch ops; "
                                "shoal/trainer/loss_head.py)", choices=("auto", "torch"))
    action_rng: str = _f("torch", "rollout action sampling: torch (torch's generator), or agent "
                                  "(one stream per agent, as the fused rollout draws: the torch "
                                  "rollout then takes the fused one's actions)",
                         choices=("torch", "agent"))
    action_masks: str = _f("auto", "invalid-action masks: auto (use the env's action masks when "
                                   "it provides them: invalid actions are never sampled and the "
                                   "loss scores the masked distribution), on (require them), off "
                                   "(ignore them)", choices=("auto", "on", "off"))
    precision: str = _f("float32", "policy matmul precision: float32, or bfloat16 (autocast "
                                   "for rollout inference and the training forward/backward, "
                                   "the LSTM through its fused bfloat16 path on the CPU; "
                                   "weights, optimizer, advantages and losses stay float32; "
                                   "the fused rollout's C policy acts in float32 either way), "
                                   "or auto (bfloat16 when training on a CPU with AMX-BF16 or "
                                   "AVX512-BF16, else float32; the run records its choice)",
                        choices=("float32", "bfloat16", "auto"))


@dataclass
class PolicyConfig:
    """The network: ``name`` picks one of shoal's policies (a custom nn.Module can be passed in
    Python instead, see examples/custom_policy.py)."""

    name: str = _f("mlp", "policy architecture", choices=("mlp", "lstm", "cnn"))
    hidden: int = _f(128, "hidden width", low=1)


@dataclass
class LogConfig:
    """Where runs are written and what is shown."""

    run_dir: str = _f("", "run directory ('' = runs/<env>-<timestamp> under the current "
                          "directory)")
    checkpoint_interval: int = _f(50, "epochs between checkpoints (one is always written at "
                                      "the end)", low=1)
    keep_checkpoints: int = _f(3, "most recent checkpoints kept in the run directory", low=1)
    dashboard: str = _f("auto", "terminal output: auto (rich when stdout is a terminal), rich, "
                                "plain, or off", choices=("auto", "rich", "plain", "off"))
    print_interval: float = _f(5.0, "seconds between plain-text progress lines", low=0.0)
    tensorboard: bool = _f(False, "also write TensorBoard event files (needs tensorboard)")
    wandb: bool = _f(False, "also log to Weights & Biases (needs wandb)")
    wandb_project: str = _f("shoal", "W&B project name")
    video: bool = _f(False, "record a GIF of the policy at each checkpoint into videos/ "
                            "(needs imageio and Pillow: pip install 'shoal[tools]')")
    video_steps: int = _f(300, "steps of env 0 in each checkpoint's GIF", low=1)


SECTIONS: dict[str, type] = {
    "env": EnvConfig, "train": TrainConfig, "policy": PolicyConfig, "log": LogConfig,
}


@dataclass
class Config:
    """A complete trainer configuration."""

    env: EnvConfig = field(default_factory=EnvConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    log: LogConfig = field(default_factory=LogConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested plain dict; env parameters sit in ``env`` next to the generic keys."""
        out: dict[str, dict[str, Any]] = {}
        for section in SECTIONS:
            values = dataclasses.asdict(getattr(self, section))
            if section == "env":
                params = values.pop("params")
                values.update(params)
            out[section] = values
        return out

    def env_seed(self) -> int:
        """The seed the envs use."""
        return self.train.seed if self.env.seed < 0 else self.env.seed

    def make_env_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`shoal.make` for this config."""
        e = self.env
        kwargs: dict[str, Any] = dict(num_envs=e.num_envs, seed=self.env_seed(),
                                      backend=e.backend, num_buffers=e.num_buffers, **e.params)
        if e.num_workers > 0:
            kwargs["num_workers"] = e.num_workers
        return kwargs


# ---- key metadata ----

def section_fields(section: str) -> dict[str, dataclasses.Field]:
    """The typed keys of a section (env's ``params`` excluded)."""
    return {f.name: f for f in dataclasses.fields(SECTIONS[section]) if f.name != "params"}


def field_type(f: dataclasses.Field) -> type:
    """int, float, bool or str: the type of a config field (from its default)."""
    return type(f.default)


def all_keys() -> list[str]:
    """Every generic key as ``section.key``."""
    return [f"{s}.{k}" for s in SECTIONS for k in section_fields(s)]


PYTHON_ENV_PREFIXES = ("gym:", "pz:")  # the names shoal.make routes to shoal.emulation


def is_python_env(name: str) -> bool:
    """True for ``gym:``/``pz:`` names: envs without a spec, whose parameters are free kwargs."""
    return isinstance(name, str) and name.startswith(PYTHON_ENV_PREFIXES)


def _env_spec(name: str):
    from ..envs import get_spec

    try:
        return get_spec(name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def env_params_of(name: str) -> dict[str, Any]:
    """The env's parameters with their Param objects ({} when the env has none, and for Python
    envs, whose parameters are free keyword arguments)."""
    if not name or is_python_env(name):
        return {}
    return dict(_env_spec(name).params)


# ---- value parsing and checking ----

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}


def parse_value(kind: type, text: str, key: str) -> Any:
    """Converts a command-line string to ``kind`` (int accepts 1e6, 1_000_000, 2**20)."""
    text = text.strip()
    if kind is bool:
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigError(f"{key} needs true or false, got {text!r}")
    if kind is int:
        try:
            return int(text.replace("_", ""))
        except ValueError:
            pass
        try:
            if "**" in text:
                base, exp = text.split("**", 1)
                return int(base) ** int(exp)
            value = float(text.replace("_", ""))
        except ValueError:
            raise ConfigError(f"{key} needs an integer, got {text!r}") from None
        if not value.is_integer():
            raise ConfigError(f"{key} needs an integer, got {text!r}")
        return int(value)
    if kind is float:
        try:
            value = float(text.replace("_", ""))
        except ValueError:
            raise ConfigError(f"{key} needs a number, got {text!r}") from None
        return value
    return text


def parse_free_value(text: str) -> Any:
    """A command-line value of a key without a declared type (a Python env's keyword argument):
    an int, a float or true/false when it reads as one, else the string itself."""
    text = text.strip()
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(text.replace("_", ""))
    except ValueError:
        pass
    try:
        return float(text.replace("_", ""))
    except ValueError:
        return text


def check_value(f: dataclasses.Field, value: Any, key: str) -> Any:
    """``value`` checked against a field's type, choices and range; returns it normalised."""
    kind = field_type(f)
    if isinstance(value, str) and kind is not str:
        value = parse_value(kind, value, key)
    if kind is bool:
        if not isinstance(value, bool):
            if value in (0, 1):
                value = bool(value)
            else:
                raise ConfigError(f"{key} must be true or false, got {value!r}")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{key} must be an integer, got {value!r}")
        value = int(value)
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"{key} must be finite, got {value!r}")
    elif not isinstance(value, str):
        raise ConfigError(f"{key} must be a string, got {value!r}")
    meta = f.metadata
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(f"{key} must be one of {', '.join(map(str, meta['choices']))}; "
                          f"got {value!r}")
    low, high = meta.get("low"), meta.get("high")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f">= {low}" if high is None else (f"<= {high}" if low is None else
                                                   f"in [{low}, {high}]")
        raise ConfigError(f"{key} must be {bounds}; got {value!r} ({meta['help']})")
    above = meta.get("above")
    if above is not None and not value > above:
        raise ConfigError(f"{key} must be > {above:g}; got {value!r} ({meta['help']}): set it "
                          f"above {above:g}, e.g. the default {f.default!r}")
    return value


def _unknown(key: str, known: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
    if where == "flag":  # command line: show keys the way they are typed there
        show = lambda k: "--" + k.replace("_", "-")  # noqa: E731
        hint = f" Did you mean {' or '.join(show(c) for c in close)}?" if close else ""
        return ConfigError(f"unknown flag {show(key)}.{hint} "
                           f"(`shoal train ENV --help` lists every flag)")
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return ConfigError(f"unknown {where} key '{key}'.{hint} "
                       f"(`shoal train ENV --help` lists every key)")


def normalise_key(key: str) -> str:
    """``train.learning-rate`` / ``train_learning_rate`` -> ``train.learning_rate``."""
    key = key.strip().lstrip("-")
    if "." not in key:
        for section in SECTIONS:
            if key.startswith(section + "_"):
                key = section + "." + key[len(section) + 1:]
                break
    section, _, name = key.partition(".")
    return f"{section}.{name.replace('-', '_')}" if name else section.replace("-", "_")


# ---- building a config ----

def env_defaults_path(env_name: str) -> str:
    """Path of the shipped per-env defaults (may not exist)."""
    return os.path.join(CONFIG_DIR, f"{env_name}.toml")


def shipped_config_names() -> list[str]:
    """Names of the configs shipped in ``configs/`` (``--config NAME`` takes them)."""
    return sorted(f[:-5] for f in os.listdir(CONFIG_DIR)
                  if f.endswith(".toml") and f != "default.toml")


def config_file_path(name_or_path: str) -> str:
    """The file ``--config`` means: an existing path as it is, else a bare name (no directory,
    no ``.toml``) of a shipped config, e.g. ``breakout_lstm`` -> ``configs/breakout_lstm.toml``."""
    if os.path.exists(name_or_path) or os.sep in name_or_path or "/" in name_or_path \
            or name_or_path.endswith(".toml"):
        return name_or_path
    shipped = os.path.join(CONFIG_DIR, f"{name_or_path}.toml")
    if os.path.exists(shipped):
        return shipped
    raise ConfigError(f"--config {name_or_path!r}: no such file, and no shipped config of that "
                      f"name; give a path to a TOML file or one of "
                      f"{', '.join(shipped_config_names())}")


def load_toml(path: str) -> dict[str, Any]:
    """Reads a TOML file with a clear error on syntax problems."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path!r} is not valid TOML: {exc}") from None


def default_config() -> Config:
    """The dataclass defaults (no env chosen)."""
    return Config()


def _apply(cfg: Config, section: str, key: str, value: Any, origin: str) -> None:
    if section not in SECTIONS:
        raise _unknown(f"{section}.{key}" if key else section, all_keys(), origin)
    fields = section_fields(section)
    full = f"{section}.{key}"
    if key in fields:
        if section == "env" and key == "name" and value != cfg.env.name and cfg.env.name:
            # switching env drops params meant for the previous one
            cfg.env.params = {}
        setattr(getattr(cfg, section), key, check_value(fields[key], value, full))
        return
    if section == "env":
        if is_python_env(cfg.env.name):
            cfg.env.params[key] = value  # a keyword argument of gymnasium.make / the creator
            return
        params = env_params_of(cfg.env.name)
        if key in params:
            cfg.env.params[key] = value  # checked (and converted) by the spec in finalise()
            return
        known = all_keys() + [f"env.{p}" for p in params]
        raise _unknown(full, known, origin)
    raise _unknown(full, all_keys(), origin)


def apply_mapping(cfg: Config, data: Mapping[str, Any], origin: str) -> None:
    """Applies a nested mapping ``{section: {key: value}}`` (a parsed TOML file)."""
    # env.name first, so that the env's parameters are known when its other keys are applied
    env_table = data.get("env")
    if isinstance(env_table, Mapping) and "name" in env_table:
        _apply(cfg, "env", "name", env_table["name"], origin)
    for section, table in data.items():
        if section == "sweep":
            continue  # the search space of `shoal sweep` (shoal/sweep/space.py), not a setting
        if not isinstance(table, Mapping):
            raise ConfigError(f"{origin}: '{section}' must be a table like [{section}], got "
                              f"{table!r}")
        for key, value in table.items():
            if section == "env" and key == "name":
                continue
            if section == "env" and key == "params" and isinstance(value, Mapping):
                for pk, pv in value.items():
                    _apply(cfg, "env", pk, pv, origin)
                continue
            _apply(cfg, section, key.replace("-", "_"), value, origin)


def apply_overrides(cfg: Config, overrides: Mapping[str, Any], origin: str = "override") -> None:
    """Applies flat overrides ``{"train.learning_rate": 0.01}`` (also ``train_learning_rate``)."""
    items = [(normalise_key(k), v) for k, v in overrides.items()]
    items.sort(key=lambda kv: kv[0] != "env.name")
    for key, value in items:
        section, _, name = key.partition(".")
        if not name:
            raise _unknown(key, all_keys(), origin)
        if section == "env" and name not in section_fields("env") and isinstance(value, str):
            if is_python_env(cfg.env.name):
                if origin == "flag":  # typed in a shell: "200" means 200
                    value = parse_free_value(value)
            else:
                params = env_params_of(cfg.env.name)
                if name in params:
                    value = parse_value(params[name].kind, value, key)
        _apply(cfg, section, name, value, origin)


def finalise(cfg: Config) -> Config:
    """Checks the config as a whole (env params against the spec, sizes); returns it."""
    if not cfg.env.name:
        raise ConfigError("no env chosen: pass one, e.g. `shoal train template`")
    if is_python_env(cfg.env.name):
        spec = None
        _check_python_env(cfg)
    else:
        spec = _env_spec(cfg.env.name)
        try:
            cfg.env.params = {k: v for k, v in spec.resolve(cfg.env.params).items()
                              if k in cfg.env.params}
        except (TypeError, ValueError) as exc:
            raise ConfigError(str(exc)) from None
    t = cfg.train
    if t.rollout == "fused" and t.device.split(":")[0] not in ("auto", "cpu"):
        raise ConfigError(fused_device_error(t.device, t))
    # (only an overlapped run's stale batch has the weights overlap_weight_norm normalises)
    if t.overlap and t.overlap_weight_norm and t.learner_threads > 1:
        raise ConfigError(weight_norm_split_error(f"train.learner_threads={t.learner_threads}"))
    if cfg.env.num_envs % cfg.env.num_buffers:
        raise ConfigError(
            f"env.num_envs={cfg.env.num_envs} must be a multiple of env.num_buffers="
            f"{cfg.env.num_buffers}")
    if t.minibatch_size % t.horizon:
        raise ConfigError(
            f"train.minibatch_size={t.minibatch_size} must be a multiple of train.horizon="
            f"{t.horizon} (minibatches are whole segments)")
    if t.batch_size:
        agents = (_python_env_agents(cfg) if spec is None else
                  int(spec.agents_per_env(spec.resolve(cfg.env.params))))
        batch = cfg.env.num_envs * agents * t.horizon
        if batch != t.batch_size:
            need = t.batch_size / (agents * t.horizon)
            hint = (f"set env.num_envs={int(need)}" if need.is_integer() and need >= 1
                    else "make it a multiple of agents x horizon")
            raise ConfigError(
                f"train.batch_size={t.batch_size} but num_envs x agents x horizon = "
                f"{cfg.env.num_envs} x {agents} x {t.horizon} = {batch}: {hint}, or leave "
                f"batch_size at 0")
    return cfg


def pipeline_unavailable(t: TrainConfig) -> str | None:
    """Why ``train.pipeline`` does not apply to settings ``t`` (None when it does, or is off).

    The pipeline only changes when the learner reads each part of the batch, never what the run
    computes (it is the synchronous fused path, bit for bit), so where it cannot run the run
    takes that path unpipelined and says why (``Trainer.pipeline_note``): breakout ships it on,
    and ``--train.rollout torch`` or ``--train.overlap true`` then work as they read."""
    if not t.pipeline:
        return None
    if t.rollout != "fused":
        return "it pipelines the fused C rollout, and train.rollout is torch"
    if t.overlap:
        return ("train.overlap collects the next batch during the update instead (the one-"
                "update-stale path)")
    if t.minibatches != "ranges":
        return (f"it needs train.minibatches = ranges (minibatch k the k-th run of rows, the "
                f"envs collected k-th), not {t.minibatches}")
    if t.norm_reward:
        return ("train.norm_reward scales the rewards over the whole batch in step order "
                "(set train.norm_reward = false to pipeline)")
    return None


def weight_norm_split_error(split: str) -> str:
    """The error for ``train.overlap_weight_norm`` with a minibatch split over threads or ranks
    (the weights' mean needs the whole minibatch), naming the fixes."""
    return (f"train.overlap_weight_norm divides by the weights' mean over the whole minibatch, "
            f"but {split} splits each minibatch: use train.learner_threads = 1 and one "
            f"process, or train.overlap_weight_norm = false")


def torch_path_flags(t: TrainConfig) -> str:
    """The flags that take the torch rollout from settings ``t`` (with overlap, which needs the
    fused rollout, turned off)."""
    return "--train.rollout torch" + (" --train.overlap false" if t.overlap else "")


def fused_device_error(device: Any, t: TrainConfig) -> str:
    """The error for ``train.rollout = "fused"`` with a learner off the CPU, naming the fixes."""
    return (f"train.rollout='fused' runs the envs and the policy on the CPU and trains there, "
            f"but train.device is {str(device)!r}: train on the CPU (--train.device cpu), or "
            f"take the torch rollout for a {str(device).split(':')[0]} learner "
            f"({torch_path_flags(t)})")


def _check_python_env(cfg: Config) -> None:
    """ConfigError (with the fix) unless the ``gym:``/``pz:`` name resolves and the params can
    be keyword arguments."""
    from ..emulation import check_name

    for key, value in cfg.env.params.items():
        if not key.isidentifier():
            raise ConfigError(f"env.{key}: {cfg.env.name} takes keyword arguments, and {key!r} "
                              f"is not a Python identifier")
        _toml_value(value)  # raises ConfigError for values a run's config.toml cannot hold
    try:
        check_name(cfg.env.name)
    except (ImportError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


def _python_env_agents(cfg: Config) -> int:
    """Agents per env of a Python env: 1 for gym:, len(possible_agents) for pz: (builds one)."""
    if cfg.env.name.startswith("gym:"):
        return 1
    from ..emulation import PythonEnvFactory
    from ..emulation.factory import PETTINGZOO

    try:
        return int(PythonEnvFactory(PETTINGZOO, cfg.env.name[3:], cfg.env.params,
                                    name=cfg.env.name).describe()[3])
    except Exception as exc:
        raise ConfigError(f"{cfg.env.name}: cannot build the env to count its agents "
                          f"({type(exc).__name__}: {exc})") from None


def build_config(env_name: str | None = None, files: list[str] | tuple[str, ...] = (),
                 overrides: Mapping[str, Any] | None = None, base: Config | None = None,
                 origin: str = "override") -> Config:
    """Defaults -> configs/<env>.toml -> ``files`` -> ``overrides``, checked.

    ``env_name`` may also come from a file or the overrides (``env.name``). ``base`` replaces the
    defaults and the per-env file (used when resuming a run from its config.toml).
    """
    overrides = dict(overrides or {})
    cfg = base if base is not None else default_config()
    name = env_name or overrides.get("env.name") or overrides.get("env_name")
    if name is None:
        for path in files:
            data = load_toml(path)
            if isinstance(data.get("env"), Mapping) and data["env"].get("name"):
                name = data["env"]["name"]
    if base is None:
        default_path = os.path.join(CONFIG_DIR, "default.toml")
        if os.path.exists(default_path):
            apply_mapping(cfg, load_toml(default_path), "configs/default.toml")
        if name:
            _apply(cfg, "env", "name", name, "env name")
            per_env = env_defaults_path(name)
            if os.path.exists(per_env):
                apply_mapping(cfg, load_toml(per_env), f"configs/{name}.toml")
    elif name:
        _apply(cfg, "env", "name", name, "env name")
    for path in files:
        apply_mapping(cfg, load_toml(path), path)
    apply_overrides(cfg, overrides, origin)
    return finalise(cfg)


def config_for_env(env: Any, files: list[str], overrides: Mapping[str, Any]) -> Config:
    """A config for a prebuilt env object: defaults (+ that env's shipped file if it is a
    registered env), then files and overrides; env keys describe the given env."""
    cfg = default_config()
    default_path = os.path.join(CONFIG_DIR, "default.toml")
    if os.path.exists(default_path):
        apply_mapping(cfg, load_toml(default_path), "configs/default.toml")
    name = getattr(env, "name", "custom")
    if os.path.exists(env_defaults_path(name)):
        data = load_toml(env_defaults_path(name))
        data = {k: v for k, v in data.items() if k != "env"}
        apply_mapping(cfg, data, f"configs/{name}.toml")
    for f in files:
        apply_mapping(cfg, {k: v for k, v in load_toml(f).items() if k != "env"}, f)
    env_keys = [k for k in overrides if str(k).replace(".", "_").startswith("env_")]
    if env_keys:
        raise ConfigError(f"{', '.join(env_keys)}: env settings come from the env object passed "
                          f"in; set them when building it (shoal.make(...))")
    apply_overrides(cfg, overrides)
    cfg.env.name = name
    cfg.env.num_envs = int(env.num_envs)
    cfg.env.num_buffers = int(getattr(env, "num_buffers", 1))
    cfg.env.params = dict(getattr(env, "params", {}) or {})
    t = cfg.train
    if t.minibatch_size % t.horizon:
        raise ConfigError(f"train.minibatch_size={t.minibatch_size} must be a multiple of "
                          f"train.horizon={t.horizon}")
    return cfg


def from_dict(data: Mapping[str, Any]) -> Config:
    """A config from :meth:`Config.to_dict` output (a run's config.toml), checked."""
    cfg = default_config()
    apply_mapping(cfg, data, "saved config")
    return finalise(cfg)


def to_toml(cfg: Config) -> str:
    """The config as TOML text, one table per section, with each key's meaning as a comment."""
    lines: list[str] = []
    data = cfg.to_dict()
    for section in SECTIONS:
        if lines:
            lines.append("")
        lines.append(f"[{section}]")
        fields = section_fields(section)
        for key, value in data[section].items():
            doc = fields[key].metadata["help"] if key in fields else "env parameter"
            lines.append(f"{key} = {_toml_value(value)}  # {doc}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        text = repr(float(value))
        return text if ("." in text or "e" in text or "inf" in text or "nan" in text) else text + ".0"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if not isinstance(value, str):
        raise ConfigError(f"{value!r} ({type(value).__name__}) cannot be written to a run's "
                          f"config.toml: use a string, number, bool, list or table")
    text = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def _toml_key(key: Any) -> str:
    key = str(key)
    return key if key.replace("_", "").replace("-", "").isalnum() else _toml_value(key)
