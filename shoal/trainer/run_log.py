"""A run's logging glue around the PPO loop: the run directory's name, episode statistics merged
across ``env.log()`` calls, the one-line summary printed at the end, and the optional TensorBoard
and W&B writers that receive every epoch's metrics (``metrics.jsonl`` and the dashboard are
written by :meth:`Trainer.train <shoal.trainer.ppo.Trainer.train>` itself).
"""

from __future__ import annotations

import os
import re
from typing import Any, Callable, Mapping

from .config import Config, ConfigError

__all__ = ["run_dir_label", "merge_log", "summary_line", "extra_loggers"]


def run_dir_label(env_name: str) -> str:
    """``env_name`` as one safe path component for ``runs/<label>-<timestamp>``.

    C env names are kept as they are (``breakout``); in Python env names every run of characters
    other than letters, digits, ``.``, ``_`` and ``-`` becomes one ``-``, so ``gym:ALE/Pong-v5``
    gives ``gym-ALE-Pong-v5`` (no nested directories, no colons) and
    ``pz:pettingzoo.butterfly.pistonball_v6`` gives ``pz-pettingzoo.butterfly.pistonball_v6``.
    """
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", str(env_name or "")).strip("-.")
    return label or "env"


def merge_log(total: dict[str, float], stats: Mapping[str, float]) -> None:
    """Adds ``env.log()`` means (with their count ``n``) into running means."""
    n = float(stats.get("n", 0.0))
    if n <= 0:
        return
    old = float(total.get("n", 0.0))
    for key, value in stats.items():
        if key == "n":
            continue
        total[key] = (total.get(key, 0.0) * old + float(value) * n) / (old + n)
    total["n"] = old + n


def summary_line(s: Mapping[str, Any]) -> str:
    score = "n/a" if s.get("score") is None else f"{s['score']:.3f}"
    state = "done" if s.get("finished") else "stopped"
    note = f"\n  note: {s['resume_note']}" if s.get("resume_note") else ""
    return (f"{state}: {s['env']}  {s['agent_steps']:,} steps in {s['wall_seconds']:.1f}s "
            f"({s['sps']:,.0f} steps/s)  score {score} over the last 100 of {s['episodes']:,} "
            f"episodes  -> {s['run_dir']}{note}")


def _flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}/{k}" if prefix else k, v, out)
    elif isinstance(value, (int, float)) and value is not None:
        out[prefix] = float(value)


def extra_loggers(config: Config, run_dir: str) -> list[Callable[[dict], None]]:
    """TensorBoard and W&B writers when enabled (both off by default)."""
    writers: list[Any] = []
    if config.log.tensorboard:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("log.tensorboard=true needs the tensorboard package: "
                              "pip install tensorboard") from None
        tb = SummaryWriter(os.path.join(run_dir, "tensorboard"))

        class _TB:
            def __call__(self, m: dict) -> None:
                flat: dict[str, float] = {}
                _flatten("", m, flat)
                for k, v in flat.items():
                    tb.add_scalar(k, v, m["agent_steps"])

            def close(self) -> None:
                tb.close()

        writers.append(_TB())
    if config.log.wandb:
        try:
            import wandb
        except ImportError:
            raise ConfigError("log.wandb=true needs the wandb package: pip install wandb") from None
        run = wandb.init(project=config.log.wandb_project, config=config.to_dict(),
                         dir=run_dir, name=os.path.basename(run_dir))

        class _WB:
            def __call__(self, m: dict) -> None:
                flat: dict[str, float] = {}
                _flatten("", m, flat)
                run.log(flat, step=m["agent_steps"])

            def close(self) -> None:
                run.finish()

        writers.append(_WB())
    return writers
