"""The ``shoal`` command: a thin dispatcher to the subcommands' own modules.

Each subcommand lives in its own module exposing ``main(argv: list[str]) -> int``; they are
imported only when used, so ``shoal envs`` never imports torch.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "envs": ("shoal.tools.envs_cmd", "list the environments with their spaces and parameters"),
    "bench": ("shoal.tools.bench", "measure random-action stepping throughput of an env"),
    "train": ("shoal.trainer.cli", "train a policy on an env"),
    "sweep": ("shoal.sweep.cli", "cost-aware hyperparameter sweep of an env's config (Optuna)"),
    "eval": ("shoal.trainer.eval_cli", "evaluate a checkpoint: mean score over episodes"),
    "check": ("shoal.tools.check_cmd", "check a Python env (gym:ID, pz:MODULE.ENV, module:creator): "
                                       "each problem with its fix"),
    "watch": ("shoal.tools.watch", "play a trained policy: in the terminal, or to a GIF/MP4"),
    "inspect": ("shoal.tools.inspect_cmd", "look at an env's observations, rewards and episodes "
                                           "(and a policy's actions): report, plots, HTML"),
    "plot": ("shoal.tools.plot", "learning curves of one or more runs from metrics.jsonl"),
    "export": ("shoal.tools.export", "a trained policy as dependency-free C (and a C env's "
                                     "player main.c; --web: WebAssembly page)"),
}


def usage() -> str:
    width = max(len(c) for c in COMMANDS)
    lines = ["usage: shoal COMMAND [ARGS...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "`shoal COMMAND --help` shows a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib

        close = difflib.get_close_matches(name, list(COMMANDS), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        print(f"shoal: unknown command '{name}'.{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
