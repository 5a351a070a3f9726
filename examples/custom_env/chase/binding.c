/* chase's binding: the names vec_binding.h needs. The include directory is shoal's env folder
 * (shoal/envs, which setup.py finds from the installed package), so the headers are included by
 * their bare names rather than with the in-tree "../" prefix. */
#include "binding.h" /* first: Python.h must precede system headers */
#include "chase.h"

#define Env Chase
#define OBS_TYPE float
#define ACT_TYPE int32_t
#define OBS_SIZE(env) CHASE_OBS
#define NUM_AGENTS(env) 1
#define RENDER_HEIGHT(env) (CHASE_CELL * (env)->size)
#define RENDER_WIDTH(env) (CHASE_CELL * (env)->size)
#define c_reset chase_reset
#define c_step chase_step
#define c_close chase_close
#define c_render_text chase_render_text
#define c_render_rgb chase_render_rgb
#define c_validate chase_validate

static const char* LOG_NAMES[] = {"episode_return", "episode_length", "score"};

static int my_init(Env* env, PyObject* params) {
    if (shoal_param_int(params, "size", &env->size) ||
        shoal_param_int(params, "max_steps", &env->max_steps))
        return -1;
    return 0;
}

#define HAS_STATE
static PyObject* my_state(Env* env) {
    return Py_BuildValue("{s:i,s:i,s:i,s:i,s:i}", "row", env->row, "col", env->col, "target_row",
                         env->target_row, "target_col", env->target_col, "tick", env->tick);
}

#include "vec_binding.h"
