/* The recall env's binding: names for binding.h, and its parameters. */
#include "../binding.h" /* first: Python.h must precede system headers */
#include "recall.h"

#define Env Recall
#define OBS_TYPE float
#define ACT_TYPE int32_t
#define OBS_SIZE(env) ((env)->symbols + 1)
#define NUM_AGENTS(env) 1
#define RENDER_HEIGHT(env) (2 * RECALL_CELL)
#define RENDER_WIDTH(env) recall_render_width(env)
#define c_reset recall_reset
#define c_step recall_step
#define c_close recall_close
#define c_render_text recall_render_text
#define c_render_rgb recall_render_rgb
#define c_validate recall_validate

static const char* LOG_NAMES[] = {"episode_return", "episode_length", "score"};

static int my_init(Env* env, PyObject* params) {
    if (shoal_param_int(params, "symbols", &env->symbols) || shoal_param_int(params, "delay", &env->delay))
        return -1;
    env->last_answer = -1;
    env->last_symbol = -1;
    return 0;
}

#define HAS_STATE
static PyObject* my_state(Env* env) {
    return Py_BuildValue("{s:i,s:i}", "symbol", env->symbol, "tick", env->tick);
}

#include "../vec_binding.h"
