"""shoal watch: terminal frames and GIF/MP4 recordings of a checkpoint's policy, on C and Python
envs, and `shoal train --log.video`."""

from __future__ import annotations

import io
import os
import re

import gymnasium
import numpy as np
import pytest

from shoal.tools import watch
from tools_runs import write_run

pytestmark = pytest.mark.usefixtures("one_torch_thread")

imageio = pytest.importorskip("imageio.v3", reason="recording needs imageio (pip install "
                                                   "'shoal[tools]')")


def test_terminal_frames_show_text_render_step_probabilities_and_value(tmp_path):
    run = write_run(str(tmp_path / "run"), "breakout")
    out = io.StringIO()
    shown = watch.show(watch.play(run, episodes=1, max_steps=5), "breakout", 1, fps=0, out=out)
    text = out.getvalue()
    assert shown == 6                                   # the reset frame + one per step
    assert text.count("breakout  episode 1/1  step") == 6
    assert "step 5" in text and "bricks left" in text   # breakout's own text render
    probs = [line for line in text.splitlines() if line.startswith("action ")]
    assert len(probs) == 5
    shares = [float(p) for p in re.findall(r"\b\d+:(\d\.\d+)", probs[0])]
    assert len(shares) == 3 and abs(sum(shares) - 1) < 0.02      # breakout's 3 actions
    assert "\x1b[" not in text                          # not a terminal: no cursor codes


def test_gif_of_a_c_env_decodes_with_one_frame_per_step(tmp_path):
    run = write_run(str(tmp_path / "run"), "breakout")
    gif = str(tmp_path / "b.gif")
    result = watch.record(run, gif, episodes=5, fps=20, max_steps=40)
    assert result["frames"] == 41
    frames = imageio.imread(gif)
    assert frames.shape[0] == 41 and frames.shape[-1] == 3
    assert frames.std() > 0                             # not a blank image
    assert not np.array_equal(frames[0], frames[-1])    # the ball moved


def test_python_env_rgb_frames_to_gif_and_mp4(tmp_path):
    pytest.importorskip("imageio_ffmpeg", reason="MP4 needs imageio-ffmpeg")
    run = write_run(str(tmp_path / "run"), "gym:CartPole-v1")
    paths = [str(tmp_path / "c.gif"), str(tmp_path / "c.mp4")]
    result = watch.record(run, paths, episodes=2, max_steps=30, seed=3)
    gif = imageio.imread(paths[0])
    # Pillow merges a frame identical to the one before (a cart move under a pixel) into it,
    # lengthening its duration; the MP4 below keeps every frame
    assert 2 < gif.shape[0] <= result["frames"]
    assert gif.shape[1:] == (400, 600, 3)               # CartPole's own rgb_array frame
    from imageio import v2 as imageio_v2

    mp4 = imageio_v2.mimread(paths[1], format="FFMPEG")
    assert len(mp4) == result["frames"] and mp4[0].shape == (400, 600, 3)
    assert 1 <= len(result["scores"]) <= 2            # CartPole episodes ended and were scored


def test_python_env_without_ansi_is_drawn_from_its_rgb_frames(tmp_path):
    run = write_run(str(tmp_path / "run"), "gym:CartPole-v1")
    frames = list(watch.play(run, episodes=1, max_steps=3))
    assert len(frames) == 4 and all(isinstance(f.image, np.ndarray) for f in frames)
    text = watch.rgb_to_text(frames[0].image, columns=60)
    assert len(text.splitlines()) == -(-400 // 10 // 2)  # 600 px -> 60 columns, 2 rows a line
    assert "\u2580" in text


class NoRender(gymnasium.Env):
    metadata = {"render_modes": ["human"]}
    observation_space = gymnasium.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gymnasium.spaces.Discrete(2)

    def __init__(self, render_mode=None):
        self.render_mode = render_mode

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 0.0, False, False, {}


gymnasium.register("ShoalNoRender-v0", entry_point=NoRender)


def test_env_that_renders_neither_mode_is_a_clear_error(tmp_path):
    run = write_run(str(tmp_path / "run"), "gym:test_tools_watch:ShoalNoRender-v0")
    with pytest.raises(watch.WatchError, match=r"render modes \['human'\].*needs ansi or "
                                               r"rgb_array.*Fix"):
        next(watch.play(run))
    assert watch.main([run, "--gif", str(tmp_path / "x.gif")]) == 2


def test_bad_arguments_are_errors_not_crashes(tmp_path, capsys):
    run = write_run(str(tmp_path / "run"), "breakout")
    assert watch.main([run, "--gif", str(tmp_path / "x.avi")]) == 2
    assert "recordings are .gif or .mp4" in capsys.readouterr().err
    assert watch.main([str(tmp_path / "nothing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert watch.main([run, "--episodes", "0"]) == 2


def test_train_log_video_records_a_gif_per_checkpoint(tmp_path):
    from shoal.trainer.cli import main as train_main

    run = tmp_path / "run"
    assert train_main(["breakout", "--train.total-steps", "4096", "--env.num-envs", "16",
                       "--train.minibatch-size", "512", "--log.checkpoint-interval", "2",
                       "--log.video", "true", "--log.video-steps", "12",
                       "--log.dashboard", "off", "--run-dir", str(run)]) == 0
    gifs = sorted(os.listdir(run / "videos"))
    assert gifs == ["checkpoint_0000002.gif", "checkpoint_0000004.gif"]
    assert imageio.imread(run / "videos" / gifs[-1]).shape[0] == 13
