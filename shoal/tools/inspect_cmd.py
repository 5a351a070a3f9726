"""``shoal inspect``: look at an env's data before blaming the trainer.

    shoal inspect ENV [--checkpoint RUN] [--steps N] [--num-envs N] [--seed S] [-o DIR]
                  [--json] [--PARAM VALUE ...]

Steps the env under a uniformly random policy and, with ``--checkpoint``, under the trained one,
and reports per observation dimension its min/max/mean/std, constant dimensions, NaN/inf and
values outside the declared observation space; the rewards' distribution and fraction non-zero;
per-episode returns and lengths; and the policy's action distribution and entropy. Anything
suspicious is named in one sentence (e.g. ``obs[17] is constant 0.0 in 100% of steps``).
Writes PNG plots and one self-contained HTML file (images and data inline; opens offline) to
DIR (default ``inspect-<env>``).
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from gymnasium import spaces

__all__ = ["DataReport", "collect", "find_problems", "inspect_env", "write_plots", "write_html",
           "main"]

#: rows kept for the most-common-value check (the other statistics use every step)
SAMPLE_ROWS = 20_000


@dataclass
class DataReport:
    """What one policy saw and did on an env over ``steps`` vector steps."""

    env_name: str
    policy: str                       #: "random" or the checkpoint's path
    steps: int                        #: vector steps taken
    agent_steps: int                  #: observations counted (present agent rows x steps)
    obs_min: np.ndarray
    obs_max: np.ndarray
    obs_mean: np.ndarray
    obs_std: np.ndarray
    obs_nan: np.ndarray               #: per dimension: observations that were NaN
    obs_inf: np.ndarray
    obs_outside: np.ndarray           #: per dimension: values outside the declared space
    obs_low: np.ndarray               #: the space's bounds per dimension (inf where unbounded)
    obs_high: np.ndarray
    obs_mode_fraction: np.ndarray     #: fraction of sampled steps at the most common value
    obs_mode_value: np.ndarray
    first_bad: dict[str, tuple[int, int, int]] = field(default_factory=dict)  #: kind -> (step, row, dim)
    rewards: np.ndarray = field(default_factory=lambda: np.zeros(0))  #: every reward seen
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)
    actions: np.ndarray | None = None     #: [agent_steps, action dims] actions taken
    entropy: float | None = None          #: mean entropy of the trained policy's distribution
    max_entropy: float | None = None      #: entropy of the uniform distribution (discrete)
    action_space: Any = None
    findings: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Plain numbers for JSON."""
        r = self.rewards
        out: dict[str, Any] = {
            "env": self.env_name, "policy": self.policy, "steps": self.steps,
            "agent_steps": self.agent_steps,
            "reward": {"mean": _f(r.mean()) if r.size else None,
                       "min": _f(r.min()) if r.size else None,
                       "max": _f(r.max()) if r.size else None,
                       "fraction_nonzero": _f(np.mean(r != 0)) if r.size else None},
            "episodes": len(self.episode_returns),
            "episode_return_mean": _f(np.mean(self.episode_returns)) if self.episode_returns else None,
            "episode_length_mean": _f(np.mean(self.episode_lengths)) if self.episode_lengths else None,
            "entropy": self.entropy, "max_entropy": self.max_entropy,
            "findings": self.findings,
            "obs": [{"dim": i, "min": _f(self.obs_min[i]), "max": _f(self.obs_max[i]),
                     "mean": _f(self.obs_mean[i]), "std": _f(self.obs_std[i]),
                     "nan": int(self.obs_nan[i]), "inf": int(self.obs_inf[i]),
                     "outside_space": int(self.obs_outside[i])}
                    for i in range(len(self.obs_min))],
        }
        if self.actions is not None and self.actions.size:
            out["action_counts"] = _action_counts(self)
        return out


def _f(x: Any) -> float | None:
    x = float(x)
    return x if math.isfinite(x) else None


def _space_bounds(space: spaces.Space, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Per flattened dimension (low, high) of an observation space; +-inf where unbounded or
    unknown (structured byte rows)."""
    if isinstance(space, spaces.Box) and int(np.prod(space.shape)) == dims:
        low = np.broadcast_to(np.asarray(space.low, np.float64), space.shape).ravel()
        high = np.broadcast_to(np.asarray(space.high, np.float64), space.shape).ravel()
        return low.copy(), high.copy()
    if isinstance(space, spaces.Discrete):
        return np.full(dims, float(space.start)), np.full(dims, float(space.start + space.n - 1))
    if isinstance(space, spaces.MultiDiscrete) and space.nvec.size == dims:
        return np.zeros(dims), np.asarray(space.nvec, np.float64).ravel() - 1
    if isinstance(space, spaces.MultiBinary) and int(np.prod(space.shape)) == dims:
        return np.zeros(dims), np.ones(dims)
    return np.full(dims, -np.inf), np.full(dims, np.inf)


class RandomPolicy:
    """Uniform random actions for every row (Box actions uniform in their bounds, clipped to
    [-1, 1] where unbounded)."""

    def __init__(self, space: spaces.Space, rows: int, seed: int) -> None:
        self.space, self.rows = space, rows
        self.rng = np.random.default_rng(seed)

    def act(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, None]:
        s, n, rng = self.space, self.rows, self.rng
        if isinstance(s, spaces.Discrete):
            a = (rng.integers(0, s.n, n) + s.start).astype(np.int32)
        elif isinstance(s, spaces.MultiDiscrete):
            a = np.stack([rng.integers(0, k, n) for k in s.nvec.ravel()], -1).astype(np.int32)
            a = a.reshape(n, *s.shape)
        elif isinstance(s, spaces.MultiBinary):
            a = rng.integers(0, 2, (n, *s.shape)).astype(np.int32)
        elif isinstance(s, spaces.Box):
            low = np.where(np.isfinite(s.low), s.low, -1.0)
            high = np.where(np.isfinite(s.high), s.high, 1.0)
            a = rng.uniform(low, high, (n, *s.shape)).astype(np.float32)
        else:
            raise TypeError(f"unsupported action space {s}")
        return a, a, None

    def episode_ends(self, done: np.ndarray) -> None:
        pass


class _TrainedPolicy:
    def __init__(self, stepper: Any) -> None:
        self.stepper = stepper

    def act(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        d = self.stepper.act(obs)
        return d.env_actions, d.actions, d.entropy

    def episode_ends(self, done: np.ndarray) -> None:
        self.stepper.episode_ends(done)


def collect(env: Any, steps: int, policy: Any = None, seed: int = 0,
            label: str = "random") -> DataReport:
    """Steps ``env`` ``steps`` times with ``policy`` (a :class:`~shoal.tools.runs.PolicyStepper`;
    None = uniformly random actions) and gathers a :class:`DataReport`. Rows whose mask is
    False (absent agents of multi-agent envs) are left out."""
    if steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    actor = RandomPolicy(env.single_action_space, env.num_agents, seed) if policy is None \
        else _TrainedPolicy(policy)
    obs, _ = env.reset(seed)
    rows, dims = env.num_agents, int(np.prod(obs.shape[1:])) if obs.ndim > 1 else 1
    low, high = _space_bounds(env.single_observation_space, dims)
    n = np.zeros(dims)
    total = np.zeros(dims)
    total_sq = np.zeros(dims)
    vmin = np.full(dims, np.inf)
    vmax = np.full(dims, -np.inf)
    nan = np.zeros(dims, np.int64)
    inf = np.zeros(dims, np.int64)
    outside = np.zeros(dims, np.int64)
    first_bad: dict[str, tuple[int, int, int]] = {}
    sample: list[np.ndarray] = []
    sampled = 0
    rewards: list[np.ndarray] = []
    actions: list[np.ndarray] = []
    entropies: list[np.ndarray] = []
    ep_return = np.zeros(rows)
    ep_length = np.zeros(rows, np.int64)
    returns: list[float] = []
    lengths: list[int] = []
    agent_steps = 0

    def observe(o: np.ndarray, present: np.ndarray, step: int) -> None:
        nonlocal sampled, agent_steps
        x = o.reshape(rows, dims)[present].astype(np.float64)
        if not x.size:
            return
        agent_steps += x.shape[0]
        is_nan, is_inf = np.isnan(x), np.isinf(x)
        for kind, bad in (("nan", is_nan), ("inf", is_inf)):
            if kind not in first_bad and bad.any():
                r, d = np.argwhere(bad)[0]
                first_bad[kind] = (step, int(np.flatnonzero(present)[r]), int(d))
        nan[:] += is_nan.sum(0)
        inf[:] += is_inf.sum(0)
        finite = np.isfinite(x)
        xf = np.where(finite, x, 0.0)
        n[:] += finite.sum(0)
        total[:] += xf.sum(0)
        total_sq[:] += (xf * xf).sum(0)
        np.minimum(vmin, np.where(finite, x, np.inf).min(0), out=vmin)
        np.maximum(vmax, np.where(finite, x, -np.inf).max(0), out=vmax)
        out_of = finite & ((x < low) | (x > high))
        if "outside" not in first_bad and out_of.any():
            r, d = np.argwhere(out_of)[0]
            first_bad["outside"] = (step, int(np.flatnonzero(present)[r]), int(d))
        outside[:] += out_of.sum(0)
        if sampled < SAMPLE_ROWS:
            take = x[: SAMPLE_ROWS - sampled]
            sample.append(take.astype(np.float32))
            sampled += take.shape[0]

    masks = getattr(env, "masks", np.ones(rows, bool))
    observe(obs, np.asarray(masks, bool).copy(), 0)
    for step in range(1, steps + 1):
        present = np.asarray(masks, bool).copy()
        env_actions, raw_actions, entropy = actor.act(obs)
        obs, rew, term, trunc, infos = env.step(env_actions)
        done = term | trunc
        actor.episode_ends(done)
        actions.append(np.asarray(raw_actions).reshape(rows, -1)[present])
        if entropy is not None:
            entropies.append(np.asarray(entropy)[present])
        r = np.asarray(rew, np.float64)
        rewards.append(r[present])
        ep_return += np.where(present, r, 0.0)
        ep_length += present
        for i in np.flatnonzero(done):
            returns.append(float(ep_return[i]))
            lengths.append(int(ep_length[i]))
            ep_return[i], ep_length[i] = 0.0, 0
        observe(obs, np.asarray(infos.get("mask", masks), bool).copy(), step)

    mean = np.where(n > 0, total / np.maximum(n, 1), np.nan)
    var = np.where(n > 0, total_sq / np.maximum(n, 1) - mean ** 2, np.nan)
    mode_fraction, mode_value = _modes(np.concatenate(sample) if sample else np.zeros((0, dims)))
    report = DataReport(
        env_name=env.name, policy=label, steps=steps, agent_steps=agent_steps,
        obs_min=np.where(n > 0, vmin, np.nan), obs_max=np.where(n > 0, vmax, np.nan),
        obs_mean=mean, obs_std=np.sqrt(np.maximum(var, 0.0)), obs_nan=nan, obs_inf=inf,
        obs_outside=outside, obs_low=low, obs_high=high, obs_mode_fraction=mode_fraction,
        obs_mode_value=mode_value, first_bad=first_bad,
        rewards=np.concatenate(rewards) if rewards else np.zeros(0),
        episode_returns=returns, episode_lengths=lengths,
        actions=np.concatenate(actions) if actions else None,
        entropy=float(np.concatenate(entropies).mean()) if entropies else None,
        action_space=env.single_action_space)
    if policy is not None:
        space = env.single_action_space
        if isinstance(space, (spaces.Discrete, spaces.MultiDiscrete)):
            nvec = [int(space.n)] if isinstance(space, spaces.Discrete) else \
                [int(k) for k in np.asarray(space.nvec).ravel()]
            report.max_entropy = float(sum(math.log(k) for k in nvec))
    report.findings = find_problems(report)
    return report


def _modes(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column: the fraction of rows at the most common value, and that value."""
    dims = x.shape[1]
    frac, value = np.zeros(dims), np.full(dims, np.nan)
    if not x.shape[0]:
        return frac, value
    s = np.sort(x, axis=0)
    # run lengths of equal values down each sorted column; NaNs sort last and never equal
    change = np.ones((s.shape[0] + 1, dims), bool)
    change[1:-1] = s[1:] != s[:-1]
    for d in range(dims):
        edges = np.flatnonzero(change[:, d])
        runs = np.diff(edges)
        k = int(np.argmax(runs))
        frac[d] = runs[k] / s.shape[0]
        value[d] = s[edges[k], d]
    return frac, value


def _ranges(dims: list[int]) -> str:
    """[3, 4, 5, 9] -> 'obs[3..5], obs[9]'."""
    parts, start = [], None
    for i, d in enumerate(dims):
        if start is None:
            start = d
        if i + 1 == len(dims) or dims[i + 1] != d + 1:
            parts.append(f"obs[{start}]" if start == d else f"obs[{start}..{d}]")
            start = None
    return ", ".join(parts)


def _group_by_value(dims: np.ndarray, values: np.ndarray) -> list[tuple[float, list[int]]]:
    groups: dict[float, list[int]] = {}
    for d in dims:
        groups.setdefault(float(values[d]), []).append(int(d))
    return sorted(groups.items(), key=lambda kv: kv[1][0])


def find_problems(r: DataReport) -> list[str]:
    """One sentence per suspicious thing in a report (what it is and where)."""
    found: list[str] = []
    total = max(r.agent_steps, 1)
    who = "under the random policy" if r.policy == "random" else "under the trained policy"
    for kind, counts, word in (("nan", r.obs_nan, "NaN"), ("inf", r.obs_inf, "infinite")):
        for d in np.flatnonzero(counts)[:10]:
            step, row, _ = r.first_bad.get(kind, (0, 0, d))
            found.append(f"obs[{d}] is {word} in {100 * counts[d] / total:.3g}% of steps "
                         f"(first at step {step}, agent row {row}): the policy cannot learn from "
                         f"it; find where the env computes it")
    for d in np.flatnonzero(r.obs_outside)[:10]:
        worst = r.obs_max[d] if r.obs_max[d] > r.obs_high[d] else r.obs_min[d]
        found.append(f"obs[{d}] leaves its declared space [{r.obs_low[d]:.4g}, "
                     f"{r.obs_high[d]:.4g}] in {100 * r.obs_outside[d] / total:.3g}% of steps "
                     f"(reaches {worst:.4g}): fix the env or its observation_space")
    healthy = (r.obs_nan == 0) & (r.obs_inf == 0)
    constant = np.flatnonzero(healthy & (r.obs_min == r.obs_max))
    for value, dims in _group_by_value(constant, r.obs_min):
        label = _ranges(dims)
        verb = "is" if len(dims) == 1 else f"({len(dims)} dims) are"
        found.append(f"{label} {verb} constant {value:.4g} in 100% of steps {who}: the policy "
                     f"learns nothing from {'it' if len(dims) == 1 else 'them'}")
    nearly = np.flatnonzero(healthy & (r.obs_min != r.obs_max) & (r.obs_mode_fraction >= 0.99))
    for value, dims in _group_by_value(nearly, r.obs_mode_value)[:5]:
        frac = min(r.obs_mode_fraction[d] for d in dims)
        verb = "is" if len(dims) == 1 else f"({len(dims)} dims) are"
        found.append(f"{_ranges(dims)} {verb} {value:.4g} in at least {100 * frac:.3g}% of "
                     f"sampled steps {who}")
    unbounded = ~np.isfinite(r.obs_low) | ~np.isfinite(r.obs_high)
    big = np.flatnonzero(unbounded & healthy & (np.maximum(np.abs(r.obs_min), np.abs(r.obs_max))
                                                > 10.0))
    for d in big[:10]:
        mag = max(abs(r.obs_min[d]), abs(r.obs_max[d]))
        found.append(f"obs[{d}] reaches {mag:.4g} in magnitude and its space is unbounded, so "
                     f"the policy sees it unscaled: scale it to about [-1, 1] or declare its "
                     f"bounds")
    rew = r.rewards
    if rew.size:
        bad = ~np.isfinite(rew)
        if bad.any():
            found.append(f"the reward is NaN or infinite in {100 * bad.mean():.3g}% of steps")
        nonzero = float(np.mean(rew[~bad] != 0)) if (~bad).any() else 0.0
        if nonzero == 0.0:
            found.append(f"the reward is 0 in 100% of {rew.size} agent steps {who}: there is "
                         f"nothing to learn from (a reward bug, or raise --steps)")
        elif nonzero < 0.01:
            found.append(f"the reward is non-zero in only {100 * nonzero:.3g}% of agent steps "
                         f"{who}: very sparse")
        finite = rew[~bad]
        if finite.size and np.abs(finite).max() > 100:
            found.append(f"rewards reach {np.abs(finite).max():.4g} in magnitude: large "
                         f"rewards make value learning unstable; scale them down")
    if not r.episode_returns:
        found.append(f"no episode finished in {r.steps} steps {who}: check that the env sets "
                     f"terminals/truncations (or raise --steps)")
    elif len(r.episode_lengths) >= 3 and len(set(r.episode_lengths)) == 1:
        found.append(f"every episode ({len(r.episode_lengths)}) lasted exactly "
                     f"{r.episode_lengths[0]} steps {who}: a time limit, not the task, ends them")
    if r.actions is not None and r.actions.size and r.policy != "random":
        counts = _action_counts(r)
        for dim, freq in enumerate(counts):
            if freq and sum(freq) > 0:
                top = int(np.argmax(freq))
                share = freq[top] / sum(freq)
                if share >= 0.99:
                    where = "" if len(counts) == 1 else f" in action dimension {dim}"
                    found.append(f"the trained policy picks action {top}{where} in "
                                 f"{100 * share:.3g}% of steps")
        if r.entropy is not None and r.max_entropy:
            ratio = r.entropy / r.max_entropy
            if ratio > 0.95:
                found.append(f"the trained policy's entropy {r.entropy:.3g} is {100 * ratio:.3g}% "
                             f"of the uniform policy's {r.max_entropy:.3g}: it acts nearly at "
                             f"random (undertrained, or the observations carry no signal)")
    return found


def _action_counts(r: DataReport) -> list[list[int]]:
    """Per discrete action dimension, the count of each action ([] for continuous spaces)."""
    space, a = r.action_space, r.actions
    if isinstance(space, spaces.Discrete):
        nvec = [int(space.n)]
        a = a.reshape(-1, 1) - int(space.start)
    elif isinstance(space, spaces.MultiDiscrete):
        nvec = [int(k) for k in np.asarray(space.nvec).ravel()]
    else:
        return []
    a = a.reshape(a.shape[0], -1).astype(np.int64)
    return [np.bincount(np.clip(a[:, i], 0, k - 1), minlength=k).tolist()
            for i, k in enumerate(nvec)]


# ---- plots and HTML ----

def _figure(rows: int, cols: int, size: tuple[float, float]) -> Any:
    """A matplotlib Figure on the Agg canvas (no pyplot: no global figure state is touched)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def write_plots(reports: list[DataReport], out_dir: str) -> list[str]:
    """obs.png (per-dimension range and mean +- std), rewards.png (rewards, episode returns and
    lengths) and, with a trained policy, actions.png. Returns the paths written."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise RuntimeError("plots need matplotlib: pip install 'shoal[tools]'") from None
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    colours = ["tab:blue", "tab:orange"]
    dims = len(reports[0].obs_min)
    fig, axes = _figure(len(reports), 1, (max(6.0, min(18.0, 0.12 * dims + 4)),
                                          2.6 * len(reports)))
    for ax, r, colour in zip(axes[:, 0], reports, colours):
        x = np.arange(dims)
        ax.vlines(x, r.obs_min, r.obs_max, colors="lightgray", linewidth=3, label="min..max")
        ax.errorbar(x, r.obs_mean, yerr=r.obs_std, fmt="o", ms=2.5, color=colour, elinewidth=1,
                    label="mean +- std")
        bad = np.flatnonzero((r.obs_nan > 0) | (r.obs_inf > 0) | (r.obs_outside > 0)
                             | (r.obs_min == r.obs_max))
        if bad.size:
            y = np.nan_to_num(r.obs_mean[bad], nan=0.0, posinf=0.0, neginf=0.0)
            ax.plot(bad, y, "x", color="red", ms=6, label="flagged")
        ax.set_title(f"{r.env_name}: observations ({r.policy} policy, {r.agent_steps} agent steps)",
                     fontsize=9)
        ax.set_xlabel("observation dimension")
        ax.legend(fontsize=7, loc="upper right")
    paths.append(os.path.join(out_dir, "obs.png"))
    fig.savefig(paths[-1])

    fig, axes = _figure(1, 3, (12, 3.2))
    for r, colour in zip(reports, colours):
        label = r.policy if r.policy == "random" else "trained"
        rew = r.rewards[np.isfinite(r.rewards)]
        if rew.size:
            axes[0, 0].hist(rew, bins=40, alpha=0.6, color=colour, label=label, log=True)
        if r.episode_returns:
            axes[0, 1].hist(r.episode_returns, bins=30, alpha=0.6, color=colour, label=label)
            axes[0, 2].hist(r.episode_lengths, bins=30, alpha=0.6, color=colour, label=label)
    for ax, title in zip(axes[0], ("reward per step (log count)", "episode return",
                                   "episode length")):
        ax.set_title(title, fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    paths.append(os.path.join(out_dir, "rewards.png"))
    fig.savefig(paths[-1])

    trained = [r for r in reports if r.policy != "random" and r.actions is not None]
    if trained:
        r = trained[0]
        counts = _action_counts(r)
        fig, axes = _figure(1, 1, (max(4.0, min(14.0, 0.3 * sum(map(len, counts)) + 3)), 3))
        ax = axes[0, 0]
        if counts:
            offset = 0
            for dim, freq in enumerate(counts):
                ax.bar(np.arange(offset, offset + len(freq)), np.asarray(freq) / max(sum(freq), 1),
                       label=f"dim {dim}" if len(counts) > 1 else None)
                offset += len(freq) + 1
            ax.set_xlabel("action")
            ax.set_ylabel("fraction of steps")
        else:
            a = r.actions.reshape(r.actions.shape[0], -1)
            for d in range(min(a.shape[1], 8)):
                ax.hist(a[:, d], bins=40, alpha=0.5, label=f"dim {d}")
            ax.set_xlabel("action (raw Gaussian sample)")
        ent = "" if r.entropy is None else f", mean entropy {r.entropy:.3g}"
        ax.set_title(f"trained policy's actions{ent}", fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        paths.append(os.path.join(out_dir, "actions.png"))
        fig.savefig(paths[-1])
    return paths


def write_html(reports: list[DataReport], out_dir: str, images: list[str]) -> str:
    """One HTML file with the findings, the plots (inline PNG data) and every statistic (tables
    and an inline JSON block): it needs no network and no other file."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>shoal inspect "
             f"{html.escape(reports[0].env_name)}</title><style>body{{font-family:sans-serif;"
             f"margin:1.5em;max-width:1200px}}table{{border-collapse:collapse;font-size:12px}}"
             f"td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}"
             f".bad{{background:#fdd}}li{{margin:.2em 0}}img{{max-width:100%}}</style></head>"
             f"<body><h1>shoal inspect: {html.escape(reports[0].env_name)}</h1>"]
    for r in reports:
        s = r.summary()
        parts.append(f"<h2>{html.escape(r.policy)} policy</h2><p>{r.steps} steps, "
                     f"{r.agent_steps} agent steps, {s['episodes']} episodes finished; reward "
                     f"non-zero in {100 * (s['reward']['fraction_nonzero'] or 0):.3g}% of steps; "
                     f"mean episode return {s['episode_return_mean']}, mean length "
                     f"{s['episode_length_mean']}"
                     + (f"; mean entropy {r.entropy:.4g}" if r.entropy is not None else "")
                     + "</p>")
        items = "".join(f"<li>{html.escape(f)}</li>" for f in r.findings) or "<li>nothing suspicious</li>"
        parts.append(f"<ul>{items}</ul>")
    for path in images:
        with open(path, "rb") as fh:
            data = base64.b64encode(fh.read()).decode()
        parts.append(f"<h3>{html.escape(os.path.basename(path))}</h3>"
                     f"<img alt='{html.escape(os.path.basename(path))}' "
                     f"src='data:image/png;base64,{data}'>")
    for r in reports:
        rows = []
        for i in range(len(r.obs_min)):
            flagged = r.obs_nan[i] or r.obs_inf[i] or r.obs_outside[i] or r.obs_min[i] == r.obs_max[i]
            rows.append(f"<tr class='{'bad' if flagged else ''}'><td>{i}</td>"
                        f"<td>{r.obs_min[i]:.4g}</td><td>{r.obs_max[i]:.4g}</td>"
                        f"<td>{r.obs_mean[i]:.4g}</td><td>{r.obs_std[i]:.4g}</td>"
                        f"<td>{r.obs_nan[i]}</td><td>{r.obs_inf[i]}</td><td>{r.obs_outside[i]}</td>"
                        f"<td>{r.obs_low[i]:.4g}..{r.obs_high[i]:.4g}</td></tr>")
        parts.append(f"<details><summary>per-dimension statistics ({html.escape(r.policy)} "
                     f"policy)</summary><table><tr><th>dim</th><th>min</th><th>max</th>"
                     f"<th>mean</th><th>std</th><th>NaN</th><th>inf</th><th>outside space</th>"
                     f"<th>space</th></tr>{''.join(rows)}</table></details>")
    data = json.dumps([r.summary() for r in reports]).replace("</", "<\\/")
    parts.append(f"<script type='application/json' id='data'>{data}</script></body></html>")
    path = os.path.join(out_dir, "report.html")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("".join(parts))
    return path


def format_report(reports: list[DataReport]) -> str:
    """The short text report: a line of numbers and the findings of each policy."""
    lines = []
    for r in reports:
        s = r.summary()
        rew = s["reward"]
        lines.append(f"{r.env_name}, {r.policy} policy: {r.steps} steps ({r.agent_steps} agent "
                     f"steps), {s['episodes']} episodes")
        if rew["mean"] is not None:
            lines.append(f"  reward mean {rew['mean']:.4g}, range [{rew['min']:.4g}, "
                         f"{rew['max']:.4g}], non-zero in {100 * rew['fraction_nonzero']:.3g}% "
                         f"of steps")
        if r.episode_returns:
            lines.append(f"  episode return mean {np.mean(r.episode_returns):.4g} (min "
                         f"{np.min(r.episode_returns):.4g}, max {np.max(r.episode_returns):.4g}), "
                         f"length mean {np.mean(r.episode_lengths):.4g}")
        if r.entropy is not None:
            lines.append(f"  action entropy {r.entropy:.4g}"
                         + (f" (uniform: {r.max_entropy:.4g})" if r.max_entropy else ""))
        if "action_counts" in s:
            for dim, freq in enumerate(s["action_counts"]):
                total = max(sum(freq), 1)
                shares = "  ".join(f"{a}:{100 * c / total:.0f}%" for a, c in enumerate(freq[:16]))
                lines.append(f"  actions{'' if len(s['action_counts']) == 1 else f' dim {dim}'}: "
                             f"{shares}")
        for f in r.findings or ["nothing suspicious found"]:
            lines.append(f"  - {f}")
    return "\n".join(lines)


def inspect_env(env_name: str, params: dict[str, Any] | None = None,
                checkpoint: str | None = None, steps: int = 1000, num_envs: int = 8,
                seed: int = 0, out_dir: str | None = None) -> list[DataReport]:
    """Collects a report under the random policy and, with ``checkpoint`` (a run directory or
    checkpoint file), under the trained one; writes plots and report.html to ``out_dir`` when
    given. With a checkpoint the env gets the checkpoint's parameters."""
    from .runs import PolicyStepper, load_run, make_run_env

    run = None
    if checkpoint is not None:
        run = load_run(checkpoint)
        if env_name and env_name != run.env_name:
            raise ValueError(f"{run.checkpoint['path']} was trained on '{run.env_name}', not "
                             f"'{env_name}'")
        env_name = run.env_name
        if params:
            raise ValueError("env parameters come from the checkpoint: drop the --PARAM flags")
        params = run.env_params
    reports = []
    for trained in ([False, True] if run is not None else [False]):
        env = make_run_env(env_name, params or {}, num_envs, seed)
        try:
            stepper = PolicyStepper(run.checkpoint, env, seed=seed) if trained else None
            label = run.checkpoint["path"] if trained else "random"
            reports.append(collect(env, steps, stepper, seed, label))
        finally:
            env.close()
    if out_dir is not None:
        images = write_plots(reports, out_dir)
        write_html(reports, out_dir, images)
    return reports


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``shoal inspect``."""
    from .bench import parse_env_params

    parser = argparse.ArgumentParser(prog="shoal inspect", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("env", nargs="?", default=None,
                        help="env name (C env, gym:ID, pz:MODULE.ENV); optional with --checkpoint")
    parser.add_argument("--checkpoint", help="run directory or checkpoint: also inspect the "
                                             "trained policy")
    parser.add_argument("--steps", type=int, default=1000, help="steps per policy (default 1000)")
    parser.add_argument("--num-envs", type=int, default=8, help="env copies (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="env and action seed")
    parser.add_argument("-o", "--out", help="directory for the plots and report.html "
                                            "(default inspect-<env>)")
    parser.add_argument("--no-plots", action="store_true", help="print the report only")
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON")
    args, extra = parser.parse_known_args(argv)

    from ..trainer.checkpoint import CheckpointError

    try:
        params = parse_env_params(extra)
        if args.env is None and args.checkpoint is None:
            raise ValueError("name an env (shoal inspect breakout) or pass --checkpoint RUN")
        label = args.env or "run"
        out = None if args.no_plots else (
            args.out or "inspect-" + "".join(c if c.isalnum() or c in "-_." else "-" for c in label))
        reports = inspect_env(args.env, params, args.checkpoint, args.steps, args.num_envs,
                              args.seed, out)
    except (CheckpointError, ValueError, TypeError, ImportError, RuntimeError) as exc:
        print(f"shoal inspect: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([r.summary() for r in reports]))
    else:
        print(format_report(reports))
        if out:
            print(f"plots and report.html in {out}/")
    return 0
