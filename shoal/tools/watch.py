"""``shoal watch``: play a trained policy on its env, in the terminal or into a GIF/MP4.

    shoal watch RUN_DIR_OR_CHECKPOINT [--episodes N] [--fps F] [--greedy]
                [--gif PATH] [--mp4 PATH] [--max-steps N] [--seed S]

In a terminal the env's text render is redrawn in place, with the score, the step, the
policy's action probabilities and its value estimate. ``--gif`` / ``--mp4`` record the env's
RGB frames instead (imageio with Pillow for GIF, imageio-ffmpeg's bundled ffmpeg for MP4).

C envs render both ways. A Python env (``gym:ID``, ``pz:MODULE.ENV``) is made with the render
mode it declares: ``ansi`` text for the terminal (or its ``rgb_array`` frames drawn with
coloured half-block characters), ``rgb_array`` for recordings; an env that declares neither is
an error saying so.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Iterator, TextIO

import numpy as np

from .runs import PolicyStepper, RunEnv, load_run, make_run_env, python_render_modes

__all__ = ["Frame", "WatchError", "play", "record", "write_video", "rgb_to_text", "main"]


class WatchError(ValueError):
    """An env that cannot be shown the way asked, or a bad argument; the message says the fix."""


@dataclass
class Frame:
    """One frame of a watched episode: env 0 after ``step`` steps of episode ``episode``."""

    episode: int
    step: int
    image: Any                    #: str (text render) or HxWx3 uint8 (RGB render)
    probs: np.ndarray | None      #: agent 0's action probabilities (Gaussian mean for Box)
    value: float | None           #: agent 0's value estimate
    reward: float                 #: agent 0's reward on this step
    episode_return: float         #: agent 0's summed reward so far in this episode
    score: float | None           #: the last finished episode's score (env.log()), if any
    action: Any = None            #: agent 0's action on this step
    ended: bool = False           #: agent 0's episode ended on this step


def _render_mode_for(env: Any, want: str) -> str:
    """How to get ``want`` ("ansi" text or "rgb_array") from a Python env: the mode to make it
    with. C envs (None) render both."""
    modes = python_render_modes(env)
    if modes is None:
        return want
    if want in modes:
        return want
    if want == "ansi" and "rgb_array" in modes:
        return "rgb_array"          # drawn as half-block characters
    need = "rgb_array" if want == "rgb_array" else "ansi or rgb_array"
    raise WatchError(
        f"{env.name} declares render modes {modes or 'none'} (metadata['render_modes']): "
        f"watching it needs {need}. Fix: give the env a render() for render_mode='rgb_array' "
        f"(a HxWx3 uint8 frame) or 'ansi' (a string), and list it in metadata['render_modes']")


def play(run: RunEnv | str, episodes: int = 1, greedy: bool = False, seed: int = 0,
         mode: str = "ansi", max_steps: int = 100_000) -> Iterator[Frame]:
    """Plays ``episodes`` episodes of env 0 with a checkpoint's policy, yielding each frame
    (the first one after reset, then one per step). ``mode`` is ``"ansi"`` (text, or RGB frames
    of Python envs that only render those) or ``"rgb_array"``. Stops after ``max_steps`` steps.
    """
    if mode not in ("ansi", "rgb_array"):
        raise WatchError(f"mode must be 'ansi' or 'rgb_array', got {mode!r}")
    if episodes < 1:
        raise WatchError(f"--episodes must be >= 1, got {episodes}")
    if isinstance(run, str):
        run = load_run(run)
    probe = make_run_env(run.env_name, run.env_params, 1, seed)
    try:
        render_mode = _render_mode_for(probe, mode)
        python_env = python_render_modes(probe) is not None
    finally:
        probe.close()
    env = make_run_env(run.env_name, run.env_params, 1, seed,
                       render_mode=render_mode if python_env else None)
    try:
        stepper = PolicyStepper(run.checkpoint, env, greedy=greedy, seed=seed)
        obs, _ = env.reset(seed)
        episode, step, ret, score = 1, 0, 0.0, None
        yield Frame(episode, step, _render(env, render_mode), None, None, 0.0, ret, score)
        total = 0
        while episode <= episodes and total < max_steps:
            decision = stepper.act(obs)
            obs, rewards, terminals, truncations, _ = env.step(decision.env_actions)
            done = terminals | truncations
            stepper.episode_ends(done)
            step += 1
            total += 1
            ret += float(rewards[0])
            stats = env.log()
            if stats.get("n", 0) > 0:
                score = float(stats.get("score", stats.get("episode_return", ret)))
            ended = bool(done[0])
            if ended and score is None:
                score = ret
            yield Frame(episode, step, _render(env, render_mode), decision.probs[0],
                        float(decision.values[0]), float(rewards[0]), ret, score,
                        decision.actions[0], ended)
            if ended:
                episode, step, ret = episode + 1, 0, 0.0
    finally:
        env.close()


def _render(env: Any, mode: str) -> Any:
    frame = env.render(mode)
    if frame is None:
        raise WatchError(f"{env.name}: render() returned None in render_mode {mode!r}: the env "
                         f"must return a frame (rgb_array) or a string (ansi)")
    if mode == "rgb_array":
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] not in (3, 4) or frame.dtype != np.uint8:
            raise WatchError(f"{env.name}: an rgb_array frame must be HxWx3 uint8, got "
                             f"{frame.dtype}{list(frame.shape)}")
        frame = frame[:, :, :3]
    return frame


def rgb_to_text(rgb: np.ndarray, columns: int = 80) -> str:
    """An RGB frame as terminal text: one upper-half-block character per two pixel rows, in
    24-bit colour, scaled down to at most ``columns`` characters wide."""
    h, w = rgb.shape[:2]
    step = max(1, -(-w // columns))
    small = rgb[::step, ::step, :3]
    if small.shape[0] % 2:
        small = np.concatenate([small, np.zeros_like(small[:1])], 0)
    lines = []
    for y in range(0, small.shape[0], 2):
        top, bottom = small[y], small[y + 1]
        cells, last = [], None
        for t, b in zip(top.tolist(), bottom.tolist()):
            if (t, b) != last:   # colour codes only where the colour changes
                cells.append(f"\x1b[38;2;{t[0]};{t[1]};{t[2]}m\x1b[48;2;{b[0]};{b[1]};{b[2]}m")
                last = (t, b)
            cells.append("\u2580")
        lines.append("".join(cells) + "\x1b[0m")
    return "\n".join(lines)


def _describe(frame: Frame, env_name: str, episodes: int) -> str:
    score = "-" if frame.score is None else f"{frame.score:.4g}"
    head = (f"{env_name}  episode {frame.episode}/{episodes}  step {frame.step}  "
            f"return {frame.episode_return:.4g}  last score {score}")
    if frame.probs is None:
        return head
    probs = "  ".join(f"{i}:{p:.2f}" for i, p in enumerate(frame.probs[:24]))
    more = " ..." if len(frame.probs) > 24 else ""
    return f"{head}\naction {frame.action}  probs {probs}{more}  value {frame.value:.3f}"


def show(frames: Iterator[Frame], env_name: str, episodes: int, fps: float,
         out: TextIO = sys.stdout) -> int:
    """Draws frames in a terminal (redrawn in place when ``out`` is a terminal, else printed
    one after another); returns the number of frames shown."""
    tty = out.isatty()
    count = 0
    for frame in frames:
        image = frame.image if isinstance(frame.image, str) else rgb_to_text(frame.image)
        text = f"{image.rstrip()}\n{_describe(frame, env_name, episodes)}\n"
        # home + clear-to-end redraws in place without the flicker of a full clear
        out.write(("\x1b[H\x1b[J" if tty else "") + text)
        out.flush()
        count += 1
        if fps > 0:
            time.sleep(1.0 / fps)
    return count


def write_video(frames: list[np.ndarray], path: str, fps: float) -> str:
    """Writes RGB frames to ``path``: a looping GIF (``.gif``, Pillow) or an H.264 MP4
    (``.mp4``, imageio-ffmpeg's bundled ffmpeg). Returns ``path``."""
    if not frames:
        raise WatchError("no frames to write")
    try:
        import imageio.v2 as imageio
    except ImportError:
        raise WatchError("recording needs imageio and Pillow: pip install 'shoal[tools]'") from None
    ext = os.path.splitext(path)[1].lower()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if ext == ".gif":
        # Pillow's GIF frame duration is in milliseconds
        imageio.mimwrite(path, frames, format="GIF", duration=1000.0 / max(fps, 1e-3), loop=0)
    elif ext == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401  (bundles the ffmpeg binary)
        except ImportError:
            raise WatchError("MP4 needs imageio-ffmpeg: pip install imageio-ffmpeg") from None
        # H.264 in yuv420p needs even sides: pad by one pixel row/column where odd
        h, w = frames[0].shape[:2]
        padded = [np.pad(f, ((0, h % 2), (0, w % 2), (0, 0))) for f in frames]
        imageio.mimwrite(path, padded, format="FFMPEG", fps=fps, macro_block_size=1,
                         codec="libx264", pixelformat="yuv420p")
    else:
        raise WatchError(f"{path}: recordings are .gif or .mp4 files")
    return path


def record(run: RunEnv | str, path: str | list[str], episodes: int = 1, fps: float = 30.0,
           greedy: bool = False, seed: int = 0, max_steps: int = 3000) -> dict[str, Any]:
    """Records ``episodes`` episodes (at most ``max_steps`` steps) of a checkpoint's policy as
    a GIF or MP4 (or both: a list of paths); returns ``{"paths", "frames", "scores"}``."""
    paths = [path] if isinstance(path, str) else list(path)
    for p in paths:
        if os.path.splitext(p)[1].lower() not in (".gif", ".mp4"):
            raise WatchError(f"{p}: recordings are .gif or .mp4 files")
    frames: list[np.ndarray] = []
    scores: list[float] = []
    for frame in play(run, episodes, greedy, seed, "rgb_array", max_steps):
        frames.append(frame.image)
        if frame.ended and frame.score is not None:
            scores.append(frame.score)
    for p in paths:
        write_video(frames, p, fps)
    return {"paths": paths, "frames": len(frames), "scores": scores}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``shoal watch``."""
    parser = argparse.ArgumentParser(prog="shoal watch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run directory of `shoal train` or a checkpoint file")
    parser.add_argument("--episodes", type=int, default=1, help="episodes to play (default 1)")
    parser.add_argument("--fps", type=float, default=30.0,
                        help="frames per second (default 30; 0 = as fast as possible)")
    parser.add_argument("--greedy", action="store_true",
                        help="take the most likely action instead of sampling")
    parser.add_argument("--gif", metavar="PATH", help="record the RGB frames to a GIF instead")
    parser.add_argument("--mp4", metavar="PATH", help="record the RGB frames to an MP4 instead")
    parser.add_argument("--max-steps", type=int, default=10_000,
                        help="stop after this many steps in all (default 10000)")
    parser.add_argument("--seed", type=int, default=0, help="env and sampling seed")
    args = parser.parse_args(argv)

    from ..trainer.checkpoint import CheckpointError

    try:
        if args.fps < 0:
            raise WatchError(f"--fps must be >= 0, got {args.fps}")
        run = load_run(args.run)
        if args.gif or args.mp4:
            paths = [p for p in (args.gif, args.mp4) if p]
            result = record(run, paths, args.episodes, args.fps or 30.0, args.greedy,
                            args.seed, args.max_steps)
            scores = ", ".join(f"{s:.4g}" for s in result["scores"]) or "none finished"
            print(f"wrote {' and '.join(paths)}: {result['frames']} frames; episode scores: "
                  f"{scores}")
            return 0
        show(play(run, args.episodes, args.greedy, args.seed, "ansi", args.max_steps),
             run.env_name, args.episodes, args.fps)
    except (CheckpointError, WatchError, ValueError, TypeError) as exc:
        print(f"shoal watch: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


def record_checkpoint_video(checkpoint: str, run_dir: str, steps: int = 300) -> str | None:
    """Records ``steps`` steps of a checkpoint's policy (sampled, seed 0) to
    ``<run_dir>/videos/<checkpoint name>.gif``, for ``shoal train --log.video``. Returns None
    when written, else a one-line note why not (training goes on either way)."""
    name = os.path.splitext(os.path.basename(checkpoint))[0]
    path = os.path.join(run_dir, "videos", f"{name}.gif")
    try:
        record(checkpoint, path, episodes=1_000_000, max_steps=steps)
    except Exception as exc:  # a clip is a side product: never stop training for it
        return f"video not recorded ({type(exc).__name__}: {exc})"
    return None
