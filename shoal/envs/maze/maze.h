/* maze: a new procedural grid maze every episode; reward only for reaching the goal.
 *
 * Rules:
 *  - The maze is a `size` x `size` grid of cells (5 <= size <= 127). Walls surround it. Open cells
 *    are carved by a randomised depth-first backtracker over the "lattice" cells, those with both
 *    coordinates odd: a perfect maze (exactly one path between any two open cells). When `size` is
 *    even, the last row and column stay wall too (the lattice needs an odd extent).
 *  - Each episode the agent and the goal are put on two distinct open cells drawn uniformly.
 *  - Actions (Discrete 5): 0 stay, 1 up, 2 down, 3 left, 4 right. Moving into a wall stays put.
 *  - Reward 1 on the step the agent enters the goal cell, which ends the episode (terminal);
 *    every other step gives 0. After `max_steps` steps without reaching it the episode is
 *    truncated (max_steps = 0 means 4 * size * size).
 * Observation: a `view` x `view` uint8 window (view odd) centred on the agent, row-major, row 0 at
 *   the top: 0 open, 1 wall (cells outside the maze read as wall), 2 goal. The agent itself is not
 *   drawn: it is always the centre cell.
 *   With `prev_action` on, one more row of `view` cells follows the window (view >= 5): cell k is 1
 *   if the previous step's action was k (0 stay .. 4 right), every other cell 0; the row is all 0 on
 *   the first observation of an episode. A policy without memory then knows its heading, which
 *   is what wall-following (keep a hand on one wall; it reaches every cell of a perfect maze)
 *   needs beyond the walls around it. Off by default, so the observation keeps its square shape.
 * Log: episode_return, episode_length, score (1 if the goal was reached, else 0).
 *
 * Speed: the maze is stored with a margin of view/2 wall cells on every side, so the window never
 * needs bounds checks (one memcpy per row), and a position is one index into that padded grid.
 * Everything is allocated once in maze_alloc; generation runs only at reset, iteratively, with a
 * preallocated stack.
 */
#ifndef SHOAL_MAZE_H
#define SHOAL_MAZE_H

#include "../shoal_env.h"

enum { MAZE_OPEN = 0, MAZE_WALL = 1, MAZE_GOAL = 2 };

typedef struct {
    float episode_return;
    float episode_length;
    float score;
    float n; /* episodes counted: must stay last */
} Log;

typedef struct {
    /* buffer rows owned by Python (set by the binding) */
    uint8_t* observations;
    uint8_t* final_observations;
    int32_t* actions;
    float* rewards;
    uint8_t* terminals;
    uint8_t* truncations;
    Log log;
    ShoalRng rng;
    /* parameters */
    int size;
    int view;
    int max_steps; /* resolved: never 0 */
    int prev_action; /* 1: the observation ends with a one-hot row of the previous action */
    /* layout, fixed at init */
    int pad;        /* view / 2: wall margin around the maze */
    int stride;     /* size + 2 * pad: row length of the padded grid */
    int lattice;    /* lattice cells per side, (size - 1) / 2 */
    int moves[5];   /* index offset of each action in the padded grid */
    uint8_t* cells; /* stride * stride, MAZE_OPEN / MAZE_WALL / MAZE_GOAL */
    int* stack;     /* lattice * lattice: the backtracker's path */
    int* open;      /* padded indices of the carved cells */
    int num_open;
    /* state */
    int agent; /* padded index */
    int goal;  /* padded index */
    int tick;
    int last_action; /* the previous step's action, -1 on the first step of an episode */
    float episode_return;
} Maze;

/* Padded index of maze cell (row, col). */
static inline int maze_index(const Maze* env, int row, int col) {
    return (row + env->pad) * env->stride + (col + env->pad);
}

/* Allocates the grid and generator buffers once; 0 on success, -1 when out of memory. */
static int maze_alloc(Maze* env) {
    env->pad = env->view / 2;
    env->stride = env->size + 2 * env->pad;
    env->lattice = (env->size - 1) / 2;
    int m = env->lattice;
    env->moves[0] = 0;
    env->moves[1] = -env->stride;
    env->moves[2] = env->stride;
    env->moves[3] = -1;
    env->moves[4] = 1;
    if (env->max_steps <= 0) env->max_steps = 4 * env->size * env->size;
    env->cells = (uint8_t*)malloc((size_t)env->stride * (size_t)env->stride);
    env->stack = (int*)malloc(sizeof(int) * (size_t)m * (size_t)m);
    env->open = (int*)malloc(sizeof(int) * (size_t)(2 * m * m));
    if (!env->cells || !env->stack || !env->open) return -1;
    return 0;
}

/* Randomised depth-first backtracking on the lattice: from the cell on top of the stack, carve
 * into a random unvisited neighbour (two cells away, opening the wall between) or pop. An
 * unvisited lattice cell is one still marked wall. */
static void maze_generate(Maze* env) {
    int m = env->lattice, s = env->stride;
    memset(env->cells, MAZE_WALL, (size_t)s * (size_t)s);
    env->num_open = 0;
    int first = shoal_rng_int(&env->rng, m * m);
    int sp = 0;
    env->stack[sp++] = first;
    int idx = maze_index(env, 2 * (first / m) + 1, 2 * (first % m) + 1);
    env->cells[idx] = MAZE_OPEN;
    env->open[env->num_open++] = idx;
    while (sp > 0) {
        int cell = env->stack[sp - 1];
        int i = cell / m, j = cell % m;
        int here = maze_index(env, 2 * i + 1, 2 * j + 1);
        int options[4], count = 0;
        /* lattice step, index step in the padded grid */
        if (i > 0 && env->cells[here - 2 * s] == MAZE_WALL) options[count++] = 0;
        if (i < m - 1 && env->cells[here + 2 * s] == MAZE_WALL) options[count++] = 1;
        if (j > 0 && env->cells[here - 2] == MAZE_WALL) options[count++] = 2;
        if (j < m - 1 && env->cells[here + 2] == MAZE_WALL) options[count++] = 3;
        if (count == 0) {
            sp--;
            continue;
        }
        int dir = options[count == 1 ? 0 : shoal_rng_int(&env->rng, count)];
        static const int lattice_step[4][2] = {{-1, 0}, {1, 0}, {0, -1}, {0, 1}};
        int step = lattice_step[dir][0] * s + lattice_step[dir][1];
        env->cells[here + step] = MAZE_OPEN;
        env->cells[here + 2 * step] = MAZE_OPEN;
        env->open[env->num_open++] = here + step;
        env->open[env->num_open++] = here + 2 * step;
        env->stack[sp++] = (i + lattice_step[dir][0]) * m + (j + lattice_step[dir][1]);
    }
}

/* Writes the view x view window around the agent: one row copy per window row; then, with
 * prev_action, the row holding the previous action one-hot. */
static inline void maze_observe(const Maze* env, uint8_t* out) {
    int v = env->view;
    const uint8_t* src = env->cells + (env->agent - env->pad * env->stride - env->pad);
    for (int r = 0; r < v; r++) {
        memcpy(out, src, (size_t)v);
        out += v;
        src += env->stride;
    }
    if (env->prev_action) {
        memset(out, 0, (size_t)v);
        if (env->last_action >= 0) out[env->last_action] = 1;
    }
}

static void maze_reset(Maze* env) {
    maze_generate(env);
    int n = env->num_open;
    int a = shoal_rng_int(&env->rng, n);
    int g = shoal_rng_int(&env->rng, n - 1);
    if (g >= a) g++; /* distinct from the agent's cell, still uniform */
    env->agent = env->open[a];
    env->goal = env->open[g];
    env->cells[env->goal] = MAZE_GOAL;
    env->tick = 0;
    env->last_action = -1;
    env->episode_return = 0.0f;
    maze_observe(env, env->observations);
}

static void maze_step(Maze* env) {
    env->tick++;
    env->last_action = env->actions[0];
    int next = env->agent + env->moves[env->actions[0]];
    if (env->cells[next] != MAZE_WALL) env->agent = next;
    int reached = env->agent == env->goal;
    if (!reached && env->tick < env->max_steps) {
        maze_observe(env, env->observations);
        return;
    }
    float reward = (float)reached;
    env->rewards[0] = reward;
    env->episode_return += reward;
    env->terminals[0] = (uint8_t)reached;
    env->truncations[0] = (uint8_t)!reached;
    env->log.episode_return += env->episode_return;
    env->log.episode_length += (float)env->tick;
    env->log.score += reward;
    env->log.n += 1.0f;
    maze_observe(env, env->final_observations);
    maze_reset(env);
}

static int maze_render_text(Maze* env, char* buf, int cap) {
    int len = 0;
    for (int r = 0; r < env->size; r++) {
        for (int c = 0; c < env->size; c++) {
            int idx = maze_index(env, r, c);
            static const char glyph[3] = {'.', '#', 'G'}; /* by MAZE_OPEN, MAZE_WALL, MAZE_GOAL */
            char ch = idx == env->agent ? 'A' : glyph[env->cells[idx]];
            len = shoal_appendf(buf, cap, len, "%c", ch);
        }
        len = shoal_appendf(buf, cap, len, "\n");
    }
    return len;
}

/* Pixels per cell: frames stay between ~80 and ~1000 pixels wide. */
#define MAZE_CELL_PX(env) ((env)->size <= 31 ? 16 : ((env)->size <= 63 ? 8 : 4))

static void maze_render_rgb(Maze* env, uint8_t* rgb) {
    int px = MAZE_CELL_PX(env), h = px * env->size, w = px * env->size;
    shoal_fill_rgb(rgb, h, w, 20, 20, 30);
    for (int r = 0; r < env->size; r++)
        for (int c = 0; c < env->size; c++) {
            uint8_t cell = env->cells[maze_index(env, r, c)];
            if (cell == MAZE_WALL) shoal_rect_rgb(rgb, h, w, r * px, c * px, px, px, 90, 90, 110);
            if (cell == MAZE_GOAL) shoal_rect_rgb(rgb, h, w, r * px, c * px, px, px, 40, 200, 80);
        }
    int ar = env->agent / env->stride - env->pad, ac = env->agent % env->stride - env->pad;
    int inset = px / 8;
    shoal_rect_rgb(rgb, h, w, ar * px + inset, ac * px + inset, px - 2 * inset, px - 2 * inset, 230, 200, 40);
}

static void maze_close(Maze* env) {
    free(env->cells);
    free(env->stack);
    free(env->open);
    env->cells = NULL;
    env->stack = NULL;
    env->open = NULL;
}

/* What a snapshot's fields may hold (shoal_env.h, "snapshot validation"): the layout of this
 * size and view; every cell outside the maze and on its outer ring a wall (what keeps the agent
 * and its window inside the padded grid); exactly one goal; the agent on an open cell inside.
 * stack, open and num_open are the generator's scratch, rewritten at every reset before use. */
static int maze_validate(const Maze* env, const Maze* made, ShoalCheck* check) {
    if (!(SHOAL_SAME(check, env, made, size) && SHOAL_SAME(check, env, made, view) &&
          SHOAL_SAME(check, env, made, max_steps) && SHOAL_SAME(check, env, made, prev_action) &&
          SHOAL_SAME(check, env, made, pad) &&
          SHOAL_SAME(check, env, made, stride) && SHOAL_SAME(check, env, made, lattice)))
        return 0;
    for (int k = 0; k < 5; k++)
        if (env->moves[k] != made->moves[k])
            return shoal_check_fail(check, "moves[%d] = %d but these parameters give %d", k, env->moves[k],
                                    made->moves[k]);
    int s = env->stride, p = env->pad, n = env->size, goals = 0;
    for (int i = 0; i < s * s; i++) {
        int r = i / s - p, c = i % s - p;
        int ring = r <= 0 || c <= 0 || r >= n - 1 || c >= n - 1;
        uint8_t cell = env->cells[i];
        if (cell > MAZE_GOAL || (ring && cell != MAZE_WALL))
            return shoal_check_fail(check, "cells at (%d, %d) = %u: %s", r, c, cell,
                                    ring ? "outside the maze or on its outer ring, not a wall (1)"
                                         : "not open (0), wall (1) or goal (2)");
        goals += cell == MAZE_GOAL;
    }
    if (goals != 1) return shoal_check_fail(check, "cells hold %d goal cells, not 1", goals);
    if (!(SHOAL_INT(check, env, agent, 0, s * s - 1) && SHOAL_INT(check, env, goal, 0, s * s - 1)))
        return 0;
    if (env->cells[env->agent] != MAZE_OPEN)
        return shoal_check_fail(check, "agent = %d is on a cell holding %u, not an open cell", env->agent,
                                env->cells[env->agent]);
    if (env->cells[env->goal] != MAZE_GOAL)
        return shoal_check_fail(check, "goal = %d is on a cell holding %u, not the goal", env->goal,
                                env->cells[env->goal]);
    return SHOAL_INT(check, env, num_open, 0, 2 * env->lattice * env->lattice) &&
           SHOAL_INT(check, env, tick, 0, env->max_steps - 1) && SHOAL_INT(check, env, last_action, -1, 4) &&
           SHOAL_FLOAT(check, env, episode_return, 0.0f, 1.0f);
}

#endif
