/* chase: catch a target that jumps somewhere new each time it is caught (an out-of-tree env).
 *
 * Rules: a `size` x `size` open grid. The agent and the target start on two distinct random
 * cells. Actions (Discrete 5): 0 stay, 1 up, 2 down, 3 left, 4 right; a move off the grid stays
 * put. Stepping onto the target gives reward 1 and moves the target to a new random cell (not the
 * agent's); every other step gives 0. There is no terminal state: after `max_steps` steps the
 * episode is truncated (so the trainer bootstraps from the final observation's value).
 * Observation: 4 float32 in [-1, 1]: agent row and column / (size - 1), then the target's offset
 * (row, column) from the agent / (size - 1).
 * Log: episode_return, episode_length, score (targets caught in the episode).
 *
 * Built from this folder against shoal's headers (see ../setup.py); nothing in shoal is edited.
 */
#ifndef CHASE_H
#define CHASE_H

#include "shoal_env.h"

typedef struct {
    float episode_return;
    float episode_length;
    float score;
    float n; /* episodes counted: must stay last */
} Log;

typedef struct {
    /* buffer rows owned by Python (set by the binding) */
    float* observations;
    float* final_observations;
    int32_t* actions;
    float* rewards;
    uint8_t* terminals;
    uint8_t* truncations;
    Log log;
    ShoalRng rng;
    /* parameters */
    int size;
    int max_steps;
    /* state */
    int row, col, target_row, target_col;
    int tick;
    float episode_return;
} Chase;

#define CHASE_OBS 4

static void chase_observe(Chase* env) {
    float scale = 1.0f / (float)(env->size - 1);
    env->observations[0] = (float)env->row * scale;
    env->observations[1] = (float)env->col * scale;
    env->observations[2] = (float)(env->target_row - env->row) * scale;
    env->observations[3] = (float)(env->target_col - env->col) * scale;
}

static void chase_place_target(Chase* env) {
    do {
        env->target_row = shoal_rng_int(&env->rng, env->size);
        env->target_col = shoal_rng_int(&env->rng, env->size);
    } while (env->target_row == env->row && env->target_col == env->col);
}

static void chase_reset(Chase* env) {
    env->row = shoal_rng_int(&env->rng, env->size);
    env->col = shoal_rng_int(&env->rng, env->size);
    chase_place_target(env);
    env->tick = 0;
    env->episode_return = 0.0f;
    chase_observe(env);
}

static void chase_step(Chase* env) {
    static const int DR[5] = {0, -1, 1, 0, 0}, DC[5] = {0, 0, 0, -1, 1};
    int a = env->actions[0]; /* the binding has checked 0 <= a < 5 */
    env->tick++;
    env->row = shoal_clampi(env->row + DR[a], 0, env->size - 1);
    env->col = shoal_clampi(env->col + DC[a], 0, env->size - 1);
    float reward = 0.0f;
    if (env->row == env->target_row && env->col == env->target_col) {
        reward = 1.0f;
        chase_place_target(env);
    }
    env->rewards[0] = reward;
    env->episode_return += reward;
    chase_observe(env);
    if (env->tick >= env->max_steps) {
        env->truncations[0] = 1;
        env->log.episode_return += env->episode_return;
        env->log.episode_length += (float)env->tick;
        env->log.score += env->episode_return;
        env->log.n += 1.0f;
        memcpy(env->final_observations, env->observations, sizeof(float) * CHASE_OBS);
        chase_reset(env);
    }
}

static int chase_render_text(Chase* env, char* buf, int cap) {
    int len = 0;
    for (int r = 0; r < env->size; r++) {
        for (int c = 0; c < env->size; c++) {
            char ch = (r == env->row && c == env->col) ? 'A'
                      : (r == env->target_row && c == env->target_col) ? 'T' : '.';
            len = shoal_appendf(buf, cap, len, "%c", ch);
        }
        len = shoal_appendf(buf, cap, len, "\n");
    }
    return len;
}

#define CHASE_CELL 8
static void chase_render_rgb(Chase* env, uint8_t* rgb) {
    int side = CHASE_CELL * env->size;
    shoal_fill_rgb(rgb, side, side, 20, 20, 30);
    shoal_rect_rgb(rgb, side, side, CHASE_CELL * env->target_row, CHASE_CELL * env->target_col,
                   CHASE_CELL, CHASE_CELL, 40, 200, 80);
    shoal_rect_rgb(rgb, side, side, CHASE_CELL * env->row + 1, CHASE_CELL * env->col + 1,
                   CHASE_CELL - 2, CHASE_CELL - 2, 230, 200, 40);
}

static void chase_close(Chase* env) { (void)env; }

/* What a snapshot's fields may hold (shoal_env.h, "snapshot validation"): positions on the grid
 * (the render indexes by them), the target off the agent's cell, counters within an episode. */
static int chase_validate(const Chase* env, const Chase* made, ShoalCheck* check) {
    if (!(SHOAL_SAME(check, env, made, size) && SHOAL_SAME(check, env, made, max_steps) &&
          SHOAL_INT(check, env, row, 0, env->size - 1) && SHOAL_INT(check, env, col, 0, env->size - 1) &&
          SHOAL_INT(check, env, target_row, 0, env->size - 1) &&
          SHOAL_INT(check, env, target_col, 0, env->size - 1) && SHOAL_INT(check, env, tick, 0, env->max_steps - 1) &&
          SHOAL_FLOAT(check, env, episode_return, 0.0f, (float)env->tick)))
        return 0;
    if (env->row == env->target_row && env->col == env->target_col)
        return shoal_check_fail(check, "target (%d, %d) is on the agent's cell", env->target_row, env->target_col);
    return 1;
}

#endif
