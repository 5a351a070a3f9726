/* forage: many agents share one grid and race to collect food.
 *
 * World: a `size` x `size` grid surrounded by walls. `num_agents` agents and `num_food` food items
 * start on distinct random cells. Each agent is one row of the env's buffers (agent k of env i is
 * row i * num_agents + k).
 * Actions: Discrete(5) per agent: 0 stay, 1 up (row - 1), 2 down (row + 1), 3 left (col - 1),
 * 4 right (col + 1).
 * Moves resolve one agent at a time, in an order drawn afresh every step as a uniform random
 * permutation from the env's rng (so no agent is favoured, and the result is deterministic given
 * the seed): an agent moves if its destination is empty or food at the moment its turn comes, and
 * otherwise stays. Two agents therefore never share a cell, and an agent may step into a cell that
 * another agent vacated earlier in the same step.
 * Reward: an agent that moves onto food gets exactly 1; the food disappears and a new item appears
 * at a uniformly random empty cell (never under an agent), so there are always `num_food` items.
 * Episode: no terminals; after `max_steps` steps every agent's row is truncated at once and the
 * whole world is reset.
 * Observation: a `view` x `view` uint8 window centred on the agent (view is odd): 0 empty,
 * 1 wall (anything outside the grid), 2 food, 3 agent. The centre cell is the observer itself and
 * always reads 3; every other 3 is another agent.
 * Log (one entry per env episode): episode_return = mean return per agent, episode_length,
 * score = food collected per agent (equal to the return, since food is the only reward).
 *
 * Layout: the grid is stored with a border of max(view/2, 1) wall cells, so an observation
 * is `view` memcpy's of `view` bytes and a move needs no bounds check (walls block it).
 */
#ifndef SHOAL_FORAGE_H
#define SHOAL_FORAGE_H

#include "../shoal_env.h"

enum { FORAGE_EMPTY = 0, FORAGE_WALL = 1, FORAGE_FOOD = 2, FORAGE_AGENT = 3 };

typedef struct {
    float episode_return;
    float episode_length;
    float score;
    float n; /* episodes counted: must stay last */
} Log;

typedef struct {
    /* buffer rows owned by Python (set by the binding): num_agents rows each */
    uint8_t* observations;
    uint8_t* final_observations;
    int32_t* actions;
    float* rewards;
    uint8_t* terminals;
    uint8_t* truncations;
    Log log;
    ShoalRng rng;
    /* parameters */
    int num_agents;
    int size;
    int num_food;
    int view;
    int max_steps;
    /* derived */
    int pad;    /* wall cells around the grid: view / 2, and at least 1 so walls block moves */
    int stride; /* size + 2 * pad: cells per stored row */
    int move_offset[5];
    /* state (allocated in forage_init) */
    uint8_t* grid;   /* stride x stride */
    int* agent_cell; /* index into grid, per agent */
    int* order;      /* this step's move order */
    int tick;
    int food_collected;
} Forage;

/* Sets the derived sizes and allocates; returns 0, or -1 when out of memory. */
static int forage_init(Forage* env) {
    env->pad = env->view / 2 > 1 ? env->view / 2 : 1;
    env->stride = env->size + 2 * env->pad;
    int offsets[5] = {0, -env->stride, env->stride, -1, 1};
    memcpy(env->move_offset, offsets, sizeof(offsets));
    env->grid = (uint8_t*)malloc((size_t)env->stride * (size_t)env->stride);
    env->agent_cell = (int*)calloc((size_t)env->num_agents, sizeof(int));
    env->order = (int*)calloc((size_t)env->num_agents, sizeof(int));
    if (!env->grid || !env->agent_cell || !env->order) return -1;
    memset(env->grid, FORAGE_WALL, (size_t)env->stride * (size_t)env->stride);
    for (int row = 0; row < env->size; row++)
        memset(env->grid + (row + env->pad) * env->stride + env->pad, FORAGE_EMPTY, (size_t)env->size);
    for (int k = 0; k < env->num_agents; k++) env->order[k] = k;
    return 0;
}

/* Grid index of interior cell (row, col). */
static inline int forage_cell(const Forage* env, int row, int col) {
    return (row + env->pad) * env->stride + col + env->pad;
}

/* A uniformly random empty interior cell. forage_init's caller guarantees that at most half of
 * the cells are ever occupied, so this takes two draws on average. */
static int forage_random_empty(Forage* env) {
    for (;;) {
        int c = forage_cell(env, shoal_rng_int(&env->rng, env->size), shoal_rng_int(&env->rng, env->size));
        if (env->grid[c] == FORAGE_EMPTY) return c;
    }
}

/* memcpy for short rows: fixed-size (so inlined) copies, overlapping at the ends, instead of a
 * library call per row. */
static inline void forage_copy_row(uint8_t* dst, const uint8_t* src, int n) {
    if (n >= 8) {
        int x = 0;
        for (; x + 8 <= n; x += 8) memcpy(dst + x, src + x, 8);
        if (x < n) memcpy(dst + n - 8, src + n - 8, 8);
    } else if (n >= 4) {
        memcpy(dst, src, 4);
        memcpy(dst + n - 4, src + n - 4, 4);
    } else {
        for (int x = 0; x < n; x++) dst[x] = src[x];
    }
}

static void forage_observe(Forage* env, uint8_t* obs) {
    int v = env->view, corner = (v / 2) * env->stride + v / 2;
    for (int k = 0; k < env->num_agents; k++) {
        const uint8_t* src = env->grid + env->agent_cell[k] - corner;
        uint8_t* dst = obs + (size_t)k * (size_t)(v * v);
        for (int y = 0; y < v; y++) forage_copy_row(dst + y * v, src + y * env->stride, v);
    }
}

static void forage_reset(Forage* env) {
    for (int row = 0; row < env->size; row++)
        memset(env->grid + forage_cell(env, row, 0), FORAGE_EMPTY, (size_t)env->size);
    for (int k = 0; k < env->num_agents; k++) {
        int c = forage_random_empty(env);
        env->grid[c] = FORAGE_AGENT;
        env->agent_cell[k] = c;
    }
    for (int f = 0; f < env->num_food; f++) env->grid[forage_random_empty(env)] = FORAGE_FOOD;
    env->tick = 0;
    env->food_collected = 0;
    forage_observe(env, env->observations);
}

static void forage_step(Forage* env) {
    int n = env->num_agents;
    int* order = env->order;
    /* Fisher-Yates over the previous order: still a uniform permutation */
    for (int i = n - 1; i > 0; i--) {
        int j = shoal_rng_int(&env->rng, i + 1);
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    uint8_t* grid = env->grid;
    for (int i = 0; i < n; i++) {
        int k = order[i];
        int from = env->agent_cell[k];
        int to = from + env->move_offset[env->actions[k]];
        uint8_t there = grid[to];
        /* moves are random early in training, so this is written without a branch: a blocked
         * agent (wall, agent, or its own cell when it stays) "moves" onto its own cell */
        int free_cell = (there & ~FORAGE_FOOD) == FORAGE_EMPTY; /* empty or food */
        int dest = free_cell ? to : from;
        grid[from] = FORAGE_EMPTY;
        grid[dest] = FORAGE_AGENT;
        env->agent_cell[k] = dest;
        if (there == FORAGE_FOOD) {
            env->rewards[k] = 1.0f;
            env->food_collected++;
            grid[forage_random_empty(env)] = FORAGE_FOOD;
        }
    }
    env->tick++;
    if (env->tick >= env->max_steps) {
        float per_agent = (float)env->food_collected / (float)n;
        env->log.episode_return += per_agent;
        env->log.episode_length += (float)env->tick;
        env->log.score += per_agent;
        env->log.n += 1.0f;
        memset(env->truncations, 1, (size_t)n);
        forage_observe(env, env->final_observations);
        forage_reset(env);
        return;
    }
    forage_observe(env, env->observations);
}

static int forage_render_text(Forage* env, char* buf, int cap) {
    static const char glyph[4] = {'.', '#', '*', 'A'};
    int len = shoal_appendf(buf, cap, 0, "tick %d  food collected %d\n", env->tick, env->food_collected);
    for (int row = -1; row <= env->size; row++) {
        for (int col = -1; col <= env->size; col++) {
            int inside = row >= 0 && row < env->size && col >= 0 && col < env->size;
            len = shoal_appendf(buf, cap, len, "%c", inside ? glyph[env->grid[forage_cell(env, row, col)]] : '#');
        }
        len = shoal_appendf(buf, cap, len, "\n");
    }
    return len;
}

/* Pixels per cell: 8, shrinking for large grids so the frame stays near 2048 px or less. */
#define FORAGE_CELL_PX(env) ((env)->size <= 256 ? 8 : ((env)->size <= 1024 ? 2 : 1))
static void forage_render_rgb(Forage* env, uint8_t* rgb) {
    int px = FORAGE_CELL_PX(env), side = env->size * px;
    shoal_fill_rgb(rgb, side, side, 20, 20, 30);
    for (int row = 0; row < env->size; row++)
        for (int col = 0; col < env->size; col++) {
            uint8_t c = env->grid[forage_cell(env, row, col)];
            if (c == FORAGE_FOOD) shoal_rect_rgb(rgb, side, side, row * px + px / 4, col * px + px / 4, px - px / 2 > 0 ? px - px / 2 : 1, px - px / 2 > 0 ? px - px / 2 : 1, 40, 200, 80);
            if (c == FORAGE_AGENT) shoal_rect_rgb(rgb, side, side, row * px + px / 8, col * px + px / 8, px - px / 4, px - px / 4, 230, 200, 40);
        }
}

static void forage_close(Forage* env) {
    free(env->grid);
    free(env->agent_cell);
    free(env->order);
    env->grid = NULL;
    env->agent_cell = NULL;
    env->order = NULL;
}

static int forage_int_order(const void* a, const void* b) {
    int x = *(const int*)a, y = *(const int*)b;
    return (x > y) - (x < y);
}

/* What a snapshot's fields may hold (shoal_env.h, "snapshot validation"): the layout of these
 * parameters; walls exactly around the grid (they keep every move and window inside it); exactly
 * num_agents agents, on the cells agent_cell names (distinct), and num_food food items (so free
 * cells stay common and food respawning terminates); order a permutation of the agents. */
static int forage_validate(const Forage* env, const Forage* made, ShoalCheck* check) {
    if (!(SHOAL_SAME(check, env, made, num_agents) && SHOAL_SAME(check, env, made, size) &&
          SHOAL_SAME(check, env, made, num_food) && SHOAL_SAME(check, env, made, view) &&
          SHOAL_SAME(check, env, made, max_steps) && SHOAL_SAME(check, env, made, pad) &&
          SHOAL_SAME(check, env, made, stride)))
        return 0;
    for (int k = 0; k < 5; k++)
        if (env->move_offset[k] != made->move_offset[k])
            return shoal_check_fail(check, "move_offset[%d] = %d but these parameters give %d", k,
                                    env->move_offset[k], made->move_offset[k]);
    int s = env->stride, p = env->pad, n = env->size, na = env->num_agents;
    if (na < 1) return shoal_check_fail(check, "num_agents = %d is below 1", na);
    long long agents = 0, food = 0;
    for (int i = 0; i < s * s; i++) {
        int r = i / s - p, c = i % s - p;
        int inside = r >= 0 && r < n && c >= 0 && c < n;
        uint8_t cell = env->grid[i];
        if (inside ? (cell == FORAGE_WALL || cell > FORAGE_AGENT) : cell != FORAGE_WALL)
            return shoal_check_fail(check, "grid at (%d, %d) = %u: %s", r, c, cell,
                                    inside ? "not empty (0), food (2) or an agent (3)"
                                           : "outside the grid, not a wall (1)");
        agents += cell == FORAGE_AGENT;
        food += cell == FORAGE_FOOD;
    }
    if (agents != na) return shoal_check_fail(check, "grid holds %lld agents, not num_agents = %d", agents, na);
    if (food != env->num_food)
        return shoal_check_fail(check, "grid holds %lld food items, not num_food = %d", food, env->num_food);
    if (!SHOAL_INTS(check, env, agent_cell, na, 0, s * s - 1) || !SHOAL_INTS(check, env, order, na, 0, na - 1))
        return 0;
    for (int k = 0; k < na; k++)
        if (env->grid[env->agent_cell[k]] != FORAGE_AGENT)
            return shoal_check_fail(check, "agent_cell[%d] = %d is not a cell holding an agent", k, env->agent_cell[k]);
    /* distinct cells and a permutation: sorted copies must be strictly increasing / 0..n-1 */
    int* sorted = (int*)malloc(sizeof(int) * (size_t)na * 2);
    if (!sorted) return shoal_check_fail(check, "agent_cell: out of memory while checking");
    memcpy(sorted, env->agent_cell, sizeof(int) * (size_t)na);
    memcpy(sorted + na, env->order, sizeof(int) * (size_t)na);
    qsort(sorted, (size_t)na, sizeof(int), forage_int_order);
    qsort(sorted + na, (size_t)na, sizeof(int), forage_int_order);
    int ok = 1;
    for (int k = 0; k < na && ok; k++) {
        if (k > 0 && sorted[k] == sorted[k - 1])
            ok = shoal_check_fail(check, "agent_cell holds cell %d twice: two agents on one cell", sorted[k]);
        else if (sorted[na + k] != k)
            ok = shoal_check_fail(check, "order is not a permutation of the %d agents", na);
    }
    free(sorted);
    return ok && SHOAL_INT(check, env, tick, 0, env->max_steps - 1) &&
           SHOAL_INT(check, env, food_collected, 0, (long long)env->tick * na);
}

#endif
