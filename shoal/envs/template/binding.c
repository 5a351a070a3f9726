/* The template env's binding: names for binding.h, and its parameters. */
#include "../binding.h" /* first: Python.h must precede system headers */
#include "template.h"

#define Env Template
#define OBS_TYPE float
#define ACT_TYPE int32_t
#define OBS_SIZE(env) ((env)->length)
#define NUM_AGENTS(env) 1
#define RENDER_HEIGHT(env) TEMPLATE_CELL
#define RENDER_WIDTH(env) (TEMPLATE_CELL * (env)->length)
#define c_reset template_reset
#define c_step template_step
#define c_close template_close
#define c_render_text template_render_text
#define c_render_rgb template_render_rgb
#define c_validate template_validate

static const char* LOG_NAMES[] = {"episode_return", "episode_length", "score"};

static int my_init(Env* env, PyObject* params) {
    if (shoal_param_int(params, "length", &env->length) ||
        shoal_param_int(params, "max_steps", &env->max_steps))
        return -1;
    return 0;
}

#define HAS_STATE
static PyObject* my_state(Env* env) {
    return Py_BuildValue("{s:i,s:i}", "position", env->position, "tick", env->tick);
}

#include "../vec_binding.h"
