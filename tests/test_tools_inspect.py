"""shoal inspect: planted problems in a custom env are named; the trained policy's actions and
entropy are reported; the plots and the offline HTML file are written."""

from __future__ import annotations

import json
import os
import re

import gymnasium
import numpy as np
import pytest

from shoal.tools import inspect_cmd
from tools_runs import write_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class PlantedEnv(gymnasium.Env):
    """obs[0], obs[1]: healthy noise; obs[2]: constant 0.25; obs[3]: NaN every 40th step;
    obs[4]: 3.0 (outside the declared [-1, 1]) every 25th step. Reward 1 with probability 0.1."""

    observation_space = gymnasium.spaces.Box(-1.0, 1.0, (5,), np.float32)
    action_space = gymnasium.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        self.length = int(self.np_random.integers(20, 60))
        return self._obs(), {}

    def _obs(self):
        o = self.np_random.uniform(-1, 1, 5).astype(np.float32)
        o[2] = 0.25
        if self.t % 40 == 39:
            o[3] = np.nan
        if self.t % 25 == 24:
            o[4] = 3.0
        return o

    def step(self, action):
        self.t += 1
        reward = float(self.np_random.random() < 0.1)
        return self._obs(), reward, self.t >= self.length, False, {}


gymnasium.register("ShoalPlanted-v0", entry_point=PlantedEnv)
PLANTED = "gym:test_tools_inspect:ShoalPlanted-v0"


def test_planted_constant_nan_and_out_of_space_values_are_named(tmp_path):
    reports = inspect_cmd.inspect_env(PLANTED, steps=400, num_envs=4, seed=1,
                                      out_dir=str(tmp_path / "out"))
    assert len(reports) == 1
    r = reports[0]
    text = "\n".join(r.findings)
    assert "obs[2] is constant 0.25 in 100% of steps" in text
    assert re.search(r"obs\[3\] is NaN in \d+\.\d+% of steps \(first at step \d+", text)
    assert re.search(r"obs\[4\] leaves its declared space \[-1, 1\] in \d+\.\d+% of steps "
                     r"\(reaches 3\)", text)
    assert "obs[0]" not in text and "obs[1]" not in text      # healthy dims are not flagged
    assert r.obs_nan.tolist() == [0, 0, 0, r.obs_nan[3], 0] and r.obs_nan[3] > 0
    assert r.obs_outside.tolist() == [0, 0, 0, 0, r.obs_outside[4]] and r.obs_outside[4] > 0
    assert np.isfinite(r.obs_mean[3])                         # NaNs are counted, not averaged
    assert abs(r.obs_mean[0]) < 0.1 and 0.5 < r.obs_std[0] < 0.65   # uniform(-1, 1)
    assert 0.07 < np.mean(r.rewards != 0) < 0.13
    assert len(r.episode_returns) > 20 and 20 <= min(r.episode_lengths) <= max(r.episode_lengths) < 60


def test_plots_and_html_are_written_and_self_contained(tmp_path):
    out = tmp_path / "out"
    assert inspect_cmd.main([PLANTED, "--steps", "200", "--num-envs", "2", "-o", str(out)]) == 0
    assert sorted(os.listdir(out)) == ["obs.png", "report.html", "rewards.png"]
    for png in ("obs.png", "rewards.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 2
    assert not re.search(r"(src|href)=['\"]?(https?:)?//", page)    # nothing fetched
    data = json.loads(re.search(r"<script type='application/json' id='data'>(.*?)</script>",
                                page, re.S).group(1))
    assert data[0]["obs"][3]["nan"] > 0 and "obs[2] is constant 0.25" in " ".join(
        data[0]["findings"])


def test_checkpoint_adds_the_trained_policy_with_actions_and_entropy(tmp_path, capsys):
    run = write_run(str(tmp_path / "run"), "breakout", hidden=16)
    out = tmp_path / "out"
    assert inspect_cmd.main(["breakout", "--checkpoint", run, "--steps", "100",
                             "--num-envs", "2", "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert "breakout, random policy" in text and "checkpoint_0000001.pt policy" in text
    assert re.search(r"action entropy 1\.0\d+ \(uniform: 1\.099\)", text)   # untrained: ~uniform
    assert re.search(r"actions: 0:\d+%  1:\d+%  2:\d+%", text)
    assert "acts nearly at random" in text
    assert "actions.png" in os.listdir(out)


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    assert inspect_cmd.main(["no_such_env", "--no-plots"]) == 2
    assert "unknown env 'no_such_env'" in capsys.readouterr().err
    run = write_run(str(tmp_path / "run"), "breakout", hidden=16)
    assert inspect_cmd.main(["maze", "--checkpoint", run, "--no-plots"]) == 2
    assert "was trained on 'breakout', not 'maze'" in capsys.readouterr().err
    assert inspect_cmd.main(["breakout", "--steps", "0", "--no-plots"]) == 2
    assert inspect_cmd.main([]) == 2
