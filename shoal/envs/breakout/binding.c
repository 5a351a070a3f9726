/* The breakout env's binding: names for binding.h, and its parameters. */
#include "../binding.h" /* first: Python.h must precede system headers */
#include "breakout.h"

#define Env Breakout
#define OBS_TYPE float
#define ACT_TYPE float /* both modes: discrete actions arrive as integral floats, checked by the binding */
#define OBS_SIZE(env) breakout_obs_size(env)
#define NUM_AGENTS(env) 1
#define RENDER_HEIGHT(env) BREAKOUT_RENDER_H(env)
#define RENDER_WIDTH(env) BREAKOUT_RENDER_W(env)
#define c_reset breakout_reset
#define c_step breakout_step
#define c_close breakout_close
#define c_render_text breakout_render_text
#define c_render_rgb breakout_render_rgb
#define c_validate breakout_validate

static const char* LOG_NAMES[] = {"episode_return", "episode_length", "score", "bricks", "cleared"};

static int my_init(Env* env, PyObject* params) {
    if (shoal_param_int(params, "brick_rows", &env->brick_rows) ||
        shoal_param_int(params, "brick_cols", &env->brick_cols) ||
        shoal_param_int(params, "lives", &env->lives_start) ||
        shoal_param_int(params, "frameskip", &env->frameskip) ||
        shoal_param_int(params, "continuous", &env->continuous) ||
        shoal_param_int(params, "max_steps", &env->max_steps))
        return -1;
    if (env->brick_rows < 1 || env->brick_rows > BREAKOUT_MAX_ROWS || env->brick_cols < 2 ||
        env->brick_cols > BREAKOUT_MAX_COLS || env->lives_start < 1 || env->frameskip < 1) {
        PyErr_Format(PyExc_ValueError,
                     "breakout: brick_rows must be in [1, %d], brick_cols in [2, %d], lives and "
                     "frameskip >= 1",
                     BREAKOUT_MAX_ROWS, BREAKOUT_MAX_COLS);
        return -1;
    }
    breakout_setup(env);
    return 0;
}

#define HAS_STATE
/* Internal state for tests: positions are top-left corners in pixels; bricks row-major, 1 = present. */
static PyObject* my_state(Env* env) {
    return Py_BuildValue(
        "{s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:i,s:i,s:i,s:i,s:i,s:i,s:y#,s:f,s:f,s:f,s:f,s:f,s:f,s:f,s:f,"
        "s:f,s:i,s:f,s:i}",
        "paddle_x", (double)env->paddle_x, "paddle_w", (double)env->paddle_w, "ball_x", (double)env->ball_x,
        "ball_y", (double)env->ball_y, "vx", (double)env->ball_vx, "vy", (double)env->ball_vy, "speed",
        (double)breakout_speed(env), "speed_max", (double)BREAKOUT_MAX_SPEED, "level", env->level, "hits",
        env->hits, "lives", env->lives, "bricks_left", env->bricks_left, "score", env->score, "tick",
        env->tick, "bricks", (const char*)env->bricks, (Py_ssize_t)env->num_bricks, "width",
        (double)env->width, "height", (double)env->height, "paddle_y", (double)env->paddle_y, "ball_size",
        (double)BREAKOUT_BALL, "brick_top", (double)BREAKOUT_BRICK_TOP, "brick_w", (double)BREAKOUT_BRICK_W,
        "brick_h", (double)BREAKOUT_BRICK_H, "paddle_speed", (double)BREAKOUT_PADDLE_SPEED, "paddle_full_w",
        (double)BREAKOUT_PADDLE_W, "red_broken", env->red_broken, "episode_return",
        (double)env->episode_return, "frameskip", env->frameskip);
}

#include "../vec_binding.h"
