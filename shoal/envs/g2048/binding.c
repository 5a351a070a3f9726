/* The g2048 env's binding: names for binding.h, its parameters, and its state for tests. */
#include "../binding.h" /* first: Python.h must precede system headers */
#include "g2048.h"

#define Env G2048
#define OBS_TYPE uint8_t
#define ACT_TYPE int32_t
#define OBS_SIZE(env) G2048_CELLS
#define NUM_AGENTS(env) 1
#define RENDER_HEIGHT(env) (4 * G2048_TILE_PX)
#define RENDER_WIDTH(env) (4 * G2048_TILE_PX)
#define c_reset g2048_reset
#define c_step g2048_step
#define c_close g2048_close
#define c_render_text g2048_render_text
#define c_render_rgb g2048_render_rgb
#define c_validate g2048_validate
#define ACTION_MASK /* env->action_masks: 1 for each move that changes the board */

static const char* LOG_NAMES[] = {"episode_return", "episode_length", "score", "max_tile"};

static int my_init(Env* env, PyObject* params) {
    if (shoal_param_int(params, "max_steps", &env->max_steps) ||
        shoal_param_float(params, "invalid_penalty", &env->invalid_penalty) ||
        shoal_param_float(params, "reward_scale", &env->reward_scale))
        return -1;
    return 0;
}

#define HAS_STATE
/* board: the 16 tile values (0 for empty), row-major; score: the classic 2048 score so far. */
static PyObject* my_state(Env* env) {
    PyObject* board = PyList_New(G2048_CELLS);
    if (!board) return NULL;
    for (int i = 0; i < G2048_CELLS; i++) {
        long value = env->board[i] ? 1L << env->board[i] : 0L;
        PyObject* x = PyLong_FromLong(value);
        if (!x) {
            Py_DECREF(board);
            return NULL;
        }
        PyList_SET_ITEM(board, i, x);
    }
    return Py_BuildValue("{s:N,s:L,s:i}", "board", board, "score", (long long)env->score, "tick",
                         env->tick);
}

#include "../vec_binding.h"
