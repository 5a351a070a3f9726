/* The forage env's binding: names for binding.h, and its parameters. */
#include "../binding.h" /* first: Python.h must precede system headers */
#include "forage.h"

#define Env Forage
#define OBS_TYPE uint8_t
#define ACT_TYPE int32_t
#define OBS_SIZE(env) ((env)->view * (env)->view)
#define NUM_AGENTS(env) ((env)->num_agents)
#define RENDER_HEIGHT(env) ((env)->size * FORAGE_CELL_PX(env))
#define RENDER_WIDTH(env) ((env)->size * FORAGE_CELL_PX(env))
#define c_reset forage_reset
#define c_step forage_step
#define c_close forage_close
#define c_render_text forage_render_text
#define c_render_rgb forage_render_rgb
#define c_validate forage_validate

/* Heap arrays, for snapshots. */
#define ENV_HEAP(X)                                     \
    X(grid, (size_t)env->stride * (size_t)env->stride)  \
    X(agent_cell, env->num_agents)                      \
    X(order, env->num_agents)

static const char* LOG_NAMES[] = {"episode_return", "episode_length", "score"};

static int my_init(Env* env, PyObject* params) {
    if (shoal_param_int(params, "num_agents", &env->num_agents) ||
        shoal_param_int(params, "size", &env->size) ||
        shoal_param_int(params, "num_food", &env->num_food) ||
        shoal_param_int(params, "view", &env->view) ||
        shoal_param_int(params, "max_steps", &env->max_steps))
        return -1;
    if (env->view % 2 == 0) {
        PyErr_Format(PyExc_ValueError, "forage: view=%d must be odd (the window is centred on the agent)",
                     env->view);
        return -1;
    }
    /* food respawns by rejection sampling, which needs free cells to stay common */
    if (2 * (env->num_agents + env->num_food) > env->size * env->size) {
        PyErr_Format(PyExc_ValueError,
                     "forage: num_agents + num_food = %d fills more than half of the %dx%d grid; "
                     "use a larger size or fewer agents/food",
                     env->num_agents + env->num_food, env->size, env->size);
        return -1;
    }
    if (forage_init(env) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

#define HAS_STATE
/* grid: the size*size interior cells, row-major, as bytes; agents: (row, col) per agent. */
static PyObject* my_state(Env* env) {
    PyObject* grid = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)env->size * env->size);
    PyObject* agents = PyList_New(env->num_agents);
    if (!grid || !agents) {
        Py_XDECREF(grid);
        Py_XDECREF(agents);
        return NULL;
    }
    char* g = PyBytes_AS_STRING(grid);
    for (int row = 0; row < env->size; row++)
        memcpy(g + row * env->size, env->grid + forage_cell(env, row, 0), (size_t)env->size);
    for (int k = 0; k < env->num_agents; k++) {
        int c = env->agent_cell[k];
        PyObject* rc = Py_BuildValue("(ii)", c / env->stride - env->pad, c % env->stride - env->pad);
        if (!rc) {
            Py_DECREF(grid);
            Py_DECREF(agents);
            return NULL;
        }
        PyList_SET_ITEM(agents, k, rc);
    }
    return Py_BuildValue("{s:N,s:N,s:i,s:i}", "grid", grid, "agents", agents, "tick", env->tick,
                         "food_collected", env->food_collected);
}

#include "../vec_binding.h"
