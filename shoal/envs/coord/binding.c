/* The coord env's binding: names for binding.h, and its parameters. */
#include "../binding.h" /* first: Python.h must precede system headers */
#include "coord.h"

#define Env Coord
#define OBS_TYPE float
#define ACT_TYPE int32_t
#define OBS_SIZE(env) coord_obs_size(env)
#define NUM_AGENTS(env) COORD_AGENTS
#define RENDER_HEIGHT(env) (4 * COORD_CELL)
#define RENDER_WIDTH(env) (COORD_CELL * (env)->choices)
#define c_reset coord_reset
#define c_step coord_step
#define c_close coord_close
#define c_render_text coord_render_text
#define c_render_rgb coord_render_rgb
#define c_validate coord_validate

static const char* LOG_NAMES[] = {"episode_return", "episode_length", "score"};

static int my_init(Env* env, PyObject* params) {
    if (shoal_param_int(params, "choices", &env->choices) || shoal_param_int(params, "rounds", &env->rounds))
        return -1;
    env->last_action[0] = env->last_action[1] = -1;
    return 0;
}

#define HAS_STATE
static PyObject* my_state(Env* env) {
    return Py_BuildValue("{s:i,s:i,s:i}", "cue", env->cue, "round", env->round, "matched", env->matched);
}

#include "../vec_binding.h"
