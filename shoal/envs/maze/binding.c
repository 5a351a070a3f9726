/* The maze env's binding: names for binding.h, its parameters, and its state for tests. */
#include "../binding.h" /* first: Python.h must precede system headers */
#include "maze.h"

#define Env Maze
#define OBS_TYPE uint8_t
#define ACT_TYPE int32_t
#define OBS_SIZE(env) ((env)->view * ((env)->view + ((env)->prev_action ? 1 : 0)))
#define NUM_AGENTS(env) 1
#define RENDER_HEIGHT(env) (MAZE_CELL_PX(env) * (env)->size)
#define RENDER_WIDTH(env) (MAZE_CELL_PX(env) * (env)->size)
#define c_reset maze_reset
#define c_step maze_step
#define c_close maze_close
#define c_render_text maze_render_text
#define c_render_rgb maze_render_rgb
#define c_validate maze_validate

static const char* LOG_NAMES[] = {"episode_return", "episode_length", "score"};

static int my_init(Env* env, PyObject* params) {
    if (shoal_param_int(params, "size", &env->size) || shoal_param_int(params, "view", &env->view) ||
        shoal_param_int(params, "max_steps", &env->max_steps) ||
        shoal_param_int(params, "prev_action", &env->prev_action))
        return -1;
    if (env->size < 5 || env->view < 1 || env->view % 2 == 0) {
        PyErr_Format(PyExc_ValueError, "maze: size=%d must be >= 5 and view=%d must be odd", env->size,
                     env->view);
        return -1;
    }
    if (env->prev_action && env->view < 5) {
        PyErr_Format(PyExc_ValueError,
                     "maze: prev_action=True needs view >= 5 (the previous action is a row of view cells, "
                     "one per action), got view=%d; use view=5 or more",
                     env->view);
        return -1;
    }
    env->prev_action = env->prev_action != 0;
    if (maze_alloc(env) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* Heap arrays, for snapshots: the padded grid and the generator's buffers. */
#define ENV_HEAP(X)                                         \
    X(cells, (size_t)env->stride * (size_t)env->stride)     \
    X(stack, (size_t)env->lattice * (size_t)env->lattice)   \
    X(open, (size_t)2 * env->lattice * env->lattice)

#define HAS_STATE
/* grid: size*size bytes, row-major (0 open, 1 wall, 2 goal); agent, goal: (row, col);
 * last_action: the previous step's action, -1 on an episode's first step. */
static PyObject* my_state(Env* env) {
    int n = env->size;
    PyObject* grid = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n * n);
    if (!grid) return NULL;
    char* out = PyBytes_AS_STRING(grid);
    for (int r = 0; r < n; r++) memcpy(out + (size_t)r * n, env->cells + maze_index(env, r, 0), (size_t)n);
    int s = env->stride, p = env->pad;
    return Py_BuildValue("{s:N,s:i,s:(ii),s:(ii),s:i,s:i,s:i}", "grid", grid, "size", n, "agent",
                         env->agent / s - p, env->agent % s - p, "goal", env->goal / s - p,
                         env->goal % s - p, "tick", env->tick, "max_steps", env->max_steps,
                         "last_action", env->last_action);
}

#include "../vec_binding.h"
