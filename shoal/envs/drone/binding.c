/* The drone env's binding: names for binding.h, and its parameters. */
#include "../binding.h" /* first: Python.h must precede system headers */
#include "drone.h"

#define Env Drone
#define OBS_TYPE float
#define ACT_TYPE float
#define OBS_SIZE(env) DRONE_OBS
#define NUM_AGENTS(env) 1
#define RENDER_HEIGHT(env) DRONE_VIEW
#define RENDER_WIDTH(env) (2 * DRONE_VIEW + 8)
#define c_reset drone_reset
#define c_step drone_step
#define c_close drone_close
#define c_render_text drone_render_text
#define c_render_rgb drone_render_rgb
#define c_validate drone_validate

static const char* LOG_NAMES[] = {"episode_return", "episode_length", "score", "mean_distance",
                                  "crashed"};

static int my_init(Env* env, PyObject* params) {
    if (shoal_param_int(params, "max_steps", &env->max_steps) ||
        shoal_param_float(params, "arena", &env->arena) ||
        shoal_param_float(params, "target_radius", &env->target_radius) ||
        shoal_param_float(params, "target_bonus", &env->target_bonus) ||
        shoal_param_float(params, "crash_penalty", &env->crash_penalty))
        return -1;
    /* a valid state before the first reset, so state() and render() never read garbage */
    env->quat[0] = 1.0f;
    drone_update_rotation(env);
    return 0;
}

static PyObject* drone_vec3(const float* v) {
    return Py_BuildValue("(ddd)", (double)v[0], (double)v[1], (double)v[2]);
}

#define HAS_STATE
static PyObject* my_state(Env* env) {
    const float* r = env->rot;
    return Py_BuildValue(
        "{s:N,s:N,s:(dddd),s:N,s:(ddddddddd),s:N,s:d,s:i,s:i,s:d}",
        "pos", drone_vec3(env->pos), "vel", drone_vec3(env->vel),
        "quat", (double)env->quat[0], (double)env->quat[1], (double)env->quat[2], (double)env->quat[3],
        "omega", drone_vec3(env->omega),
        "rot", (double)r[0], (double)r[1], (double)r[2], (double)r[3], (double)r[4], (double)r[5],
        (double)r[6], (double)r[7], (double)r[8],
        "target", drone_vec3(env->target), "distance", (double)env->distance, "tick", env->tick,
        "score", env->score, "episode_return", (double)env->episode_return);
}

#include "../vec_binding.h"
