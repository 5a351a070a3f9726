/* The password env's binding: names for binding.h, and its parameters. */
#include "../binding.h" /* first: Python.h must precede system headers */
#include "password.h"

#define Env Password
#define OBS_TYPE float
#define ACT_TYPE int32_t
#define OBS_SIZE(env) ((env)->length)
#define NUM_AGENTS(env) 1
#define RENDER_HEIGHT(env) PASSWORD_CELL
#define RENDER_WIDTH(env) (PASSWORD_CELL * (env)->length)
#define c_reset password_reset
#define c_step password_step
#define c_close password_close
#define c_render_text password_render_text
#define c_render_rgb password_render_rgb
#define c_validate password_validate

static const char* LOG_NAMES[] = {"episode_return", "episode_length", "score", "progress"};

static int my_init(Env* env, PyObject* params) {
    if (shoal_param_int(params, "length", &env->length) || shoal_param_int(params, "code", &env->code))
        return -1;
    env->last_result = -1;
    return 0;
}

#define HAS_STATE
static PyObject* my_state(Env* env) {
    return Py_BuildValue("{s:i}", "position", env->position);
}

#include "../vec_binding.h"
