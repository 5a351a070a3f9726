"""A sweep's results: the table of best trials, the Pareto front, parameter importances (PNG and
one offline HTML file) and the best config as a TOML that ``shoal train`` runs as it is."""

from __future__ import annotations

import html
import json
import os
from typing import Any

from ..trainer.config import build_config, to_toml
from .space import SearchSpace
from .study import SweepSettings, real_trials

__all__ = ["pareto_front", "best_trials", "write_report", "format_table"]


def _observations(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.values is not None]


def pareto_front(points: list[tuple[float, float, Any]]) -> list[tuple[float, float, Any]]:
    """The (score, cost, item) points that no other point beats on both (higher score, lower
    cost), sorted by cost."""
    front: list[tuple[float, float, Any]] = []
    best = -float("inf")
    for score, cost, item in sorted(points, key=lambda p: (p[1], -p[0])):
        if score > best:
            front.append((score, cost, item))
            best = score
    return front


def best_trials(study: Any, n: int = 10) -> list[Any]:
    """Completed runs, highest score first (lower cost breaks ties)."""
    from optuna.trial import TrialState

    done = real_trials(study, (TrialState.COMPLETE,))
    return sorted(done, key=lambda t: (-t.values[0], t.values[1]))[:n]


def format_table(study: Any, space: SearchSpace, n: int = 10) -> str:
    """The best runs as a text table: number, score, cost, steps and the searched values."""
    from optuna.trial import TrialState

    trials = best_trials(study, n)
    counts = {s.name.lower(): len(real_trials(study, (s,))) for s in
              (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)}
    head = ["trial", "score", "cost_s", "steps"] + [d.key.split(".", 1)[1] for d in
                                                    space.dimensions]
    rows = [head]
    for t in trials:
        values = space.overrides(t.params)
        rows.append([str(t.number), f"{t.values[0]:.4g}", f"{t.values[1]:.1f}",
                     f"{t.user_attrs.get('agent_steps', 0):,}"] +
                    [_fmt(values.get(d.key)) for d in space.dimensions])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    summary = ", ".join(f"{v} {k}" for k, v in counts.items())
    return f"study '{study.study_name}': {summary}\n" + "\n".join(lines)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _importances(study: Any) -> dict[str, float]:
    """fANOVA importances of the searched keys for the score (empty when too few runs)."""
    import optuna

    try:
        return optuna.importance.get_param_importances(study, target=lambda t: t.values[0])
    except (RuntimeError, ValueError, ZeroDivisionError):
        return {}


def best_config_toml(s: SweepSettings, space: SearchSpace, trial: Any) -> str:
    """The best run's config as TOML for ``shoal train ENV --config best.toml``."""
    overrides = dict(s.overrides)
    overrides.update(space.overrides(trial.params))
    cfg = build_config(s.env, s.files, overrides)
    cfg.log.run_dir = ""
    cfg.log.dashboard = "auto"
    head = [f"# Best trial of study '{s.study}' ({s.storage}): trial {trial.number}, score "
            f"{trial.values[0]:.4g} after {trial.values[1]:.0f} s of training.",
            f"# Run it: shoal train {s.env} --config best.toml",
            "# Searched: " + ", ".join(f"{k} = {_fmt(v)}" for k, v in
                                       space.overrides(trial.params).items()), ""]
    return "\n".join(head) + to_toml(cfg)


def write_report(s: SweepSettings, space: SearchSpace, study: Any) -> dict[str, str]:
    """Writes best.toml, pareto.png, importance.png and report.html into ``s.out_dir``;
    returns their paths (a plot is left out when there is nothing to draw)."""
    os.makedirs(s.out_dir, exist_ok=True)
    out: dict[str, str] = {}
    best = best_trials(study, 1)
    if best:
        path = os.path.join(s.out_dir, "best.toml")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(best_config_toml(s, space, best[0]))
        out["best"] = path
    points = [(t.values[0], t.values[1], t) for t in _observations(study)]
    front = pareto_front(points)
    importances = _importances(study)
    out.update(_png(s.out_dir, points, front, importances))
    out["html"] = _html(s, space, study, points, front, importances)
    with open(os.path.join(s.out_dir, "front.json"), "w", encoding="utf-8") as fh:
        json.dump([{"score": sc, "cost_s": c, "trial": t.user_attrs.get("curve_point_of",
                                                                        t.number),
                    "params": space.overrides(t.params)} for sc, c, t in front], fh, indent=1)
    return out


def _png(out_dir: str, points: list, front: list, importances: dict[str, float]
         ) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure   # no pyplot: no global figure state

    out: dict[str, str] = {}
    if points:
        fig = Figure(figsize=(7, 4.5))
        ax = fig.subplots()
        runs = [p for p in points if "curve_point_of" not in p[2].user_attrs]
        curve = [p for p in points if "curve_point_of" in p[2].user_attrs]
        ax.scatter([p[1] for p in curve], [p[0] for p in curve], s=12, c="0.7",
                   label="points of curves")
        ax.scatter([p[1] for p in runs], [p[0] for p in runs], s=24, c="tab:blue",
                   label="runs (end)")
        ax.step([p[1] for p in front], [p[0] for p in front], where="post", c="tab:red",
                label="Pareto front")
        ax.set_xlabel("cost: training seconds")
        ax.set_ylabel("score")
        ax.legend(loc="lower right")
        ax.grid(alpha=0.3)
        path = os.path.join(out_dir, "pareto.png")
        fig.savefig(path, dpi=110, bbox_inches="tight")
        out["pareto_png"] = path
    if importances:
        fig = Figure(figsize=(7, 0.4 * len(importances) + 1.2))
        ax = fig.subplots()
        names = list(importances)[::-1]
        ax.barh(names, [importances[n] for n in names], color="tab:blue")
        ax.set_xlabel("importance for the score (fANOVA)")
        path = os.path.join(out_dir, "importance.png")
        fig.savefig(path, dpi=110, bbox_inches="tight")
        out["importance_png"] = path
    return out


def _html(s: SweepSettings, space: SearchSpace, study: Any, points: list, front: list,
          importances: dict[str, float]) -> str:
    """One self-contained HTML file (plotly.js inlined once: it opens offline)."""
    import plotly.graph_objects as go
    from plotly.offline import get_plotlyjs

    def label(t: Any) -> str:
        src = t.user_attrs.get("curve_point_of")
        name = f"trial {t.number}" if src is None else f"trial {src} (curve point)"
        return name + "<br>" + "<br>".join(f"{k}={_fmt(v)}" for k, v in
                                           space.overrides(t.params).items())

    figs = []
    fig = go.Figure()
    fig.add_scatter(x=[p[1] for p in points], y=[p[0] for p in points], mode="markers",
                    name="observations", text=[label(p[2]) for p in points], hoverinfo="text+x+y")
    fig.add_scatter(x=[p[1] for p in front], y=[p[0] for p in front], mode="lines+markers",
                    line_shape="hv", name="Pareto front", text=[label(p[2]) for p in front],
                    hoverinfo="text+x+y")
    fig.update_layout(title="score against cost", xaxis_title="training seconds",
                      yaxis_title="score")
    figs.append(fig)
    if importances:
        names = list(importances)[::-1]
        figs.append(go.Figure(go.Bar(x=[importances[n] for n in names], y=names,
                                     orientation="h")).update_layout(
            title="parameter importances for the score (fANOVA)"))
    curves = go.Figure()
    for t in real_trials(study):
        c = t.user_attrs.get("curve") or []
        if c:
            curves.add_scatter(x=[p[0] for p in c], y=[p[2] for p in c], mode="lines",
                               name=f"{t.number} ({t.state.name.lower()})")
    curves.update_layout(title="curves: score against training seconds",
                         xaxis_title="training seconds", yaxis_title="score")
    figs.append(curves)
    body = "\n".join(f.to_html(full_html=False, include_plotlyjs=False) for f in figs)
    table = html.escape(format_table(study, space, 20))
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>shoal sweep "
            f"{html.escape(s.study)}</title><script>{get_plotlyjs()}</script></head><body>"
            f"<h1>shoal sweep: {html.escape(s.env)} ({html.escape(s.study)})</h1>"
            f"<pre>{table}</pre>{body}</body></html>")
    path = os.path.join(s.out_dir, "report.html")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(page)
    return path
