/* The target env's binding: names for binding.h, and its parameters. */
#include "../binding.h" /* first: Python.h must precede system headers */
#include "target.h"

#define Env Target
#define OBS_TYPE float
#define ACT_TYPE float
#define OBS_SIZE(env) 4
#define NUM_AGENTS(env) 1
#define RENDER_HEIGHT(env) TARGET_PIXELS
#define RENDER_WIDTH(env) TARGET_PIXELS
#define c_reset target_reset
#define c_step target_step
#define c_close target_close
#define c_render_text target_render_text
#define c_render_rgb target_render_rgb
#define c_validate target_validate

static const char* LOG_NAMES[] = {"episode_return", "episode_length", "score", "distance"};

static int my_init(Env* env, PyObject* params) {
    if (shoal_param_int(params, "max_steps", &env->max_steps) || shoal_param_float(params, "radius", &env->radius))
        return -1;
    return 0;
}

#define HAS_STATE
static PyObject* my_state(Env* env) {
    return Py_BuildValue("{s:d,s:d,s:d,s:d,s:d,s:d,s:i}", "x", (double)env->x, "y", (double)env->y, "vx",
                         (double)env->vx, "vy", (double)env->vy, "target_x", (double)env->target_x,
                         "target_y", (double)env->target_y, "tick", env->tick);
}

#include "../vec_binding.h"
