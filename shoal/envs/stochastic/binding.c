/* The stochastic env's binding: names for binding.h, and its parameters. */
#include "../binding.h" /* first: Python.h must precede system headers */
#include "stochastic.h"

#define Env Stochastic
#define OBS_TYPE float
#define ACT_TYPE int32_t
#define OBS_SIZE(env) 1
#define NUM_AGENTS(env) 1
#define RENDER_HEIGHT(env) STOCHASTIC_HEIGHT
#define RENDER_WIDTH(env) STOCHASTIC_WIDTH
#define c_reset stochastic_reset
#define c_step stochastic_step
#define c_close stochastic_close
#define c_render_text stochastic_render_text
#define c_render_rgb stochastic_render_rgb
#define c_validate stochastic_validate

static const char* LOG_NAMES[] = {"episode_return", "episode_length", "score", "action0"};

static int my_init(Env* env, PyObject* params) {
    if (shoal_param_int(params, "steps", &env->steps) || shoal_param_float(params, "p", &env->p)) return -1;
    env->last_fraction = -1.0f;
    return 0;
}

#define HAS_STATE
static PyObject* my_state(Env* env) {
    return Py_BuildValue("{s:i,s:i}", "tick", env->tick, "zeros", env->zeros);
}

#include "../vec_binding.h"
