"""``shoal train``: train a policy on an env from the command line.

    shoal train ENV [--SECTION.KEY VALUE ...] [--config FILE.toml] [--resume RUN_DIR]

Every config key is a flag (``--train.learning-rate 0.01``, ``--env.num-envs 2048``; dashes or
underscores), and so is every parameter of the env (``--env.size 15`` for maze). ``--help``
lists them all with their defaults (the env's shipped defaults applied) and meanings.
"""

from __future__ import annotations

import signal
import sys
from typing import Any

from .config import (SECTIONS, ConfigError, build_config, config_file_path, env_params_of,
                     field_type, is_python_env, normalise_key, section_fields)

USAGE = ("usage: shoal train ENV [--SECTION.KEY VALUE ...] [--config FILE.toml] "
         "[--resume RUN_DIR|CHECKPOINT] [--run-dir DIR]")

# flags that are not config keys
_SPECIAL = {"config", "resume", "run-dir", "run_dir", "help", "h", "trust-pickled-env-state"}


def parse_args(argv: list[str]) -> dict[str, Any]:
    """Splits argv into env name, config files, resume target and raw ``section.key`` overrides.

    Values stay strings here; :func:`build_config` converts and checks them against each key's
    type. A bool flag given without a value means true.
    """
    out: dict[str, Any] = {"env": None, "files": [], "resume": None, "overrides": {},
                           "help": False, "trust_pickled_env_state": False}
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg in ("-h", "--help"):
            out["help"] = True
            continue
        if not arg.startswith("--"):
            if arg.startswith("-") and len(arg) > 1 and not _is_number(arg):
                raise ConfigError(f"unknown option {arg!r}: flags look like --train.learning-rate")
            if out["env"] is None:
                out["env"] = arg
                continue
            raise ConfigError(f"unexpected argument {arg!r}: only one env name is taken, and "
                              f"values follow their flag (--section.key VALUE)")
        if arg in ("--trust-pickled-env-state", "--trust_pickled_env_state"):
            out["trust_pickled_env_state"] = True
            continue
        key, eq, value = arg[2:].partition("=")
        if not key:
            raise ConfigError("empty flag '--'")
        if not eq:
            if _takes_no_value(key, out) and (i >= len(argv) or argv[i].startswith("--")):
                value = "true"
            elif i < len(argv):
                value = argv[i]
                i += 1
            else:
                raise ConfigError(f"--{key} needs a value")
        if key == "config":
            out["files"].append(config_file_path(value))
        elif key == "resume":
            out["resume"] = value
        elif key in ("run-dir", "run_dir"):
            out["overrides"]["log.run_dir"] = value
        else:
            norm = normalise_key(key)
            if "." not in norm:
                raise ConfigError(
                    f"unknown flag --{key}: config flags are --SECTION.KEY with SECTION one of "
                    f"{', '.join(SECTIONS)} (e.g. --train.learning-rate 0.01)")
            out["overrides"][norm] = value
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _takes_no_value(key: str, parsed: dict[str, Any]) -> bool:
    """True for bool keys, so ``--train.anneal-lr`` alone means true."""
    norm = normalise_key(key)
    section, _, name = norm.partition(".")
    if section in SECTIONS and name in section_fields(section):
        return field_type(section_fields(section)[name]) is bool
    if section == "env" and parsed.get("env"):
        try:
            params = env_params_of(parsed["env"])
        except ConfigError:
            return False
        return name in params and params[name].kind is bool
    return False


def help_text(env_name: str | None = None) -> str:
    """Every key with its default (after the env's shipped defaults) and meaning."""
    from .config import default_config

    cfg = default_config()
    note = ""
    if env_name:
        try:
            cfg = build_config(env_name)
        except ConfigError as exc:
            note = f"\n(could not apply {env_name}'s defaults: {exc})\n"
    data = cfg.to_dict()
    lines = [USAGE, "",
             "Trains a policy with PPO on a shoal env and writes runs/<env>-<timestamp>/",
             "(config.toml, metrics.jsonl, checkpoints/, summary.json).", note, "options:",
             "  --config FILE.toml      apply a TOML file of overrides ([env], [train], ...);",
             "                          a bare NAME takes shoal's shipped configs/NAME.toml",
             "                          (e.g. breakout_lstm; docs/train.md)",
             "  --resume RUN_DIR        continue a run from its newest checkpoint (or a .pt file)",
             "  --run-dir DIR           write the run here (same as --log.run-dir)",
             "  --trust-pickled-env-state",
             "                          with --resume: load a Python env's saved state, which is",
             "                          pickled. RISK: unpickling runs whatever code the file",
             "                          names; use it only for checkpoints you made or trust.",
             "                          Without it a gym:/pz: run resumes with fresh episodes.",
             "  -h, --help              this help; `shoal train ENV --help` shows ENV's defaults",
             ""]
    for section, cls in SECTIONS.items():
        lines.append(f"[{section}] {(cls.__doc__ or '').strip().splitlines()[0]}")
        fields = section_fields(section)
        rows = []
        for name, f in fields.items():
            flag = f"--{section}.{name.replace('_', '-')}"
            default = data[section][name]
            meaning = f.metadata["help"]
            if f.metadata.get("choices"):
                meaning += f" ({'|'.join(map(str, f.metadata['choices']))})"
            rows.append((flag, _show(default), meaning))
        python_env = cfg.env.name or env_name
        if section == "env" and python_env and is_python_env(python_env):
            rows.append(("--env.<KEY> VALUE", "", _python_env_kwargs_help(python_env)))
        elif section == "env" and cfg.env.name:
            for name, param in env_params_of(cfg.env.name).items():
                flag = f"--env.{name.replace('_', '-')}"
                value = cfg.env.params.get(name, param.default)
                rng = ""
                if param.low is not None or param.high is not None:
                    rng = f" [{_show(param.low)}, {_show(param.high)}]"
                rows.append((flag, _show(value), f"{cfg.env.name}: {param.doc}{rng}"))
        elif section == "env":
            rows.append(("--env.<param>", "", "the env's own parameters: "
                                              "`shoal train ENV --help` lists them (for gym:/pz: "
                                              "envs, keyword arguments of gymnasium.make / the "
                                              "PettingZoo creator)"))
        width = max(len(r[0]) for r in rows)
        dwidth = max(len(r[1]) for r in rows)
        for flag, default, meaning in rows:
            lines.append(f"  {flag:<{width}}  {default:<{dwidth}}  {meaning}")
        lines.append("")
    lines.append("Examples:")
    lines.append("  shoal train breakout")
    lines.append("  shoal train maze --env.size 15 --train.total-steps 2e7 --policy.name lstm")
    lines.append("  shoal train breakout --resume runs/breakout-20250101-120000")
    return "\n".join(lines)


def _python_env_kwargs_help(name: str) -> str:
    """What the other ``--env.KEY VALUE`` flags mean for a ``gym:``/``pz:`` env."""
    if name.startswith("gym:"):
        target, example = "gymnasium.make", "--env.max-episode-steps 200"
    else:
        target, example = ("the PettingZoo creator (parallel_env() or the named callable)",
                           "--env.max-cycles 200")
    return (f"any other --env.KEY VALUE is a keyword argument of {target}, e.g. {example} "
            f"(dashes become underscores; numbers and true/false are converted)")


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value) if value == "" else value
    if value is None:
        return "-"
    return str(value)


def _one_line(exc: BaseException) -> str:
    """``exc``'s message on one line (some libraries' messages span several)."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``shoal train``; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parse_args(argv)
    except ConfigError as exc:
        print(f"shoal train: {exc}\n{USAGE}", file=sys.stderr)
        return 2
    if args["help"]:
        print(help_text(args["env"]))
        return 0
    if args["env"] is None and args["resume"] is None and not args["files"]:
        print(f"shoal train: which env? e.g. `shoal train template`\n{USAGE}\n"
              f"`shoal envs` lists the envs; `shoal train --help` lists the options.",
              file=sys.stderr)
        return 2

    if args["trust_pickled_env_state"] and not args["resume"]:
        print("shoal train: --trust-pickled-env-state applies only with --resume RUN_DIR",
              file=sys.stderr)
        return 2

    from . import ppo
    from .checkpoint import CheckpointError
    from .distributed import AGENT_EXITED, elastic_resume_target

    try:
        # a worker group torchrun restarted (--max-restarts) continues from the last checkpoint
        args["resume"] = args["resume"] or elastic_resume_target(
            args["overrides"].get("log.run_dir"))
        if args["resume"]:
            trainer = ppo.Trainer.resume(args["resume"], env_name=args["env"],
                                         files=args["files"], overrides=args["overrides"],
                                         origin="flag",
                                         trust_pickled_env_state=args["trust_pickled_env_state"])
        else:
            cfg = build_config(args["env"], args["files"], args["overrides"], origin="flag")
            trainer = ppo.Trainer(cfg)
    except (ConfigError, CheckpointError) as exc:
        print(f"shoal train: {exc}", file=sys.stderr)
        return 2
    except (TypeError, ValueError, ImportError) as exc:
        # Raised while making the env (a keyword argument it does not take, a bad value, a
        # module that does not import) or the policy for it. Only construction is wrapped: the
        # same exceptions during training are bugs and keep their traceback.
        print(f"shoal train: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    try:
        summary = trainer.train()
    except CheckpointError as exc:      # e.g. the disk filled up: the newest checkpoint is intact
        print(f"shoal train: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nshoal train: stopped (checkpoint saved; continue with "
              f"`shoal train --resume {trainer.run_dir}`)", file=sys.stderr)
        return 130
    if not summary.get("finished", True):
        print(f"stopped early; continue with `shoal train --resume {trainer.run_dir}`")
    if summary.get("stopped_by") == "SIGTERM":
        return 128 + signal.SIGTERM     # 143: what schedulers expect of a job they terminated
    if summary.get("stopped_by") == AGENT_EXITED:
        return 1                        # torchrun's agent died: the job did not end as asked
    return 0


if __name__ == "__main__":
    sys.exit(main())
