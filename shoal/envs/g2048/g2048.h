/* g2048: the sliding-tile game 2048 on a 4x4 board.
 *
 * Rules:
 *  - Tiles hold powers of two. Reset empties the board and spawns two tiles.
 *  - Actions (Discrete 4): 0 up, 1 down, 2 left, 3 right. Every tile slides as far as it can that
 *    way. Two equal tiles that meet merge into one of twice the value; a tile merges at most once
 *    per move, and merges are resolved starting from the side the tiles move towards (so sliding
 *    2 2 2 left gives 4 2, and 2 2 2 2 gives 4 4).
 *  - After a move that changed the board, one tile spawns on a uniformly chosen empty cell: a 2
 *    with probability 0.9, else a 4.
 *  - A move that would not change the board is invalid: the board stays as it is, nothing spawns,
 *    and the reward is -invalid_penalty.
 *  - Reward of a valid move: reward_scale * (sum of log2 of every tile created by a merge in that
 *    move), e.g. with the default 1/16 merging two 1024s into a 2048 gives 11/16. Log-scaling keeps
 *    rewards O(1) for PPO over the whole game while still paying more for bigger merges.
 *  - The episode ends (terminal) when, after a spawn, no move can change the board. It is
 *    truncated after max_steps steps (invalid moves count), so a stuck policy cannot run forever.
 * Observation: 16 uint8, row-major from the top-left cell: log2 of each tile, 0 for empty.
 * Action mask: 4 bytes per step, 1 for each move that would change the board (the valid moves),
 *   written with every observation, so a trainer can keep the policy off invalid moves.
 * Log: episode_return, episode_length, score (the classic 2048 score: the sum of the values of all
 *   tiles created by merges), max_tile (the value of the largest tile at the end).
 */
#ifndef SHOAL_G2048_H
#define SHOAL_G2048_H

#include "../shoal_env.h"

#define G2048_CELLS 16
#define G2048_MAX_EXPONENT 17 /* 131072: the largest tile a 4x4 board can hold */

typedef struct {
    float episode_return;
    float episode_length;
    float score;
    float max_tile;
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
    uint8_t* action_masks; /* 4 per agent: 1 where the move changes the board */
    Log log;
    ShoalRng rng;
    /* parameters */
    int max_steps;
    float invalid_penalty;
    float reward_scale;
    /* state */
    uint8_t board[G2048_CELLS]; /* log2 of each tile, 0 for empty, row-major */
    int tick;
    int64_t score;
    float episode_return;
} G2048;

/* For each action, the four lines of the board as cell indices, each listed from the edge the
 * tiles slide towards: merges are resolved in this order. */
static const uint8_t G2048_LINES[4][4][4] = {
    {{0, 4, 8, 12}, {1, 5, 9, 13}, {2, 6, 10, 14}, {3, 7, 11, 15}}, /* up */
    {{12, 8, 4, 0}, {13, 9, 5, 1}, {14, 10, 6, 2}, {15, 11, 7, 3}}, /* down */
    {{0, 1, 2, 3}, {4, 5, 6, 7}, {8, 9, 10, 11}, {12, 13, 14, 15}}, /* left */
    {{3, 2, 1, 0}, {7, 6, 5, 4}, {11, 10, 9, 8}, {15, 14, 13, 12}}, /* right */
};

/* Slides and merges the board in direction `action`. Returns whether anything changed; adds the
 * exponents and values of created tiles to *merged_log2 and *merged_value. */
static inline int g2048_move(uint8_t* board, int action, int* merged_log2, int64_t* merged_value) {
    int changed = 0;
    for (int l = 0; l < 4; l++) {
        const uint8_t* line = G2048_LINES[action][l];
        uint8_t out[4] = {0, 0, 0, 0};
        int n = 0, mergeable = 0; /* mergeable: out[n-1] was placed, not made by a merge */
        for (int k = 0; k < 4; k++) {
            uint8_t v = board[line[k]];
            if (v == 0) continue;
            if (mergeable && out[n - 1] == v) {
                out[n - 1] = (uint8_t)(v + 1);
                *merged_log2 += v + 1;
                *merged_value += (int64_t)1 << (v + 1);
                mergeable = 0;
            } else {
                out[n++] = v;
                mergeable = 1;
            }
        }
        for (int k = 0; k < 4; k++) {
            changed |= board[line[k]] != out[k];
            board[line[k]] = out[k];
        }
    }
    return changed;
}

/* Puts a 2 (p 0.9) or a 4 on a uniformly chosen empty cell; the board must have one. */
static inline void g2048_spawn(G2048* env) {
    int empty = 0;
    for (int i = 0; i < G2048_CELLS; i++) empty += env->board[i] == 0;
    int k = shoal_rng_int(&env->rng, empty);
    for (int i = 0; i < G2048_CELLS; i++) {
        if (env->board[i] != 0) continue;
        if (k-- == 0) {
            env->board[i] = shoal_rng_int(&env->rng, 10) == 0 ? 2 : 1;
            return;
        }
    }
}

/* Whether any move can change the board: an empty cell or two equal neighbours. */
static inline int g2048_can_move(const uint8_t* b) {
    for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) {
            uint8_t v = b[4 * r + c];
            if (v == 0) return 1;
            if (c < 3 && v == b[4 * r + c + 1]) return 1;
            if (r < 3 && v == b[4 * r + c + 4]) return 1;
        }
    return 0;
}

/* action_masks[a] = whether move a changes the board (the moves g2048_step does not refuse). */
static inline void g2048_write_mask(G2048* env) {
    for (int a = 0; a < 4; a++) {
        uint8_t board[G2048_CELLS];
        int merged_log2 = 0;
        int64_t merged_value = 0;
        memcpy(board, env->board, G2048_CELLS);
        env->action_masks[a] = (uint8_t)g2048_move(board, a, &merged_log2, &merged_value);
    }
}

static void g2048_reset(G2048* env) {
    memset(env->board, 0, sizeof(env->board));
    g2048_spawn(env);
    g2048_spawn(env);
    env->tick = 0;
    env->score = 0;
    env->episode_return = 0.0f;
    memcpy(env->observations, env->board, G2048_CELLS);
    g2048_write_mask(env);
}

static void g2048_step(G2048* env) {
    env->tick++;
    int merged_log2 = 0;
    int64_t merged_value = 0;
    float reward;
    int over = 0;
    if (g2048_move(env->board, env->actions[0], &merged_log2, &merged_value)) {
        g2048_spawn(env);
        env->score += merged_value;
        reward = env->reward_scale * (float)merged_log2;
        over = !g2048_can_move(env->board);
    } else {
        reward = 0.0f - env->invalid_penalty; /* not -x: keeps +0 when the penalty is 0 */
    }
    env->rewards[0] = reward;
    env->episode_return += reward;
    if (!over && env->tick < env->max_steps) {
        memcpy(env->observations, env->board, G2048_CELLS);
        g2048_write_mask(env);
        return;
    }
    env->terminals[0] = (uint8_t)over;
    env->truncations[0] = (uint8_t)!over;
    uint8_t top = 0;
    for (int i = 0; i < G2048_CELLS; i++) top = env->board[i] > top ? env->board[i] : top;
    env->log.episode_return += env->episode_return;
    env->log.episode_length += (float)env->tick;
    env->log.score += (float)env->score;
    env->log.max_tile += (float)(1 << top);
    env->log.n += 1.0f;
    memcpy(env->final_observations, env->board, G2048_CELLS);
    g2048_reset(env);
}

static int g2048_render_text(G2048* env, char* buf, int cap) {
    int len = 0;
    for (int r = 0; r < 4; r++) {
        for (int c = 0; c < 4; c++) {
            uint8_t v = env->board[4 * r + c];
            if (v == 0)
                len = shoal_appendf(buf, cap, len, "%7s", ".");
            else
                len = shoal_appendf(buf, cap, len, "%7d", 1 << v);
        }
        len = shoal_appendf(buf, cap, len, "\n");
    }
    return shoal_appendf(buf, cap, len, "score %lld\n", (long long)env->score);
}

#define G2048_TILE_PX 32

/* One colour per tile: empty is dark; bigger tiles go from pale to saturated orange-red. */
static void g2048_render_rgb(G2048* env, uint8_t* rgb) {
    int side = 4 * G2048_TILE_PX;
    shoal_fill_rgb(rgb, side, side, 20, 20, 30);
    for (int i = 0; i < G2048_CELLS; i++) {
        int v = env->board[i];
        int r = i / 4, c = i % 4;
        uint8_t red = v ? 240 : 50;
        uint8_t green = v ? (uint8_t)(230 - 12 * v) : 50, blue = v ? (uint8_t)(200 - 11 * v) : 60;
        shoal_rect_rgb(rgb, side, side, r * G2048_TILE_PX + 2, c * G2048_TILE_PX + 2, G2048_TILE_PX - 4,
                       G2048_TILE_PX - 4, red, green, blue);
    }
}

static void g2048_close(G2048* env) { (void)env; }

/* What a snapshot's fields may hold (shoal_env.h, "snapshot validation"): tiles up to the
 * largest a board holds (larger exponents would overflow the shifts that value them), a score
 * within what the steps taken can create. */
static int g2048_validate(const G2048* env, const G2048* made, ShoalCheck* check) {
    float per_step = 8.0f * (G2048_MAX_EXPONENT + 1) * env->reward_scale + env->invalid_penalty;
    return SHOAL_SAME(check, env, made, max_steps) && SHOAL_SAME(check, env, made, invalid_penalty) &&
           SHOAL_SAME(check, env, made, reward_scale) &&
           SHOAL_BYTES(check, env, board, G2048_CELLS, 0, G2048_MAX_EXPONENT) &&
           SHOAL_INT(check, env, tick, 0, env->max_steps - 1) &&
           SHOAL_INT(check, env, score, 0, (long long)env->tick << (G2048_MAX_EXPONENT + 4)) &&
           SHOAL_FLOAT(check, env, episode_return, -SHOAL_SUM_BOUND(env->tick, per_step),
                       SHOAL_SUM_BOUND(env->tick, per_step));
}

#endif
