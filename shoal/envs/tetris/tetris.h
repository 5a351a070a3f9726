/* tetris: the falling-block game on a 10 x 20 board, one agent per env.
 *
 * Rules
 *  - Board: 10 columns x 20 rows, row 0 at the top. The seven tetrominoes (ids 0..6: I O T S Z J
 *    L) use the standard guideline shapes and clockwise rotation states inside their bounding box
 *    (I 4x4, O 2x2, the others 3x3). A new piece appears with its box's top-left corner at row 0,
 *    column 3 (the O one column further right), rotation 0: I on row 1 columns 3-6, O on columns
 *    4-5, the others on rows 0-1 columns 3-5.
 *  - Pieces come from a 7-bag: the seven ids shuffled (Fisher-Yates with the env's rng), dealt in
 *    order, then a fresh shuffle. `num_next` upcoming pieces are visible.
 *  - Actions (Discrete(8)): 0 noop, 1 left, 2 right, 3 rotate clockwise, 4 rotate counter-
 *    clockwise, 5 soft drop, 6 hard drop, 7 hold. A move or rotation that would overlap the stack
 *    or leave the board does nothing. Wall kicks: a rotation that collides is retried shifted by
 *    -1, +1, -2, +2 columns (in that order) on the same row; the first free spot wins, otherwise
 *    the rotation does nothing. Soft drop moves the piece down one row if it can (it never locks
 *    the piece by itself). Hard drop moves it to the lowest free row and locks it at once.
 *    Hold swaps the current piece with the held one (or, when nothing is held yet, stores it and
 *    takes the next piece); the piece coming out starts at the spawn position in rotation 0.
 *    Hold is allowed once per piece: it is blocked again until a piece locks.
 *  - Gravity: every `gravity_ticks` steps since the piece appeared (or last fell) it falls one
 *    row; if it cannot, it locks. A step in which a piece locks applies no gravity to the new one.
 *  - Locking writes the piece into the stack, clears every full row (rows above shift down) and
 *    spawns the next piece. If the new piece (from the queue or out of hold) overlaps the stack,
 *    the game is over: terminal.
 *  - Score (classic points, level 1): 100 / 300 / 500 / 800 for clearing 1 / 2 / 3 / 4 rows at
 *    once, 1 per row of soft drop, 2 per row of hard drop. Reward = points / 1000, so a four-row
 *    clear is worth 0.8 and a hard drop from the top about 0.04.
 *  - After `max_steps` steps the episode is truncated.
 *
 * Action mask: 8 bytes per step, 1 for each action that would do something (noop and hard drop
 *   always; left/right/soft drop when the piece can move there; a rotation when some kick fits;
 *   hold while allowed), written with every observation.
 * Observation: uint8, 200 + 7 * (num_next + 2) + 3 values
 *    [0, 200)         board, row-major from the top: 0 empty, 1 stack, 2 falling piece
 *    next 7           current piece id, one-hot
 *    next 7*num_next  upcoming pieces, one-hot each, soonest first
 *    next 7           held piece, one-hot (all zero when nothing is held)
 *    last 3           rotation (0-3), hold allowed (0/1), steps since the last fall (capped at 255)
 *
 * The board is a bitboard: one uint32 per row with bit (column + 3) set for a filled cell and the
 * bits outside the ten columns always set, plus four full rows under the floor, so a collision
 * test is four AND operations and a full row is simply all ones.
 */
#ifndef SHOAL_TETRIS_H
#define SHOAL_TETRIS_H

#include "../shoal_env.h"

#define TETRIS_COLS 10
#define TETRIS_ROWS 20
#define TETRIS_PIECES 7
#define TETRIS_MAX_NEXT 5
#define TETRIS_SPAWN_COL 3
#define TETRIS_EMPTY_ROW 0xFFFFE007u /* walls: bits 0-2 and 13-31 set */
#define TETRIS_FULL_ROW 0xFFFFFFFFu
#define TETRIS_NO_PIECE (-1)
#define TETRIS_TAIL 3 /* rotation, hold allowed, fall timer */

enum {
    TETRIS_NOOP,
    TETRIS_LEFT,
    TETRIS_RIGHT,
    TETRIS_ROTATE_CW,
    TETRIS_ROTATE_CCW,
    TETRIS_SOFT_DROP,
    TETRIS_HARD_DROP,
    TETRIS_HOLD,
    TETRIS_NUM_ACTIONS
};

/* Row masks of each piece's bounding box: [piece][rotation][box row], bit k = box column k.
 * Rotation r is r quarter turns clockwise from the spawn state. */
static const uint8_t TETRIS_SHAPES[TETRIS_PIECES][4][4] = {
    {{0x0, 0xf, 0x0, 0x0}, {0x4, 0x4, 0x4, 0x4}, {0x0, 0x0, 0xf, 0x0}, {0x2, 0x2, 0x2, 0x2}}, /* I */
    {{0x6, 0x6, 0x0, 0x0}, {0x6, 0x6, 0x0, 0x0}, {0x6, 0x6, 0x0, 0x0}, {0x6, 0x6, 0x0, 0x0}}, /* O */
    {{0x2, 0x7, 0x0, 0x0}, {0x2, 0x6, 0x2, 0x0}, {0x0, 0x7, 0x2, 0x0}, {0x2, 0x3, 0x2, 0x0}}, /* T */
    {{0x6, 0x3, 0x0, 0x0}, {0x2, 0x6, 0x4, 0x0}, {0x0, 0x6, 0x3, 0x0}, {0x1, 0x3, 0x2, 0x0}}, /* S */
    {{0x3, 0x6, 0x0, 0x0}, {0x4, 0x6, 0x2, 0x0}, {0x0, 0x3, 0x6, 0x0}, {0x2, 0x3, 0x1, 0x0}}, /* Z */
    {{0x1, 0x7, 0x0, 0x0}, {0x6, 0x2, 0x2, 0x0}, {0x0, 0x7, 0x4, 0x0}, {0x2, 0x2, 0x3, 0x0}}, /* J */
    {{0x4, 0x7, 0x0, 0x0}, {0x2, 0x2, 0x6, 0x0}, {0x0, 0x7, 0x1, 0x0}, {0x3, 0x2, 0x2, 0x0}}, /* L */
};
static const char TETRIS_NAMES[TETRIS_PIECES] = {'I', 'O', 'T', 'S', 'Z', 'J', 'L'};
static const uint8_t TETRIS_COLORS[TETRIS_PIECES][3] = {
    {40, 200, 230}, {240, 210, 40}, {170, 70, 200}, {70, 200, 70},
    {220, 60, 60},  {50, 90, 220},  {240, 140, 30},
};
static const int TETRIS_LINE_POINTS[5] = {0, 100, 300, 500, 800};
static const int TETRIS_KICKS[5] = {0, -1, 1, -2, 2};
#define TETRIS_POINTS_TO_REWARD 0.001f

/* Byte i of TETRIS_BITS_TO_BYTES[b] is bit i of b: expands 8 board cells to 8 observation bytes. */
#define TETRIS_SPREAD(b)                                                                            \
    ((uint64_t)((b) >> 0 & 1) | (uint64_t)((b) >> 1 & 1) << 8 | (uint64_t)((b) >> 2 & 1) << 16 |    \
     (uint64_t)((b) >> 3 & 1) << 24 | (uint64_t)((b) >> 4 & 1) << 32 | (uint64_t)((b) >> 5 & 1) << 40 | \
     (uint64_t)((b) >> 6 & 1) << 48 | (uint64_t)((b) >> 7 & 1) << 56)
#define TETRIS_S4(b) TETRIS_SPREAD(b), TETRIS_SPREAD(b + 1), TETRIS_SPREAD(b + 2), TETRIS_SPREAD(b + 3)
#define TETRIS_S16(b) TETRIS_S4(b), TETRIS_S4(b + 4), TETRIS_S4(b + 8), TETRIS_S4(b + 12)
#define TETRIS_S64(b) TETRIS_S16(b), TETRIS_S16(b + 16), TETRIS_S16(b + 32), TETRIS_S16(b + 48)
static const uint64_t TETRIS_BITS_TO_BYTES[256] = {TETRIS_S64(0), TETRIS_S64(64), TETRIS_S64(128),
                                                   TETRIS_S64(192)};

typedef struct {
    float episode_return;
    float episode_length;
    float score;
    float lines;
    float pieces;
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
    uint8_t* action_masks; /* 8 per agent: 1 for each action that can do something now */
    Log log;
    ShoalRng rng;
    /* parameters */
    int gravity_ticks;
    int num_next;
    int max_steps;
    /* state */
    uint32_t rows[TETRIS_ROWS + 4]; /* bitboard; the last four rows are the floor */
    uint8_t colors[TETRIS_ROWS][TETRIS_COLS]; /* piece id + 1 of each stack cell, for rendering */
    int piece, rotation, row, col; /* the falling piece and its box's top-left corner */
    int hold;                      /* TETRIS_NO_PIECE when nothing is held */
    int can_hold;
    int next[TETRIS_MAX_NEXT];
    int bag[TETRIS_PIECES];
    int bag_pos; /* next index of bag to deal; TETRIS_PIECES when the bag is used up */
    int fall_timer;
    int tick;
    int score;
    int lines;
    int pieces; /* pieces spawned this episode (out of hold not counted) */
    float episode_return;
} Tetris;

static inline int tetris_obs_size(const Tetris* env) {
    return TETRIS_ROWS * TETRIS_COLS + TETRIS_PIECES * (env->num_next + 2) + TETRIS_TAIL;
}

static inline int tetris_collides(const Tetris* env, int piece, int rotation, int row, int col) {
    if (col < -3 || row < 0) return 1;
    const uint8_t* shape = TETRIS_SHAPES[piece][rotation];
    const uint32_t* r = env->rows + row;
    int shift = col + 3;
    return ((r[0] & ((uint32_t)shape[0] << shift)) | (r[1] & ((uint32_t)shape[1] << shift)) |
            (r[2] & ((uint32_t)shape[2] << shift)) | (r[3] & ((uint32_t)shape[3] << shift))) != 0;
}

static int tetris_deal(Tetris* env) {
    if (env->bag_pos >= TETRIS_PIECES) {
        for (int i = 0; i < TETRIS_PIECES; i++) env->bag[i] = i;
        for (int i = TETRIS_PIECES - 1; i > 0; i--) {
            int j = shoal_rng_int(&env->rng, i + 1);
            int t = env->bag[i];
            env->bag[i] = env->bag[j];
            env->bag[j] = t;
        }
        env->bag_pos = 0;
    }
    return env->bag[env->bag_pos++];
}

/* Puts `piece` at the spawn position; returns 0 when it overlaps the stack (game over). */
static int tetris_place_new(Tetris* env, int piece) {
    env->piece = piece;
    env->rotation = 0;
    env->row = 0;
    env->col = TETRIS_SPAWN_COL;
    env->fall_timer = 0;
    return !tetris_collides(env, piece, 0, 0, TETRIS_SPAWN_COL);
}

/* Takes the next piece from the queue (refilled from the bag). */
static int tetris_spawn(Tetris* env) {
    int piece;
    if (env->num_next > 0) {
        piece = env->next[0];
        for (int i = 1; i < env->num_next; i++) env->next[i - 1] = env->next[i];
        env->next[env->num_next - 1] = tetris_deal(env);
    } else {
        piece = tetris_deal(env);
    }
    env->pieces++;
    env->can_hold = 1;
    return tetris_place_new(env, piece);
}

/* Whether rotating by `turn` quarter turns succeeds at some kick (what tetris_rotate tries). */
static inline int tetris_can_rotate(const Tetris* env, int turn) {
    int rotation = (env->rotation + turn) & 3;
    for (int k = 0; k < 5; k++)
        if (!tetris_collides(env, env->piece, rotation, env->row, env->col + TETRIS_KICKS[k])) return 1;
    return 0;
}

/* The action mask: the moves, rotations, soft drop and hold that would do something now (a
 * blocked one is a noop); noop and hard drop are always valid. */
static inline void tetris_write_mask(Tetris* env) {
    uint8_t* m = env->action_masks;
    m[TETRIS_NOOP] = 1;
    m[TETRIS_LEFT] = (uint8_t)!tetris_collides(env, env->piece, env->rotation, env->row, env->col - 1);
    m[TETRIS_RIGHT] = (uint8_t)!tetris_collides(env, env->piece, env->rotation, env->row, env->col + 1);
    m[TETRIS_ROTATE_CW] = (uint8_t)tetris_can_rotate(env, 1);
    m[TETRIS_ROTATE_CCW] = (uint8_t)tetris_can_rotate(env, 3);
    m[TETRIS_SOFT_DROP] = (uint8_t)!tetris_collides(env, env->piece, env->rotation, env->row + 1, env->col);
    m[TETRIS_HARD_DROP] = 1;
    m[TETRIS_HOLD] = (uint8_t)env->can_hold;
}

static void tetris_observe(Tetris* env) {
    tetris_write_mask(env);
    uint8_t* obs = env->observations;
    for (int r = 0; r < TETRIS_ROWS; r++) {
        uint32_t bits = env->rows[r] >> 3;
        uint64_t low = TETRIS_BITS_TO_BYTES[bits & 0xFF];
        uint8_t* dst = obs + r * TETRIS_COLS;
        memcpy(dst, &low, 8);
        dst[8] = (uint8_t)(bits >> 8 & 1);
        dst[9] = (uint8_t)(bits >> 9 & 1);
    }
    const uint8_t* shape = TETRIS_SHAPES[env->piece][env->rotation];
    for (int i = 0; i < 4; i++) {
        for (int k = 0; k < 4; k++) {
            int r = env->row + i, c = env->col + k;
            if ((shape[i] >> k & 1) && r < TETRIS_ROWS && c >= 0 && c < TETRIS_COLS)
                obs[r * TETRIS_COLS + c] = 2;
        }
    }
    uint8_t* tail = obs + TETRIS_ROWS * TETRIS_COLS;
    int one_hots = TETRIS_PIECES * (env->num_next + 2);
    memset(tail, 0, (size_t)one_hots);
    tail[env->piece] = 1;
    for (int i = 0; i < env->num_next; i++) tail[TETRIS_PIECES * (i + 1) + env->next[i]] = 1;
    if (env->hold != TETRIS_NO_PIECE) tail[TETRIS_PIECES * (env->num_next + 1) + env->hold] = 1;
    tail += one_hots;
    tail[0] = (uint8_t)env->rotation;
    tail[1] = (uint8_t)env->can_hold;
    tail[2] = (uint8_t)(env->fall_timer < 255 ? env->fall_timer : 255);
}

static void tetris_reset(Tetris* env) {
    for (int r = 0; r < TETRIS_ROWS; r++) env->rows[r] = TETRIS_EMPTY_ROW;
    for (int r = TETRIS_ROWS; r < TETRIS_ROWS + 4; r++) env->rows[r] = TETRIS_FULL_ROW;
    memset(env->colors, 0, sizeof(env->colors));
    env->bag_pos = TETRIS_PIECES;
    for (int i = 0; i < env->num_next; i++) env->next[i] = tetris_deal(env);
    env->hold = TETRIS_NO_PIECE;
    env->tick = 0;
    env->score = 0;
    env->lines = 0;
    env->pieces = 0;
    env->episode_return = 0.0f;
    tetris_spawn(env); /* an empty board always has room */
    tetris_observe(env);
}

/* Adds points to the score and the step's reward. */
static inline void tetris_points(Tetris* env, int points) {
    float reward = (float)points * TETRIS_POINTS_TO_REWARD;
    env->score += points;
    env->rewards[0] += reward;
    env->episode_return += reward;
}

/* Writes the piece into the stack, clears full rows and spawns the next piece; returns 0 when the
 * next piece cannot appear (game over). */
static int tetris_lock(Tetris* env) {
    const uint8_t* shape = TETRIS_SHAPES[env->piece][env->rotation];
    int shift = env->col + 3;
    uint8_t color = (uint8_t)(env->piece + 1);
    int full = 0;
    for (int i = 0; i < 4; i++) {
        if (!shape[i]) continue;
        int r = env->row + i;
        env->rows[r] |= (uint32_t)shape[i] << shift;
        for (int k = 0; k < 4; k++)
            if (shape[i] >> k & 1) env->colors[r][env->col + k] = color;
        full += env->rows[r] == TETRIS_FULL_ROW;
    }
    if (full) {
        /* compact from the bottom: kept rows slide down over the cleared ones */
        int dst = TETRIS_ROWS - 1;
        for (int r = TETRIS_ROWS - 1; r >= 0; r--) {
            if (env->rows[r] == TETRIS_FULL_ROW) continue;
            if (dst != r) {
                env->rows[dst] = env->rows[r];
                memcpy(env->colors[dst], env->colors[r], TETRIS_COLS);
            }
            dst--;
        }
        for (int r = dst; r >= 0; r--) {
            env->rows[r] = TETRIS_EMPTY_ROW;
            memset(env->colors[r], 0, TETRIS_COLS);
        }
        env->lines += full;
        tetris_points(env, TETRIS_LINE_POINTS[full]);
    }
    return tetris_spawn(env);
}

static void tetris_rotate(Tetris* env, int turn) {
    int rotation = (env->rotation + turn) & 3;
    for (int k = 0; k < 5; k++) {
        int col = env->col + TETRIS_KICKS[k];
        if (!tetris_collides(env, env->piece, rotation, env->row, col)) {
            env->rotation = rotation;
            env->col = col;
            return;
        }
    }
}

static void tetris_end_episode(Tetris* env, int terminal) {
    env->terminals[0] = (uint8_t)terminal;
    env->truncations[0] = (uint8_t)!terminal;
    env->log.episode_return += env->episode_return;
    env->log.episode_length += (float)env->tick;
    env->log.score += (float)env->score;
    env->log.lines += (float)env->lines;
    env->log.pieces += (float)env->pieces;
    env->log.n += 1.0f;
    tetris_observe(env);
    memcpy(env->final_observations, env->observations, (size_t)tetris_obs_size(env));
    tetris_reset(env);
}

static void tetris_step(Tetris* env) {
    env->tick++;
    int alive = 1, locked = 0;
    switch (env->actions[0]) {
    case TETRIS_LEFT:
        if (!tetris_collides(env, env->piece, env->rotation, env->row, env->col - 1)) env->col--;
        break;
    case TETRIS_RIGHT:
        if (!tetris_collides(env, env->piece, env->rotation, env->row, env->col + 1)) env->col++;
        break;
    case TETRIS_ROTATE_CW:
        tetris_rotate(env, 1);
        break;
    case TETRIS_ROTATE_CCW:
        tetris_rotate(env, 3);
        break;
    case TETRIS_SOFT_DROP:
        if (!tetris_collides(env, env->piece, env->rotation, env->row + 1, env->col)) {
            env->row++;
            tetris_points(env, 1);
        }
        break;
    case TETRIS_HARD_DROP: {
        int drop = 0;
        while (!tetris_collides(env, env->piece, env->rotation, env->row + drop + 1, env->col)) drop++;
        env->row += drop;
        tetris_points(env, 2 * drop);
        alive = tetris_lock(env);
        locked = 1;
        break;
    }
    case TETRIS_HOLD:
        if (env->can_hold) {
            int out = env->hold;
            env->hold = env->piece;
            alive = out == TETRIS_NO_PIECE ? tetris_spawn(env) : tetris_place_new(env, out);
            env->can_hold = 0;
        }
        break;
    default:
        break;
    }
    if (alive && !locked && ++env->fall_timer >= env->gravity_ticks) {
        env->fall_timer = 0;
        if (!tetris_collides(env, env->piece, env->rotation, env->row + 1, env->col))
            env->row++;
        else
            alive = tetris_lock(env);
    }
    if (!alive) {
        tetris_end_episode(env, 1);
        return;
    }
    if (env->tick >= env->max_steps) {
        tetris_end_episode(env, 0);
        return;
    }
    tetris_observe(env);
}

static int tetris_render_text(Tetris* env, char* buf, int cap) {
    int len = 0;
    const uint8_t* shape = TETRIS_SHAPES[env->piece][env->rotation];
    for (int r = 0; r < TETRIS_ROWS; r++) {
        len = shoal_appendf(buf, cap, len, "|");
        for (int c = 0; c < TETRIS_COLS; c++) {
            int i = r - env->row, k = c - env->col;
            int falling = i >= 0 && i < 4 && k >= 0 && k < 4 && (shape[i] >> k & 1);
            int stack = env->rows[r] >> (c + 3) & 1;
            len = shoal_appendf(buf, cap, len, "%c", falling ? '@' : (stack ? '#' : '.'));
        }
        len = shoal_appendf(buf, cap, len, "|\n");
    }
    len = shoal_appendf(buf, cap, len, "piece %c  next ", TETRIS_NAMES[env->piece]);
    for (int i = 0; i < env->num_next; i++)
        len = shoal_appendf(buf, cap, len, "%c", TETRIS_NAMES[env->next[i]]);
    len = shoal_appendf(buf, cap, len, "  hold %c  score %d  lines %d  step %d\n",
                        env->hold == TETRIS_NO_PIECE ? '-' : TETRIS_NAMES[env->hold], env->score,
                        env->lines, env->tick);
    return len;
}

#define TETRIS_CELL 16
#define TETRIS_PANEL 6 /* columns of cells to the right of the board for next/hold previews */
#define TETRIS_RENDER_H (TETRIS_CELL * TETRIS_ROWS)
#define TETRIS_RENDER_W (TETRIS_CELL * (TETRIS_COLS + TETRIS_PANEL))

static void tetris_draw_cell(uint8_t* rgb, int y, int x, const uint8_t* color, int dim) {
    int div = dim ? 3 : 1;
    shoal_rect_rgb(rgb, TETRIS_RENDER_H, TETRIS_RENDER_W, y + 1, x + 1, TETRIS_CELL - 2,
                   TETRIS_CELL - 2, (uint8_t)(color[0] / div), (uint8_t)(color[1] / div),
                   (uint8_t)(color[2] / div));
}

/* Draws a piece in its spawn rotation with its top-left filled row at cell (row, col). */
static void tetris_draw_preview(uint8_t* rgb, int piece, int row, int col) {
    const uint8_t* shape = TETRIS_SHAPES[piece][0];
    int first = shape[0] ? 0 : 1;
    for (int i = first; i < 4; i++)
        for (int k = 0; k < 4; k++)
            if (shape[i] >> k & 1)
                tetris_draw_cell(rgb, TETRIS_CELL * (row + i - first), TETRIS_CELL * (col + k),
                                 TETRIS_COLORS[piece], 0);
}

static void tetris_render_rgb(Tetris* env, uint8_t* rgb) {
    const int h = TETRIS_RENDER_H, w = TETRIS_RENDER_W;
    shoal_fill_rgb(rgb, h, w, 30, 30, 38);
    shoal_rect_rgb(rgb, h, w, 0, 0, h, TETRIS_CELL * TETRIS_COLS, 8, 8, 12);
    for (int r = 0; r < TETRIS_ROWS; r++)
        for (int c = 0; c < TETRIS_COLS; c++)
            if (env->colors[r][c])
                tetris_draw_cell(rgb, TETRIS_CELL * r, TETRIS_CELL * c, TETRIS_COLORS[env->colors[r][c] - 1], 0);
    /* ghost: where a hard drop would land */
    int drop = 0;
    while (!tetris_collides(env, env->piece, env->rotation, env->row + drop + 1, env->col)) drop++;
    const uint8_t* shape = TETRIS_SHAPES[env->piece][env->rotation];
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < 4; i++)
            for (int k = 0; k < 4; k++)
                if (shape[i] >> k & 1)
                    tetris_draw_cell(rgb, TETRIS_CELL * (env->row + i + (pass ? 0 : drop)),
                                     TETRIS_CELL * (env->col + k), TETRIS_COLORS[env->piece], !pass);
    /* panel: upcoming pieces from the top, the held one at the bottom */
    int panel = TETRIS_COLS + 1;
    for (int i = 0; i < env->num_next; i++) tetris_draw_preview(rgb, env->next[i], 1 + 3 * i, panel);
    shoal_rect_rgb(rgb, h, w, TETRIS_CELL * (TETRIS_ROWS - 4), TETRIS_CELL * panel, 2,
                   TETRIS_CELL * 4, 120, 120, 130);
    if (env->hold != TETRIS_NO_PIECE) tetris_draw_preview(rgb, env->hold, TETRIS_ROWS - 3, panel);
    if (!env->can_hold)
        shoal_rect_rgb(rgb, h, w, TETRIS_CELL * (TETRIS_ROWS - 4), TETRIS_CELL * panel, 2,
                       TETRIS_CELL * 4, 200, 60, 60);
}

static void tetris_close(Tetris* env) { (void)env; }

/* What a snapshot's fields may hold (shoal_env.h, "snapshot validation"): wall and floor bits of
 * the bitboard set (they stop every piece at the board's edges); the falling piece a real piece
 * and rotation, placed where it does not overlap the stack (so it never reaches past the floor);
 * ids of the queue, the bag and hold real pieces; counters within what the steps taken reach. */
static int tetris_validate(const Tetris* env, const Tetris* made, ShoalCheck* check) {
    if (!(SHOAL_SAME(check, env, made, gravity_ticks) && SHOAL_SAME(check, env, made, num_next) &&
          SHOAL_SAME(check, env, made, max_steps)))
        return 0;
    for (int r = 0; r < TETRIS_ROWS + 4; r++) {
        uint32_t need = r < TETRIS_ROWS ? TETRIS_EMPTY_ROW : TETRIS_FULL_ROW;
        if ((env->rows[r] & need) != need)
            return shoal_check_fail(check, "rows[%d] = 0x%08x lacks the %s bits 0x%08x", r, env->rows[r],
                                    r < TETRIS_ROWS ? "wall" : "floor", need);
    }
    if (!(SHOAL_BYTES(check, env, colors[0], TETRIS_ROWS * TETRIS_COLS, 0, TETRIS_PIECES) &&
          SHOAL_INT(check, env, piece, 0, TETRIS_PIECES - 1) && SHOAL_INT(check, env, rotation, 0, 3) &&
          SHOAL_INT(check, env, row, 0, TETRIS_ROWS - 1) && SHOAL_INT(check, env, col, -3, TETRIS_COLS - 1)))
        return 0;
    if (tetris_collides(env, env->piece, env->rotation, env->row, env->col))
        return shoal_check_fail(check, "piece %d (rotation %d) at row %d, col %d overlaps the stack or the walls",
                                env->piece, env->rotation, env->row, env->col);
    long long t = env->tick;
    return SHOAL_INTS(check, env, next, env->num_next, 0, TETRIS_PIECES - 1) &&
           SHOAL_INTS(check, env, bag, TETRIS_PIECES, 0, TETRIS_PIECES - 1) &&
           SHOAL_INT(check, env, bag_pos, 0, TETRIS_PIECES) && SHOAL_INT(check, env, hold, TETRIS_NO_PIECE, TETRIS_PIECES - 1) &&
           SHOAL_INT(check, env, can_hold, 0, 1) && SHOAL_INT(check, env, fall_timer, 0, env->gravity_ticks - 1) &&
           SHOAL_INT(check, env, tick, 0, env->max_steps - 1) && SHOAL_INT(check, env, score, 0, 1000 * t) &&
           SHOAL_INT(check, env, lines, 0, 4 * t) && SHOAL_INT(check, env, pieces, 0, 2 * t + 1) &&
           SHOAL_FLOAT(check, env, episode_return, 0.0f, SHOAL_SUM_BOUND(t, 1.0f));
}

#endif /* SHOAL_TETRIS_H */
