"""``shoal export``: a trained policy as dependency-free C, and a C env played by it.

    shoal export RUN_DIR -o DIR [--web]

DIR receives:

* ``shoal_net.h``: the policy's forward pass in one C99 header (docs/net.md);
* ``policy.bin``: its weights as a flat blob, and ``policy_weights.h``: the same words as a C
  array (so a program needs no file at run time);
* for C envs: ``shoal_env.h``, ``env/<name>.h`` (the env itself), ``shoal_libm.h`` and a
  generated ``main.c`` that plays the env with the policy in a terminal, with the parameters
  the run was trained with: ``cc -O2 main.c -o play && ./play`` (``./play --help`` lists its
  options; no -lm: shoal_libm.h finds glibc's libm at run time, see its comment);
* with ``--web``: the env and policy compiled to WebAssembly and a static page
  (:mod:`shoal.tools.web`).

main.c uses the env's own init code, copied from its ``binding.c`` with the Python calls
replaced by a small parameter table, so the program's env is the one Python steps: the same
seed gives the same episodes (tests/test_tools_export.py checks this and the policy's actions
and logits against torch over recorded episodes).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from typing import Any

import numpy as np

__all__ = ["ExportError", "export_run", "env_c_sources", "main"]

ENVS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "envs")
#: included by main.c and web.c before the env headers: libm's functions without -lm on glibc
LIBM_HEADER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shoal_libm.h")


class ExportError(ValueError):
    """A run that cannot be exported as asked; the message says why and what can be done."""


def env_c_sources(env_name: str) -> tuple[str, str, str]:
    """(header path, binding prelude, init function) of C env ``env_name``: the prelude is the
    binding's ``#define`` block and ``LOG_NAMES``; the init function is ``my_init`` with its
    Python calls replaced by the exported program's parameter table and error report."""
    from ..envs import list_envs

    # the name comes from a checkpoint's config: only a registered env's own folder is read (a
    # crafted name such as an absolute path would compile someone else's C into main.c)
    if env_name not in list_envs():
        raise ExportError(f"'{env_name}' is not one of shoal's C envs ({', '.join(list_envs())}); "
                          "export a run trained on one of them")
    folder = os.path.join(ENVS_DIR, env_name)
    binding_path = os.path.join(folder, "binding.c")
    header = os.path.join(folder, f"{env_name}.h")
    if not os.path.exists(binding_path) or not os.path.exists(header):
        raise ExportError(f"C env '{env_name}' has no {env_name}.h and binding.c in {folder}")
    with open(binding_path, encoding="utf-8") as fh:
        binding = fh.read()
    start = binding.find("static int my_init(")
    if start < 0:
        raise ExportError(f"{binding_path} has no my_init(): main.c cannot set the env up")
    end = binding.find("\n}\n", start)
    prelude = "\n".join(line for line in binding[:start].splitlines()
                        if not line.startswith("#include"))
    init = binding[start:end + 3]
    init = init.replace("PyObject* params", "const ShoalParams* params")
    init = re.sub(r"PyErr_Format\(\s*PyExc_\w+,\s*", "shoal_play_error(", init)
    init = re.sub(r"PyErr_SetString\(\s*PyExc_\w+,\s*", 'shoal_play_error("%s", ', init)
    init = init.replace("PyErr_NoMemory()", "shoal_play_error(\"out of memory\")")
    leftover = sorted(set(re.findall(r"\bPy[A-Z_]\w*", prelude + init)))
    if leftover:
        raise ExportError(f"{binding_path}: my_init() or its prelude uses Python API calls "
                          f"({', '.join(leftover)}) that main.c cannot stand in for")
    return header, prelude.strip() + "\n", init


def _c_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _params_table(env_name: str, params: dict[str, Any]) -> str:
    from ..envs import get_spec

    resolved = get_spec(env_name).resolve(params)
    rows = [f"    {{{_c_string(k)}, {float(v)!r}}}," for k, v in sorted(resolved.items())]
    return "\n".join(rows) if rows else "    {\"\", 0.0},"


def _env_sizes(env_name: str, params: dict[str, Any]) -> tuple[int, int]:
    """(agents per env, observation elements per agent) of a C env with ``params``."""
    from ..envs import get_spec

    spec = get_spec(env_name)
    resolved = spec.resolve(params)
    space = spec.observation_space(resolved)
    return int(spec.agents_per_env(resolved)), int(np.prod(space.shape)) if space.shape else 1


def weights_header(blob: bytes) -> str:
    """``policy_weights.h``: the blob as an array of 32-bit words (4-byte aligned, as
    shoal_net_load needs)."""
    words = np.frombuffer(blob, dtype="<u4")
    lines = []
    for i in range(0, len(words), 8):
        lines.append("    " + ", ".join(f"0x{w:08x}u" for w in words[i:i + 8]) + ",")
    return ("/* policy_weights.h: the exported policy's weight blob (docs/net.md), written by\n"
            " * `shoal export`; the same bytes as policy.bin. */\n"
            "#include <stdint.h>\n"
            f"static const uint32_t shoal_policy_words[{len(words)}] = {{\n"
            + "\n".join(lines) + "\n};\n")


# The env's parameters as the run was trained with them, and the lookup its init code (from its
# binding.c) reads them through; shared by the terminal program (main.c) and the WebAssembly
# module (web.py).
PARAM_TABLE_C = r"""/* The env's parameters, as the run was trained with them; my_init reads them from here. */
typedef struct {
    const char* key;
    double value;
} ShoalParam;
typedef struct {
    const ShoalParam* items;
    int count;
} ShoalParams;

static const ShoalParam PARAMS[] = {
__PARAMS__
};
/* rows (agents) and observation elements per agent with these parameters (from the env's spec;
   main() checks them against the env's own NUM_AGENTS/OBS_SIZE after init) */
#define PLAY_AGENTS __AGENTS__
#define PLAY_OBS_SIZE __OBS_SIZE__
"""

PARAM_LOOKUP_C = r"""static const ShoalParam* shoal_param_find(const ShoalParams* params, const char* key) {
    for (int i = 0; i < params->count; i++)
        if (strcmp(params->items[i].key, key) == 0) return &params->items[i];
    shoal_play_error("missing env parameter '%s'", key);
    return NULL;
}

static int shoal_param_int(const ShoalParams* params, const char* key, int* out) {
    const ShoalParam* p = shoal_param_find(params, key);
    if (!p) return -1;
    *out = (int)p->value;
    return 0;
}

static int shoal_param_float(const ShoalParams* params, const char* key, float* out) {
    const ShoalParam* p = shoal_param_find(params, key);
    if (!p) return -1;
    *out = (float)p->value;
    return 0;
}
"""

MAIN_C = r"""/* main.c: __ENV__ played by a policy trained with shoal, in a terminal. Generated by
 * `shoal export` from __RUN__.
 *
 *     cc -O2 main.c -o play && ./play
 *     ./play --help
 *
 * Plain C: the env (env/__ENV__.h), the policy's forward pass (shoal_net.h) and its weights
 * (policy_weights.h). The env is set up by its own init code (from shoal/envs/__ENV__/binding.c)
 * with the parameters the run was trained with, and seeded as shoal seeds env 0 of a vector, so
 * `--seed S` plays the episodes shoal.make("__ENV__", seed=S) would with the same actions. */
#define _POSIX_C_SOURCE 200809L
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shoal_libm.h"     /* libm without -lm: the env's math from the libm shoal's env calls */
#include "shoal_net.h"
#include "env/__ENV__.h"
#include "policy_weights.h"

__PARAM_TABLE__

static void shoal_play_error(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
static void shoal_play_error(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("env setup: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

__PARAM_LOOKUP__

/* ---- from shoal/envs/__ENV__/binding.c ---- */
__PRELUDE__
__INIT__
/* ---- end of the binding's code ---- */

static void usage(void) {
    puts("usage: ./play [--episodes N] [--fps F] [--seed S] [--greedy] [--max-steps N]\n"
         "              [--quiet] [--record FILE]\n"
         "  --episodes N   episodes to play (default 1)\n"
         "  --fps F        frames per second in the terminal (default 30; 0 = no delay)\n"
         "  --seed S       env and action seed (default: the time)\n"
         "  --greedy       take the most likely action instead of sampling\n"
         "  --max-steps N  stop after N steps in all (default: no limit)\n"
         "  --quiet        no frames, only the episode scores\n"
         "  --record FILE  write each step's observations, action parameters, values and\n"
         "                 actions to FILE (raw little-endian rows; see shoal/tools/export.py)");
}

static int log_index(const char* name) {
    for (int i = 0; i < (int)(sizeof(LOG_NAMES) / sizeof(LOG_NAMES[0])); i++)
        if (strcmp(LOG_NAMES[i], name) == 0) return i;
    return -1;
}

int main(int argc, char** argv) {
    long episodes = 1, max_steps = -1;
    double fps = 30.0;
    uint64_t seed = (uint64_t)time(NULL);
    int greedy = 0, quiet = 0;
    const char* record_path = NULL;
    for (int i = 1; i < argc; i++) {
        const char* a = argv[i];
        const char* v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--greedy") == 0) greedy = 1;
        else if (strcmp(a, "--quiet") == 0) quiet = 1;
        else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) { usage(); return 0; }
        else if (v && strcmp(a, "--episodes") == 0) { episodes = atol(v); i++; }
        else if (v && strcmp(a, "--fps") == 0) { fps = atof(v); i++; }
        else if (v && strcmp(a, "--seed") == 0) { seed = strtoull(v, NULL, 10); i++; }
        else if (v && strcmp(a, "--max-steps") == 0) { max_steps = atol(v); i++; }
        else if (v && strcmp(a, "--record") == 0) { record_path = v; i++; }
        else { fprintf(stderr, "unknown or incomplete option '%s'\n", a); usage(); return 2; }
    }
    if (episodes < 1 || fps < 0) {
        fputs("--episodes must be >= 1 and --fps >= 0\n", stderr);
        return 2;
    }

    shoal_net net;
    char err[256];
    if (shoal_net_load(&net, shoal_policy_words, sizeof shoal_policy_words, err, sizeof err) != 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }

    /* The env writes into buffers its caller owns, one row per agent (shoal_env.h); they are
       in place before init, as in shoal's vector envs */
    const int agents = PLAY_AGENTS, obs_size = PLAY_OBS_SIZE;
    const int act_dims = net.action_dims, P = net.num_params;
    if ((int64_t)obs_size != (int64_t)net.obs_elems || (int)sizeof(OBS_TYPE) != net.obs_item_bytes) {
        fprintf(stderr, "the policy reads %d observation elements of %d bytes but the env writes "
                "%d of %d: export the run this env was trained with\n", (int)net.obs_elems,
                (int)net.obs_item_bytes, obs_size, (int)sizeof(OBS_TYPE));
        return 1;
    }
    OBS_TYPE* obs = calloc((size_t)agents * obs_size, sizeof(OBS_TYPE));
    OBS_TYPE* final_obs = calloc((size_t)agents * obs_size, sizeof(OBS_TYPE));
    ACT_TYPE* env_actions = calloc((size_t)agents * act_dims, sizeof(ACT_TYPE));
    float* rewards = calloc((size_t)agents, sizeof(float));
    uint8_t* terminals = calloc((size_t)agents, 1);
    uint8_t* truncations = calloc((size_t)agents, 1);
    float* starts = calloc((size_t)agents, sizeof(float));
    float* h = calloc((size_t)agents * (net.hidden > 0 ? net.hidden : 1), sizeof(float));
    float* c = calloc((size_t)agents * (net.hidden > 0 ? net.hidden : 1), sizeof(float));
    float* action_params = calloc((size_t)agents * P, sizeof(float));
    float* values = calloc((size_t)agents, sizeof(float));
    int32_t* actions_i = calloc((size_t)agents * act_dims, sizeof(int32_t));
    float* actions_f = calloc((size_t)agents * act_dims, sizeof(float));
    float* actions_env_f = calloc((size_t)agents * act_dims, sizeof(float));
    uint64_t* rng = calloc((size_t)agents, sizeof(uint64_t));
    float* scratch = calloc((size_t)shoal_net_scratch_floats(&net), sizeof(float));
    int text_cap = 1 << 16;
    char* text = malloc((size_t)text_cap);
    if (!obs || !final_obs || !env_actions || !rewards || !terminals || !truncations || !starts ||
        !h || !c || !action_params || !values || !actions_i || !actions_f || !actions_env_f ||
        !rng || !scratch || !text) {
        fputs("out of memory\n", stderr);
        return 1;
    }
    Env env;
    memset(&env, 0, sizeof env);
    env.observations = obs;
    env.final_observations = final_obs;
    env.actions = env_actions;
    env.rewards = rewards;
    env.terminals = terminals;
    env.truncations = truncations;
#ifdef ACTION_MASK
    /* the env's action masks: invalid actions' logits are masked before sampling, as in training
       (the recorded params stay the policy's own) */
    uint8_t* action_masks = calloc((size_t)agents * P, 1);
    float* masked_params = calloc((size_t)agents * P, sizeof(float));
    if (!action_masks || !masked_params) {
        fputs("out of memory\n", stderr);
        return 1;
    }
    env.action_masks = action_masks;
    float* sample_params = masked_params;
#else
    float* sample_params = action_params;
#endif
    const ShoalParams params = {PARAMS, (int)(sizeof PARAMS / sizeof PARAMS[0])};
    shoal_rng_seed(&env.rng, 0, 0);
    if (my_init(&env, &params) != 0) return 1;
    if ((int)NUM_AGENTS(&env) != agents || (int)OBS_SIZE(&env) != obs_size) {
        fprintf(stderr, "env and spec disagree: %d agents x %d obs, expected %d x %d\n",
                (int)NUM_AGENTS(&env), (int)OBS_SIZE(&env), agents, obs_size);
        c_close(&env);
        return 1;
    }
    shoal_rng_seed(&env.rng, seed, 0);
    memset(&env.log, 0, sizeof env.log);
    c_reset(&env);
    shoal_net_rng_seed(rng, agents, seed, 0);
    for (int i = 0; i < agents; i++) starts[i] = 1.0f;

    FILE* record = NULL;
    if (record_path && !(record = fopen(record_path, "wb"))) {
        perror(record_path);
        return 1;
    }
    const int score_at = log_index("score") >= 0 ? log_index("score") : log_index("episode_return");
    const int fields = (int)(sizeof(Log) / sizeof(float));
    float previous[64] = {0};
    const int tty = isatty(1) && !quiet;
    long episode = 1, step = 0, total = 0;
    double ret = 0.0;
    struct timespec pause = {(time_t)(fps > 0 ? 1.0 / fps : 0),
                             (long)(fps > 0 ? (1.0 / fps - (long)(1.0 / fps)) * 1e9 : 0)};
    while (episode <= episodes && (max_steps < 0 || total < max_steps)) {
        shoal_net_forward(&net, agents, obs, starts, h, c, action_params, values, scratch);
#ifdef ACTION_MASK
        memcpy(masked_params, action_params, sizeof(float) * (size_t)agents * P);
        shoal_net_mask_logits(&net, agents, masked_params, action_masks);
#endif
        shoal_net_sample(&net, agents, sample_params, rng, greedy, actions_i, actions_f, NULL);
        if (net.head == SHOAL_HEAD_BOX) {
            shoal_net_clip_actions(&net, agents, actions_f, actions_env_f);
            for (int i = 0; i < agents * act_dims; i++) env_actions[i] = (ACT_TYPE)actions_env_f[i];
        } else {
            for (int i = 0; i < agents * act_dims; i++) env_actions[i] = (ACT_TYPE)actions_i[i];
        }
        if (record) {
            fwrite(obs, sizeof(OBS_TYPE), (size_t)agents * obs_size, record);
            fwrite(action_params, sizeof(float), (size_t)agents * P, record);
            fwrite(values, sizeof(float), (size_t)agents, record);
            if (net.head == SHOAL_HEAD_BOX) fwrite(actions_f, sizeof(float), (size_t)agents * act_dims, record);
            else fwrite(actions_i, sizeof(int32_t), (size_t)agents * act_dims, record);
        }
        memset(rewards, 0, (size_t)agents * sizeof(float));
        memset(terminals, 0, (size_t)agents);
        memset(truncations, 0, (size_t)agents);
        c_step(&env);
        step++;
        total++;
        ret += rewards[0];
        for (int i = 0; i < agents; i++) starts[i] = (float)(terminals[i] | truncations[i]);
        if (!quiet) {
            int len = c_render_text(&env, text, text_cap);
            if (len < 0) len = 0;
            if (len > text_cap - 1) len = text_cap - 1;
            text[len] = 0;
            printf("%s%s\n__ENV__  episode %ld/%ld  step %ld  return %.4g\n", tty ? "\x1b[H\x1b[J" : "",
                   text, episode, episodes, step, ret);
            if (net.head != SHOAL_HEAD_BOX) {
                printf("action %d  logits", (int)actions_i[0]);
                for (int j = 0; j < P && j < 16; j++) printf(" %.2f", action_params[j]);
            } else {
                printf("action %.3f  mean %.3f", actions_env_f[0], action_params[0]);
            }
            printf("  value %.3f\n", values[0]);
            fflush(stdout);
            if (tty && fps > 0) nanosleep(&pause, NULL);
        }
        if (terminals[0] || truncations[0]) {
            const float* now = (const float*)&env.log;
            double n = now[fields - 1] - previous[fields - 1];
            double score = n > 0 && score_at >= 0 ? (now[score_at] - previous[score_at]) / n : ret;
            for (int k = 0; k < fields && k < 64; k++) previous[k] = now[k];
            printf("episode %ld: score %.4g  return %.4g  steps %ld\n", episode, score, ret, step);
            fflush(stdout);
            episode++;
            step = 0;
            ret = 0.0;
        }
    }
    if (record) fclose(record);
    c_close(&env);
    free(obs); free(final_obs); free(env_actions); free(rewards); free(terminals);
    free(truncations); free(starts); free(h); free(c); free(action_params); free(values);
    free(actions_i); free(actions_f); free(actions_env_f); free(rng); free(scratch); free(text);
#ifdef ACTION_MASK
    free(action_masks); free(masked_params);
#endif
    return 0;
}
"""


def export_run(run_dir: str, out_dir: str, web: bool = False) -> dict[str, Any]:
    """Exports the newest checkpoint of ``run_dir`` (or a checkpoint file) into ``out_dir``;
    returns ``{"files": [...], "env": name, "main_c": path or None}``."""
    from ..net import header_path
    from ..net.export import export_checkpoint, write_blob
    from .runs import load_run

    run = load_run(run_dir)
    try:
        blob = export_checkpoint(run.checkpoint["path"])
    except ValueError as exc:
        raise ExportError(f"{run.checkpoint['path']}: {exc}") from None
    os.makedirs(out_dir, exist_ok=True)
    files = [shutil.copy(header_path(), os.path.join(out_dir, "shoal_net.h")),
             write_blob(blob, os.path.join(out_dir, "policy.bin"))]
    weights = os.path.join(out_dir, "policy_weights.h")
    with open(weights, "w", encoding="utf-8") as fh:
        fh.write(weights_header(blob))
    files.append(weights)
    main_c = None
    c_env = not run.env_name.startswith(("gym:", "pz:"))
    if c_env:
        header, prelude, init = env_c_sources(run.env_name)
        os.makedirs(os.path.join(out_dir, "env"), exist_ok=True)
        files.append(shutil.copy(os.path.join(ENVS_DIR, "shoal_env.h"),
                                 os.path.join(out_dir, "shoal_env.h")))
        files.append(shutil.copy(LIBM_HEADER, os.path.join(out_dir, "shoal_libm.h")))
        files.append(shutil.copy(header, os.path.join(out_dir, "env", os.path.basename(header))))
        agents, obs_size = _env_sizes(run.env_name, run.env_params)
        source = (MAIN_C.replace("__PARAM_TABLE__", PARAM_TABLE_C)
                  .replace("__PARAMS__", _params_table(run.env_name, run.env_params))
                  .replace("__AGENTS__", str(agents)).replace("__OBS_SIZE__", str(obs_size))
                  .replace("__PARAM_LOOKUP__", PARAM_LOOKUP_C)
                  .replace("__PRELUDE__", prelude).replace("__INIT__", init)
                  .replace("__RUN__", os.path.basename(os.path.normpath(run_dir)).replace("*/", "* /"))
                  .replace("__ENV__", run.env_name))
        main_c = os.path.join(out_dir, "main.c")
        with open(main_c, "w", encoding="utf-8") as fh:
            fh.write(source)
        files.append(main_c)
    elif web:
        raise ExportError(f"{run.env_name} is a Python env: --web needs one of shoal's C envs "
                          f"(the browser runs the env compiled to WebAssembly)")
    if web:
        from .web import build_web

        files += build_web(run, out_dir, blob)
    return {"files": files, "env": run.env_name, "main_c": main_c}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``shoal export``."""
    parser = argparse.ArgumentParser(prog="shoal export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run directory of `shoal train` or a checkpoint file")
    parser.add_argument("-o", "--out", required=True, help="output directory")
    parser.add_argument("--web", action="store_true",
                        help="also build the WebAssembly page (C envs; needs ziglang)")
    args = parser.parse_args(argv)

    from ..trainer.checkpoint import CheckpointError
    from .web import WebBuildError

    try:
        result = export_run(args.run, args.out, web=args.web)
    except (CheckpointError, ExportError, WebBuildError, ValueError) as exc:
        print(f"shoal export: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(result['files'])} files to {args.out}/")
    if result["main_c"]:
        print(f"play it: cd {args.out} && cc -O2 main.c -o play && ./play")
    if args.web:
        print(f"in a browser: cd {args.out} && python -m http.server, then open "
              f"http://localhost:8000/")
    return 0
