/* The tetris env's binding: names for binding.h, and its parameters. */
#include "../binding.h" /* first: Python.h must precede system headers */
#include "tetris.h"

#define Env Tetris
#define OBS_TYPE uint8_t
#define ACT_TYPE int32_t
#define OBS_SIZE(env) tetris_obs_size(env)
#define NUM_AGENTS(env) 1
#define RENDER_HEIGHT(env) TETRIS_RENDER_H
#define RENDER_WIDTH(env) TETRIS_RENDER_W
#define c_reset tetris_reset
#define c_step tetris_step
#define c_close tetris_close
#define c_render_text tetris_render_text
#define c_render_rgb tetris_render_rgb
#define c_validate tetris_validate
#define ACTION_MASK /* env->action_masks: the actions that would do something */

static const char* LOG_NAMES[] = {"episode_return", "episode_length", "score", "lines", "pieces"};

static int my_init(Env* env, PyObject* params) {
    if (shoal_param_int(params, "gravity_ticks", &env->gravity_ticks) ||
        shoal_param_int(params, "num_next", &env->num_next) ||
        shoal_param_int(params, "max_steps", &env->max_steps))
        return -1;
    if (env->num_next < 0 || env->num_next > TETRIS_MAX_NEXT || env->gravity_ticks < 1) {
        PyErr_Format(PyExc_ValueError, "tetris: num_next must be in [0, %d] and gravity_ticks >= 1",
                     TETRIS_MAX_NEXT);
        return -1;
    }
    return 0;
}

#define HAS_STATE
/* Internal state for tests: board is 200 bytes (row-major from the top, 1 = stack cell). */
static PyObject* my_state(Env* env) {
    uint8_t board[TETRIS_ROWS * TETRIS_COLS];
    for (int r = 0; r < TETRIS_ROWS; r++)
        for (int c = 0; c < TETRIS_COLS; c++) board[r * TETRIS_COLS + c] = env->rows[r] >> (c + 3) & 1;
    PyObject* next = PyList_New(env->num_next);
    PyObject* bag = PyList_New(TETRIS_PIECES);
    if (!next || !bag) {
        Py_XDECREF(next);
        Py_XDECREF(bag);
        return NULL;
    }
    for (int i = 0; i < env->num_next; i++) PyList_SET_ITEM(next, i, PyLong_FromLong(env->next[i]));
    for (int i = 0; i < TETRIS_PIECES; i++) PyList_SET_ITEM(bag, i, PyLong_FromLong(env->bag[i]));
    return Py_BuildValue(
        "{s:y#,s:i,s:i,s:i,s:i,s:i,s:i,s:N,s:N,s:i,s:i,s:i,s:i,s:i,s:i,s:f}", "board", (const char*)board,
        (Py_ssize_t)sizeof(board), "piece", env->piece, "rotation", env->rotation, "row", env->row, "col",
        env->col, "hold", env->hold, "can_hold", env->can_hold, "next", next, "bag", bag, "bag_pos",
        env->bag_pos, "fall_timer", env->fall_timer, "tick", env->tick, "score", env->score, "lines",
        env->lines, "pieces", env->pieces, "episode_return", (double)env->episode_return);
}

#include "../vec_binding.h"
