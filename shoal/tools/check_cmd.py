"""``shoal check ENV_OR_CREATOR``: what is wrong with a Python env, and how to fix it.

ENV_OR_CREATOR is a Gymnasium id (``CartPole-v1``, ``gym:CartPole-v1``, ``gym:module:ID``), a
PettingZoo env (``pz:pettingzoo.butterfly.pistonball_v6``) or a creator
(``package.module:make_env``, called with the ``--name value`` flags as keyword arguments).

It checks the spaces, the reset/step signatures and return values, observations against their
space over a random run, determinism under a seed, and that shoal can vectorise the env; every
problem comes with its fix. Exit status: 0 when no errors were found, 1 otherwise, 2 for bad
arguments.
"""

from __future__ import annotations

import argparse
import json
import sys

from .bench import parse_env_params


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="shoal check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("env", help="gym id, gym:ID, pz:MODULE.ENV or module.path:callable")
    parser.add_argument("--seed", type=int, default=0, help="seed for the checks (default 0)")
    parser.add_argument("--steps", type=int, default=300,
                        help="random steps checked against the observation space (default 300)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args, extra = parser.parse_known_args(argv)
    try:
        env_kwargs = parse_env_params(extra)
    except ValueError as exc:
        parser.exit(2, f"shoal check: {exc}\n")

    from ..envs import list_envs

    if args.env in list_envs():
        print(f"{args.env} is one of shoal's C envs: `shoal envs {args.env}` describes it, and "
              f"tests/test_env_contract.py checks it against the C env contract. `shoal check` is "
              f"for Python envs (gym:ID, pz:MODULE.ENV, module.path:callable).")
        return 0

    from ..emulation.checker import check_env

    report = check_env(args.env, env_kwargs=env_kwargs, seed=args.seed, steps=args.steps)
    if args.json:
        print(json.dumps({
            "target": report.target, "kind": report.kind, "ok": report.ok,
            "passed": report.passed, "notes": report.notes,
            "problems": [{"severity": p.severity, "where": p.where, "what": p.what, "fix": p.fix}
                         for p in report.problems],
        }, indent=2))
    else:
        print(report)
    sys.stdout.flush()
    return 0 if report.ok else 1
