/* The bandit env's binding: names for binding.h, and its parameters. */
#include "../binding.h" /* first: Python.h must precede system headers */
#include "bandit.h"

#define Env Bandit
#define OBS_TYPE float
#define ACT_TYPE int32_t
#define OBS_SIZE(env) ((env)->arms + 1)
#define NUM_AGENTS(env) 1
#define RENDER_HEIGHT(env) (2 * BANDIT_CELL)
#define RENDER_WIDTH(env) (BANDIT_CELL * (env)->arms)
#define c_reset bandit_reset
#define c_step bandit_step
#define c_close bandit_close
#define c_render_text bandit_render_text
#define c_render_rgb bandit_render_rgb
#define c_validate bandit_validate

static const char* LOG_NAMES[] = {"episode_return", "episode_length", "score"};

static int my_init(Env* env, PyObject* params) {
    if (shoal_param_int(params, "arms", &env->arms) || shoal_param_int(params, "delay", &env->delay) ||
        shoal_param_int(params, "best_arm", &env->best_arm_param) ||
        shoal_param_float(params, "best_prob", &env->best_prob) ||
        shoal_param_float(params, "other_prob", &env->other_prob))
        return -1;
    if (env->best_arm_param >= env->arms) {
        PyErr_Format(PyExc_ValueError,
                     "bandit: best_arm=%d is not an arm (arms=%d): use an index in [0, arms) "
                     "or -1 to draw it each episode",
                     env->best_arm_param, env->arms);
        return -1;
    }
    return 0;
}

#define HAS_STATE
static PyObject* my_state(Env* env) {
    return Py_BuildValue("{s:i,s:i,s:i}", "best_arm", env->best_arm, "chosen_arm", env->chosen_arm,
                         "tick", env->tick);
}

#include "../vec_binding.h"
