"""The trainer learns each headline env: short seeded runs of the shipped configs beat random play.

For each env the test measures uniformly random play and the trained policy the same way
(``shoal eval``'s estimate: the same env parameters, envs, episodes and seed), trains with the
shipped config (shoal/trainer/configs/<env>.toml) cut to a fixed number of agent steps, and
checks that the trained policy scores clearly above random. Budgets are agent steps, never
wall-clock, and the runs are deterministic under a seed, so a result does not depend on how
busy the machine is; the thresholds leave a wide margin because other CPUs may round floats
differently and the shipped defaults may change.

These are regression alarms, not tuning targets: each budget is a small fraction of the
shipped total_steps (the learning rate is annealed over the shortened budget, every other
learning setting is the shipped one), chosen as about the smallest at which seeds 0, 1 and 2
all pass with room to spare. Measured scores, thresholds and timings: BENCHMARKS.md,
"Learning regression tests". Slow (minutes): left out of the default run, selected with

    python -m pytest -q -m slow tests/test_learning_headline.py
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gymnasium import spaces

torch = pytest.importorskip("torch")

from shoal.trainer.checkpoint import load_checkpoint  # noqa: E402
from shoal.trainer.config import build_config  # noqa: E402
from shoal.trainer.eval_cli import evaluate  # noqa: E402
from shoal.trainer.ppo import Trainer  # noqa: E402
from shoal.vector import make as make_env  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

TRAIN_SEED = 0
EVAL_SEED = 1000        # the env and sampling seed of both the random and the trained estimate


@dataclass(frozen=True)
class Case:
    """One env's budget and what its trained policy must reach."""

    steps: int          # agent steps of training (the shipped config's total_steps is overridden)
    episodes: int       # episodes each estimate averages over
    ratio: float        # trained score >= ratio x random score ...
    gain: float         # ... and >= random score + gain

    def needed(self, random_score: float) -> float:
        return max(self.ratio * random_score, random_score + self.gain)


CASES: dict[str, Case] = {
    "breakout": Case(steps=3_000_000, episodes=256, ratio=2.0, gain=0.5),
    "maze": Case(steps=3_000_000, episodes=512, ratio=1.15, gain=0.05),
    "g2048": Case(steps=1_500_000, episodes=64, ratio=1.5, gain=300.0),
    # seed 1 stays at random play's ~200 points in 2M-, 3M- and 5M-step runs; 6M lifts it
    "tetris": Case(steps=6_000_000, episodes=256, ratio=1.3, gain=40.0),
    "drone": Case(steps=4_000_000, episodes=128, ratio=1.0, gain=0.1),
    "forage": Case(steps=1_000_000, episodes=64, ratio=2.0, gain=2.0),
}


def random_play_score(env_name: str, params: dict[str, Any], episodes: int, seed: int) -> float:
    """Mean score of uniformly random actions, estimated as ``evaluate`` estimates a policy's:
    min(episodes, 256) envs seeded with ``seed``, each contributing its first
    ceil(episodes / num_envs) episodes."""
    env = make_env(env_name, min(episodes, 256), seed=seed, **params)
    try:
        space, rng = env.single_action_space, np.random.default_rng(seed)
        env.reset(seed)
        share = math.ceil(episodes / env.num_envs)
        counted = np.zeros(env.num_envs)
        total = 0.0
        while (counted < share).any():
            if isinstance(space, spaces.Discrete):
                actions = rng.integers(0, space.n, env.num_agents).astype(np.int32)
            else:       # drone's rotor commands, Box(-1, 1)
                actions = rng.uniform(space.low, space.high,
                                      (env.num_agents, *space.shape)).astype(np.float32)
            _, _, terminals, truncations, _ = env.step(actions)
            for i in np.unique(np.flatnonzero(terminals | truncations) // env.agents_per_env):
                if counted[i] >= share:
                    continue
                stats = env.log_env(int(i))
                n = float(stats.get("n", 0.0))
                total += stats.get("score", stats.get("episode_return", 0.0)) * n
                counted[i] += n
    finally:
        env.close()
    return total / counted.sum()


def train_and_score(env_name: str, seed: int, run_dir: Path,
                    overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Random play's score, then a seeded run of the shipped config (plus ``overrides``) for
    the case's budget and ``shoal eval``'s score of its final checkpoint."""
    case = CASES[env_name]
    cfg = build_config(env_name, overrides={
        "train.total_steps": case.steps, "train.seed": seed, "log.run_dir": str(run_dir),
        "log.dashboard": "off", "log.checkpoint_interval": 1_000_000, **(overrides or {})})
    random_score = random_play_score(env_name, dict(cfg.env.params), case.episodes, EVAL_SEED)
    summary = Trainer(cfg).train()
    trained = evaluate(summary["run_dir"], episodes=case.episodes, seed=EVAL_SEED,
                       env_name=env_name)
    return {"random": random_score, "trained": trained["score"], "summary": summary}


# breakout ships train.precision = "auto": bfloat16 on CPUs with bfloat16 units, float32
# elsewhere. Its plain case runs whichever this CPU gets; this one the float32 learner too, so
# a machine with bfloat16 units checks both.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    **{name: (name, {}) for name in CASES},
    "breakout-float32": ("breakout", {"train.precision": "float32"}),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_headline_env_learns_above_random(variant, tmp_path):
    env_name, overrides = VARIANTS[variant]
    case = CASES[env_name]
    result = train_and_score(env_name, TRAIN_SEED, tmp_path / env_name, overrides)
    summary = result["summary"]
    assert summary["finished"] and case.steps <= summary["agent_steps"] < case.steps + \
        summary["batch_size"]
    needed = case.needed(result["random"])
    assert result["trained"] >= needed, (
        f"{env_name}: trained {result['trained']:.4g} < {needed:.4g} needed "
        f"(random play {result['random']:.4g}) after {summary['agent_steps']} steps; {summary}")


TIMING_KEYS = {"sps", "sps_avg", "elapsed", "remaining", "time"}


def test_training_is_deterministic_under_a_seed(tmp_path):
    """The same seed twice gives the same learning curve and weights: the budgets above are
    fixed results, not samples. (Breakout, 16 epochs of its shipped config.)"""
    runs = []
    for name in ("a", "b"):
        cfg = build_config("breakout", overrides={
            "train.total_steps": 16 * 16_384, "train.seed": 7, "log.run_dir": str(tmp_path / name),
            "log.dashboard": "off", "log.checkpoint_interval": 1_000_000})
        summary = Trainer(cfg).train()
        lines = (Path(summary["run_dir"]) / "metrics.jsonl").read_text().splitlines()
        curve = [{k: v for k, v in json.loads(line).items() if k not in TIMING_KEYS}
                 for line in lines]
        weights = load_checkpoint(summary["checkpoint"])["model"]
        runs.append((curve, weights, summary["score"]))
    (curve_a, weights_a, score_a), (curve_b, weights_b, score_b) = runs
    assert len(curve_a) == 16 and curve_a == curve_b and score_a == score_b
    assert weights_a.keys() == weights_b.keys()
    for key in weights_a:
        assert torch.equal(weights_a[key], weights_b[key]), key
