"""``shoal export --web``: a C env and its exported policy compiled to WebAssembly, with one
static page that plays it in a browser.

The page (``index.html``, no other files but ``shoal.wasm``, nothing fetched from the network)
draws the env's RGB frames on a canvas at the display's refresh rate, shows the score, and has
play/pause, a speed control (env steps per frame) and "take over": the keyboard controls agent
0 (arrow keys where the env names them, else the digit keys pick the action index). It runs
from any static server: ``python -m http.server`` in the directory.

The compiler is ``zig cc`` from the ``ziglang`` wheel on PyPI (``pip install ziglang``): it
targets ``wasm32-wasi`` with the wasi-libc it bundles (the env headers use ``vsnprintf``,
``malloc`` and ``<math.h>``); the module imports nothing, so the page needs no WASI runtime.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

__all__ = ["WebBuildError", "build_web", "zig_available", "KEYMAPS", "index_html",
           "env_is_continuous", "demo_pages"]


class WebBuildError(RuntimeError):
    """The WebAssembly toolchain is missing or the build failed; the message says which."""


#: per env: keyboard key -> action index for "take over" (other discrete envs: digit keys)
KEYMAPS: dict[str, dict[str, int]] = {
    "breakout": {"ArrowLeft": 1, "ArrowRight": 2, " ": 0},
    "maze": {"ArrowUp": 0, "ArrowDown": 1, "ArrowLeft": 2, "ArrowRight": 3},
    "g2048": {"ArrowUp": 0, "ArrowDown": 1, "ArrowLeft": 2, "ArrowRight": 3},
    "tetris": {"ArrowLeft": 1, "ArrowRight": 2, "ArrowUp": 3, "ArrowDown": 5, " ": 6},
    "forage": {"ArrowUp": 1, "ArrowDown": 2, "ArrowLeft": 3, "ArrowRight": 4, " ": 0},
}

WEB_C = r"""/* web.c: __ENV__ and its policy as a WebAssembly module for index.html (shoal export --web).
 * Exports: web_init(seed), web_step(human_action), web_frame() -> RGB pointer, web_width(),
 * web_height(), web_return(), web_total_return(), web_last_score(), web_episodes(), web_action(),
 * web_value(), web_error_message(). */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shoal_libm.h"     /* nothing to do on wasi-libc, whose libm is part of libc */
#include "shoal_net.h"
#include "env/__ENV__.h"
#include "policy_weights.h"

__PARAM_TABLE__

static char web_error[512];
static void shoal_play_error(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(web_error, sizeof web_error, fmt, ap);
    va_end(ap);
}

__PARAM_LOOKUP__

__PRELUDE__
__INIT__

#define EXPORT(name) __attribute__((export_name(#name)))

static Env env;
static shoal_net net;
static OBS_TYPE* obs;
static OBS_TYPE* final_obs;
static ACT_TYPE* env_actions;
static float *rewards, *starts, *h, *c, *params_out, *values, *actions_f, *actions_env_f, *scratch;
static uint8_t *terminals, *truncations, *frame;
static int32_t* actions_i;
static uint64_t* rng;
#ifdef ACTION_MASK
static uint8_t* action_masks;   /* the env's: invalid actions are masked before sampling */
#endif
static int ready = 0, frame_h = 0, frame_w = 0, episodes = 0;
static float episode_return = 0.0f, last_score = 0.0f, total_return = 0.0f;
static float previous_log[64];

static int log_index(const char* name) {
    for (int i = 0; i < (int)(sizeof(LOG_NAMES) / sizeof(LOG_NAMES[0])); i++)
        if (strcmp(LOG_NAMES[i], name) == 0) return i;
    return -1;
}

/* 0 on success; else a message in web_error_message(). */
EXPORT(web_init) int web_init(uint32_t seed) {
    char err[256];
    if (shoal_net_load(&net, shoal_policy_words, sizeof shoal_policy_words, err, sizeof err) != 0) {
        shoal_play_error("%s", err);
        return -1;
    }
    const int A = PLAY_AGENTS, O = PLAY_OBS_SIZE, D = net.action_dims, P = net.num_params;
    const int H = net.hidden > 0 ? net.hidden : 1;
    obs = calloc((size_t)A * O, sizeof(OBS_TYPE));
    final_obs = calloc((size_t)A * O, sizeof(OBS_TYPE));
    env_actions = calloc((size_t)A * D, sizeof(ACT_TYPE));
    rewards = calloc((size_t)A, sizeof(float));
    terminals = calloc((size_t)A, 1);
    truncations = calloc((size_t)A, 1);
    starts = calloc((size_t)A, sizeof(float));
    h = calloc((size_t)A * H, sizeof(float));
    c = calloc((size_t)A * H, sizeof(float));
    params_out = calloc((size_t)A * P, sizeof(float));
    values = calloc((size_t)A, sizeof(float));
    actions_i = calloc((size_t)A * D, sizeof(int32_t));
    actions_f = calloc((size_t)A * D, sizeof(float));
    actions_env_f = calloc((size_t)A * D, sizeof(float));
    rng = calloc((size_t)A, sizeof(uint64_t));
    scratch = calloc((size_t)shoal_net_scratch_floats(&net), sizeof(float));
    if (!obs || !final_obs || !env_actions || !rewards || !terminals || !truncations || !starts ||
        !h || !c || !params_out || !values || !actions_i || !actions_f || !actions_env_f || !rng ||
        !scratch) {
        shoal_play_error("out of memory");
        return -1;
    }
    memset(&env, 0, sizeof env);
    env.observations = obs;
    env.final_observations = final_obs;
    env.actions = env_actions;
    env.rewards = rewards;
    env.terminals = terminals;
    env.truncations = truncations;
#ifdef ACTION_MASK
    action_masks = calloc((size_t)A * P, 1);
    if (!action_masks) {
        shoal_play_error("out of memory");
        return -1;
    }
    env.action_masks = action_masks;
#endif
    const ShoalParams ps = {PARAMS, (int)(sizeof PARAMS / sizeof PARAMS[0])};
    shoal_rng_seed(&env.rng, 0, 0);
    if (my_init(&env, &ps) != 0) return -1;
    if ((int)NUM_AGENTS(&env) != A || (int)OBS_SIZE(&env) != O || (int)net.obs_elems != O) {
        shoal_play_error("the env and the policy disagree on agents or observation size");
        return -1;
    }
    frame_h = RENDER_HEIGHT(&env);
    frame_w = RENDER_WIDTH(&env);
    frame = calloc((size_t)frame_h * frame_w * 3, 1);
    if (!frame) {
        shoal_play_error("out of memory for a %d x %d frame", frame_h, frame_w);
        return -1;
    }
    shoal_rng_seed(&env.rng, seed, 0);
    c_reset(&env);
    shoal_net_rng_seed(rng, A, seed, 0);
    for (int i = 0; i < A; i++) starts[i] = 1.0f;
    ready = 1;
    return 0;
}

/* One env step: the policy acts for every agent; human_action >= 0 replaces agent 0's
 * (discrete heads). */
EXPORT(web_step) void web_step(int32_t human_action) {
    if (!ready) return;
    const int A = PLAY_AGENTS, D = net.action_dims;
    shoal_net_forward(&net, A, obs, starts, h, c, params_out, values, scratch);
#ifdef ACTION_MASK
    shoal_net_mask_logits(&net, A, params_out, action_masks);
#endif
    shoal_net_sample(&net, A, params_out, rng, 0, actions_i, actions_f, NULL);
    if (net.head == SHOAL_HEAD_BOX) {
        shoal_net_clip_actions(&net, A, actions_f, actions_env_f);
        for (int i = 0; i < A * D; i++) env_actions[i] = (ACT_TYPE)actions_env_f[i];
    } else {
        if (human_action >= 0 && D == 1 && human_action < shoal_net_nvec(&net, 0) + net.action_offset)
            actions_i[0] = human_action;
        for (int i = 0; i < A * D; i++) env_actions[i] = (ACT_TYPE)actions_i[i];
    }
    memset(rewards, 0, (size_t)A * sizeof(float));
    memset(terminals, 0, (size_t)A);
    memset(truncations, 0, (size_t)A);
    c_step(&env);
    episode_return += rewards[0];
    total_return += rewards[0];
    for (int i = 0; i < A; i++) starts[i] = (float)(terminals[i] | truncations[i]);
    if (terminals[0] || truncations[0]) {
        const int fields = (int)(sizeof(Log) / sizeof(float));
        const float* now = (const float*)&env.log;
        int at = log_index("score") >= 0 ? log_index("score") : log_index("episode_return");
        float n = now[fields - 1] - previous_log[fields - 1];
        last_score = (n > 0 && at >= 0) ? (now[at] - previous_log[at]) / n : episode_return;
        for (int k = 0; k < fields && k < 64; k++) previous_log[k] = now[k];
        episodes++;
        episode_return = 0.0f;
    }
}

EXPORT(web_frame) uint8_t* web_frame(void) {
    if (!ready) return NULL;
    memset(frame, 0, (size_t)frame_h * frame_w * 3);
    c_render_rgb(&env, frame);
    return frame;
}
EXPORT(web_width) int web_width(void) { return frame_w; }
EXPORT(web_height) int web_height(void) { return frame_h; }
EXPORT(web_return) float web_return(void) { return episode_return; }
EXPORT(web_total_return) float web_total_return(void) { return total_return; }
EXPORT(web_last_score) float web_last_score(void) { return last_score; }
EXPORT(web_episodes) int web_episodes(void) { return episodes; }
EXPORT(web_action) int web_action(void) { return actions_i ? actions_i[0] : 0; }
EXPORT(web_value) float web_value(void) { return values ? values[0] : 0.0f; }
EXPORT(web_error_message) const char* web_error_message(void) { return web_error; }
"""

INDEX_HTML = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>shoal: __ENV__</title>
<style>
body { font-family: system-ui, sans-serif; background: #111; color: #ddd; margin: 1.5em; }
canvas { image-rendering: pixelated; background: #000; display: block; margin: .8em 0; }
button, input { font-size: 1em; margin-right: .6em; }
#stats { font-family: monospace; white-space: pre; }
</style></head>
<body>
<h2>__ENV__ played by a trained policy</h2>
<div>
  <button id="play">pause</button>
  <label>speed <input id="speed" type="range" min="1" max="16" value="1"> <span id="speedv">1</span> steps/frame</label>
  <label><input id="takeover" type="checkbox"> take over agent 0 (__KEYS__)</label>
</div>
<canvas id="screen"></canvas>
<div id="stats">loading…</div>
<script>
"use strict";
const KEYMAP = __KEYMAP__;
const params = new URLSearchParams(location.search);
const state = { running: true, steps: 0, frames: 0, human: -1, started: performance.now(),
                score: 0, lastScore: 0, total: 0, episodes: 0, error: null, ready: false };
window.shoal = state;     // for tests and the curious
async function main() {
  const bytes = await (await fetch("shoal.wasm")).arrayBuffer();
  const { instance } = await WebAssembly.instantiate(bytes, {});
  const w = instance.exports;
  const seed = Number(params.get("seed") || Math.floor(Math.random() * 1e9));
  if (w.web_init(seed) !== 0) {
    const p = w.web_error_message(), mem = new Uint8Array(w.memory.buffer);
    let s = ""; for (let i = p; mem[i]; i++) s += String.fromCharCode(mem[i]);
    state.error = s; document.getElementById("stats").textContent = "error: " + s; return;
  }
  const width = w.web_width(), height = w.web_height();
  const canvas = document.getElementById("screen");
  canvas.width = width; canvas.height = height;
  const scale = Math.max(1, Math.round(640 / Math.max(width, height)));
  canvas.style.width = width * scale + "px"; canvas.style.height = height * scale + "px";
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(width, height);
  const speed = document.getElementById("speed"), play = document.getElementById("play");
  const takeover = document.getElementById("takeover");
  speed.value = params.get("speed") || 1;
  document.getElementById("speedv").textContent = speed.value;
  speed.oninput = () => { document.getElementById("speedv").textContent = speed.value; };
  play.onclick = () => { state.running = !state.running; play.textContent = state.running ? "pause" : "play"; };
  window.addEventListener("keydown", (e) => {
    if (!takeover.checked) return;
    let a = KEYMAP[e.key];
    if (a === undefined && /^[0-9]$/.test(e.key)) a = Number(e.key);
    if (a !== undefined) { state.human = a; e.preventDefault(); }
  });
  window.addEventListener("keyup", () => { state.human = -1; });
  function draw() {
    const rgb = new Uint8Array(w.memory.buffer, w.web_frame(), width * height * 3);
    const px = image.data;
    for (let i = 0, j = 0; i < width * height; i++, j += 3) {
      px[4 * i] = rgb[j]; px[4 * i + 1] = rgb[j + 1]; px[4 * i + 2] = rgb[j + 2]; px[4 * i + 3] = 255;
    }
    ctx.putImageData(image, 0, 0);
    state.frames++;
  }
  function frame() {
    if (state.running) {
      const human = takeover.checked ? state.human : -1;
      for (let k = 0; k < Number(speed.value); k++) { w.web_step(human); state.steps++; }
      state.score = w.web_return(); state.lastScore = w.web_last_score();
      state.total = w.web_total_return(); state.action = w.web_action();
      state.episodes = w.web_episodes();
    }
    draw();
    const secs = (performance.now() - state.started) / 1000;
    document.getElementById("stats").textContent =
      `score ${state.score.toFixed(0)}   last episode ${state.lastScore.toFixed(1)}   episodes ${state.episodes}\n` +
      `action ${w.web_action()}   value ${w.web_value().toFixed(3)}   steps ${state.steps}   ` +
      `frames ${state.frames}   ${(state.steps / Math.max(secs, 1e-3)).toFixed(0)} steps/s`;
    requestAnimationFrame(frame);
  }
  // env + policy steps per second with no drawing, for benchmarks/web_demo_bench.py
  state.stepMany = (n) => {
    const t0 = performance.now();
    for (let k = 0; k < n; k++) w.web_step(-1);
    state.steps += n;
    return n / Math.max((performance.now() - t0) / 1000, 1e-6);
  };
  state.ready = true;
  requestAnimationFrame(frame);
}
main().catch((e) => { state.error = String(e); document.getElementById("stats").textContent = "error: " + e; });
</script>
</body></html>
"""


def zig_available() -> bool:
    """Whether ``python -m ziglang`` runs (the ``ziglang`` wheel is installed)."""
    try:
        import ziglang  # noqa: F401
    except ImportError:
        return False
    return True


def build_web(run: Any, out_dir: str, blob: bytes, optimise: str = "-O2") -> list[str]:
    """Writes ``web.c``, compiles it with the env and policy into ``shoal.wasm`` and writes
    ``index.html`` into ``out_dir`` (which already holds shoal_net.h, policy_weights.h and the
    env headers from :func:`shoal.tools.export.export_run`). Returns the paths written."""
    from .export import PARAM_LOOKUP_C, PARAM_TABLE_C, _env_sizes, _params_table, env_c_sources
    from ..net.export import read_header

    if not zig_available():
        raise WebBuildError("--web needs the zig C compiler from PyPI: pip install ziglang")
    _, prelude, init = env_c_sources(run.env_name)
    agents, obs_size = _env_sizes(run.env_name, run.env_params)
    source = (WEB_C.replace("__PARAM_TABLE__", PARAM_TABLE_C)
              .replace("__PARAMS__", _params_table(run.env_name, run.env_params))
              .replace("__AGENTS__", str(agents)).replace("__OBS_SIZE__", str(obs_size))
              .replace("__PARAM_LOOKUP__", PARAM_LOOKUP_C)
              .replace("__PRELUDE__", prelude).replace("__INIT__", init)
              .replace("__ENV__", run.env_name))
    web_c = os.path.join(out_dir, "web.c")
    with open(web_c, "w", encoding="utf-8") as fh:
        fh.write(source)
    wasm = os.path.join(out_dir, "shoal.wasm")
    cmd = [sys.executable, "-m", "ziglang", "cc", "-target", "wasm32-wasi", optimise,
           "-mexec-model=reactor", "-Wl,--no-entry", "-Wl,--strip-all", "-Wall", "-Wextra",
           "-Wno-unused-function", "web.c", "-o", "shoal.wasm"]
    build = subprocess.run(cmd, cwd=out_dir, capture_output=True, text=True, timeout=900)
    if build.returncode != 0:
        raise WebBuildError(f"the WebAssembly build failed ({' '.join(cmd[1:])}):\n"
                            f"{build.stderr[-3000:]}")
    continuous = read_header(blob)["head"] == 2       # a Box head: no keyboard take-over
    index = os.path.join(out_dir, "index.html")
    with open(index, "w", encoding="utf-8") as fh:
        fh.write(index_html(run.env_name, continuous))
    return [web_c, wasm, index]


def index_html(env_name: str, continuous: bool) -> str:
    """The page (``index.html``) for ``env_name``: :data:`INDEX_HTML` with the env's name, its
    take-over key map (:data:`KEYMAPS`; none when the policy's actions are ``continuous``) and
    the line that lists the keys."""
    keymap = {} if continuous else KEYMAPS.get(env_name, {})
    if continuous:
        keys = "not available: this policy's actions are continuous"
    else:
        keys = (", ".join(f"{k if k != ' ' else 'space'} = {v}" for k, v in keymap.items())
                or "digit keys pick the action")
    return (INDEX_HTML.replace("__ENV__", env_name).replace("__KEYMAP__", json.dumps(keymap))
            .replace("__KEYS__", keys))


def env_is_continuous(env_name: str) -> bool:
    """Whether a C env's action space (with its default parameters) is a Box, so that its
    policy has a continuous head."""
    import gymnasium

    from ..envs import get_spec

    spec = get_spec(env_name)
    return isinstance(spec.action_space(spec.resolve({})), gymnasium.spaces.Box)


def demo_pages(demos_dir: str) -> dict[str, str]:
    """Path -> the page :func:`index_html` makes, for every env folder of ``demos_dir`` (a
    folder named after a C env, holding a ``shoal.wasm``), as under docs/demos/."""
    from ..envs import get_spec

    pages = {}
    for name in sorted(os.listdir(demos_dir)):
        folder = os.path.join(demos_dir, name)
        if not os.path.isfile(os.path.join(folder, "shoal.wasm")):
            continue
        try:
            get_spec(name)
        except ValueError as exc:
            raise WebBuildError(f"{folder} holds a shoal.wasm but {name!r} is not a C env of "
                                f"shoal: name the folder after its env ({exc})") from exc
        pages[os.path.join(folder, "index.html")] = index_html(name, env_is_continuous(name))
    return pages


def main(argv: list[str] | None = None) -> int:
    """``python -m shoal.tools.web DEMOS_DIR``: rewrites the page of every demo folder from
    :data:`INDEX_HTML` (the modules are kept; ``shoal export --web`` rebuilds those)."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m shoal.tools.web",
        description="Rewrite index.html in every env folder of DEMOS_DIR (e.g. docs/demos) "
                    "from the page template, keeping each shoal.wasm.")
    parser.add_argument("demos_dir", help="a folder of ENV/ folders, each with a shoal.wasm")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.demos_dir):
        print(f"python -m shoal.tools.web: {args.demos_dir} is not a directory", file=sys.stderr)
        return 2
    try:
        pages = demo_pages(args.demos_dir)
    except WebBuildError as exc:
        print(f"python -m shoal.tools.web: {exc}", file=sys.stderr)
        return 2
    for path, page in pages.items():
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(page)
    print(f"wrote {len(pages)} pages under {args.demos_dir}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
