/* breakout: Atari-style brick breaking with a paddle and one ball, one agent per env.
 *
 * Geometry (in pixels, y grows downwards; floats, fixed timestep of one frame):
 *  - The field is brick_cols * 8 wide (144 by default) between two side walls, with a top wall and
 *    an open bottom. Bricks are 8 x 6 and fill `brick_rows` rows starting 24 px below the top wall,
 *    leaving a gap the ball can get into from a broken column. The paddle (16 x 4; 8 wide after it
 *    shrinks) has its top 12 px above the field's bottom edge, which is 120 px below the bricks.
 *    The ball is a 3 x 3 square.
 *  - Rows score like Atari from the top in three equal bands: 7, 4 and 1 points (6 rows: 7 7 4 4
 *    1 1). The top row is "red", the next "orange".
 * Each agent step repeats the action for `frameskip` frames. In a frame:
 *  - The paddle moves by v * 4 px: v is -1 / 0 / +1 for actions 1 left / 0 stay / 2 right
 *    (Discrete(3)), or the action clipped to [-1, 1] when `continuous` (Box(-1, 1, (1,))). It is
 *    clipped to the walls.
 *  - The ball moves by its velocity with exact swept contacts: it flies straight to the earliest
 *    contact in the frame, bounces, and flies on for the rest of the frame (up to 8 contacts), so
 *    it never passes through a brick or the paddle at any speed. Contacts (touching without
 *    overlap is none): side and top walls flip vx / vy; a live brick breaks and flips vx if the
 *    ball met one of its sides, else vy (top, bottom, or an exact corner); when two bricks are
 *    met at once, the one nearest the ball's centre breaks. Crossing the paddle's top edge moving
 *    down within the paddle's width bounces the ball up at an angle from vertical of 60 degrees
 *    times the hit offset from the paddle's centre (-1 at the left end, +1 at the right), at the
 *    current speed. The paddle's sides do not bounce the ball.
 *  - Speed: 2 px/frame at serve, +0.5 (like Atari) on the 4th and 12th paddle hits and on the
 *    first orange and first red brick broken: at most 4 px/frame. Hitting the top wall after a
 *    red brick broke halves the paddle width (until the next serve).
 *  - A ball whose top passes the field's bottom edge is lost: one life less. With lives left a new
 *    ball is served at once from a random x just under the bricks, moving down at 15-45 degrees
 *    from vertical to a random side, at the serve speed, with a full-size paddle.
 * Reward: 1 per brick broken. The episode ends (terminal) when the last life is lost or every
 * brick is broken, and is truncated after `max_steps` agent steps. Score: the Atari points.
 *
 * Observation: float32, 8 + brick_rows * brick_cols values in [-1, 1]:
 *    paddle centre x / width, ball centre x / width, ball centre y / height (clipped to 1),
 *    vx / 4, vy / 4, lives / starting lives, paddle width / 16, speed-ups so far / 4,
 *    then one value per brick (row-major from the top): 1 present, 0 broken.
 */
#ifndef SHOAL_BREAKOUT_H
#define SHOAL_BREAKOUT_H

#include "../shoal_env.h"

#define BREAKOUT_MAX_ROWS 12
#define BREAKOUT_MAX_COLS 36
#define BREAKOUT_BRICK_W 8.0f
#define BREAKOUT_BRICK_H 6.0f
#define BREAKOUT_BRICK_TOP 24.0f
#define BREAKOUT_GAP 120.0f /* bricks' bottom to the field's bottom edge, minus the paddle area */
#define BREAKOUT_PADDLE_AREA 12.0f
#define BREAKOUT_PADDLE_W 16.0f
#define BREAKOUT_PADDLE_H 4.0f
#define BREAKOUT_PADDLE_SPEED 4.0f
#define BREAKOUT_BALL 3.0f
#define BREAKOUT_SERVE_SPEED 2.0f
#define BREAKOUT_SPEED_STEP 0.5f
#define BREAKOUT_MAX_LEVEL 4
#define BREAKOUT_MAX_SPEED (BREAKOUT_SERVE_SPEED + BREAKOUT_MAX_LEVEL * BREAKOUT_SPEED_STEP)
#define BREAKOUT_MAX_ANGLE 1.04719755f /* 60 degrees */
#define BREAKOUT_SCALARS 8

typedef struct {
    float episode_return;
    float episode_length;
    float score;
    float bricks;
    float cleared; /* 1 when every brick was broken */
    float n;       /* episodes counted: must stay last */
} Log;

typedef struct {
    /* buffer rows owned by Python (set by the binding) */
    float* observations;
    float* final_observations;
    float* actions;
    float* rewards;
    uint8_t* terminals;
    uint8_t* truncations;
    Log log;
    ShoalRng rng;
    /* parameters */
    int brick_rows, brick_cols;
    int lives_start;
    int frameskip;
    int continuous;
    int max_steps;
    /* derived geometry */
    float width, height, paddle_y, bricks_bottom;
    int num_bricks;
    /* state */
    float paddle_x, paddle_w; /* left edge */
    float ball_x, ball_y;     /* top-left corner */
    float ball_vx, ball_vy;
    int level, hits;
    int hit_orange, hit_red, red_broken;
    int lives;
    int bricks_left;
    int tick;
    int score;
    float episode_return;
    uint8_t bricks[BREAKOUT_MAX_ROWS * BREAKOUT_MAX_COLS]; /* 1 present, 0 broken */
} Breakout;

static inline int breakout_obs_size(const Breakout* env) { return BREAKOUT_SCALARS + env->num_bricks; }

static inline float breakout_speed(const Breakout* env) {
    return BREAKOUT_SERVE_SPEED + BREAKOUT_SPEED_STEP * (float)env->level;
}

static inline int breakout_points(const Breakout* env, int row) {
    static const int band_points[3] = {7, 4, 1};
    return band_points[row * 3 / env->brick_rows];
}

/* Called once from my_init: sizes that follow from the parameters. */
static void breakout_setup(Breakout* env) {
    env->num_bricks = env->brick_rows * env->brick_cols;
    env->width = BREAKOUT_BRICK_W * (float)env->brick_cols;
    env->bricks_bottom = BREAKOUT_BRICK_TOP + BREAKOUT_BRICK_H * (float)env->brick_rows;
    env->height = env->bricks_bottom + BREAKOUT_GAP + BREAKOUT_PADDLE_AREA;
    env->paddle_y = env->height - BREAKOUT_PADDLE_AREA;
}

/* Sets the ball's speed to the current level, keeping its direction. */
static void breakout_set_speed(Breakout* env) {
    float norm = sqrtf(env->ball_vx * env->ball_vx + env->ball_vy * env->ball_vy);
    float scale = breakout_speed(env) / norm;
    env->ball_vx *= scale;
    env->ball_vy *= scale;
}

static void breakout_speed_up(Breakout* env) {
    if (env->level < BREAKOUT_MAX_LEVEL) {
        env->level++;
        breakout_set_speed(env);
    }
}

static void breakout_serve(Breakout* env) {
    env->level = 0;
    env->hits = 0;
    env->hit_orange = env->hit_red = 0;
    env->paddle_w = BREAKOUT_PADDLE_W;
    env->paddle_x = shoal_clampf(env->paddle_x, 0.0f, env->width - env->paddle_w); /* regrown */
    float lo = 0.2f * env->width, hi = 0.8f * env->width - BREAKOUT_BALL;
    env->ball_x = shoal_rng_uniform(&env->rng, lo, hi);
    env->ball_y = env->bricks_bottom + 24.0f;
    float angle = shoal_rng_uniform(&env->rng, 0.261799388f, 0.785398163f); /* 15-45 degrees */
    if (shoal_rng_u32(&env->rng) & 1u) angle = -angle;
    env->ball_vx = BREAKOUT_SERVE_SPEED * sinf(angle);
    env->ball_vy = BREAKOUT_SERVE_SPEED * cosf(angle);
}

static void breakout_observe(Breakout* env) {
    float* obs = env->observations;
    obs[0] = (env->paddle_x + 0.5f * env->paddle_w) / env->width;
    obs[1] = (env->ball_x + 0.5f * BREAKOUT_BALL) / env->width;
    obs[2] = shoal_clampf((env->ball_y + 0.5f * BREAKOUT_BALL) / env->height, 0.0f, 1.0f);
    obs[3] = shoal_clampf(env->ball_vx * (1.0f / BREAKOUT_MAX_SPEED), -1.0f, 1.0f);
    obs[4] = shoal_clampf(env->ball_vy * (1.0f / BREAKOUT_MAX_SPEED), -1.0f, 1.0f);
    obs[5] = (float)env->lives / (float)env->lives_start;
    obs[6] = env->paddle_w * (1.0f / BREAKOUT_PADDLE_W);
    obs[7] = (float)env->level * (1.0f / BREAKOUT_MAX_LEVEL);
    float* bricks = obs + BREAKOUT_SCALARS;
    for (int i = 0; i < env->num_bricks; i++) bricks[i] = (float)env->bricks[i];
}

static void breakout_reset(Breakout* env) {
    memset(env->bricks, 1, (size_t)env->num_bricks);
    env->bricks_left = env->num_bricks;
    env->lives = env->lives_start;
    env->red_broken = 0;
    env->tick = 0;
    env->score = 0;
    env->episode_return = 0.0f;
    env->paddle_x = 0.5f * (env->width - BREAKOUT_PADDLE_W);
    breakout_serve(env);
    breakout_observe(env);
}

/* Earliest time in [0, limit) at which the moving ball box (top-left (x, y), velocity (vx, vy)
 * per frame) starts to overlap the box [bx, bx + bw) x [by, by + bh) with positive area; writes
 * whether the contact face is vertical (a side) and returns it, or returns a value > limit when
 * there is none. Touching without overlap is no contact; a box the ball is leaving is ignored. */
static inline float breakout_sweep(float x, float y, float vx, float vy, float bx, float by, float bw, float bh,
                                   float limit, int* side) {
    const float B = BREAKOUT_BALL, never = 2.0f * limit + 1.0f;
    float tx0, tx1, ty0, ty1;
    if (vx > 0.0f) {
        tx0 = (bx - (x + B)) / vx;
        tx1 = (bx + bw - x) / vx;
    } else if (vx < 0.0f) {
        tx0 = (bx + bw - x) / vx;
        tx1 = (bx - (x + B)) / vx;
    } else {
        if (x + B <= bx || x >= bx + bw) return never;
        tx0 = -1e30f;
        tx1 = 1e30f;
    }
    if (vy > 0.0f) {
        ty0 = (by - (y + B)) / vy;
        ty1 = (by + bh - y) / vy;
    } else if (vy < 0.0f) {
        ty0 = (by + bh - y) / vy;
        ty1 = (by - (y + B)) / vy;
    } else {
        if (y + B <= by || y >= by + bh) return never;
        ty0 = -1e30f;
        ty1 = 1e30f;
    }
    float t0 = tx0 > ty0 ? tx0 : ty0, t1 = tx1 < ty1 ? tx1 : ty1;
    /* -1e-4: a contact the ball reached a rounding error ago still counts */
    if (t0 >= t1 || t0 < -1e-4f || t0 >= limit) return never;
    *side = tx0 > ty0;
    return t0 > 0.0f ? t0 : 0.0f;
}

enum { BREAKOUT_HIT_NONE, BREAKOUT_HIT_WALL_X, BREAKOUT_HIT_WALL_TOP, BREAKOUT_HIT_BRICK, BREAKOUT_HIT_PADDLE };

static void breakout_break_brick(Breakout* env, int index, int side) {
    int row = index / env->brick_cols;
    env->bricks[index] = 0;
    env->bricks_left--;
    env->score += breakout_points(env, row);
    env->rewards[0] += 1.0f;
    env->episode_return += 1.0f;
    if (side)
        env->ball_vx = -env->ball_vx;
    else
        env->ball_vy = -env->ball_vy;
    if (row == 0) env->red_broken = 1;
    if (row == 1 && !env->hit_orange) {
        env->hit_orange = 1;
        breakout_speed_up(env);
    }
    if (row == 0 && !env->hit_red) {
        env->hit_red = 1;
        breakout_speed_up(env);
    }
}

static void breakout_bounce_paddle(Breakout* env) {
    float offset = (env->ball_x + 0.5f * BREAKOUT_BALL) - (env->paddle_x + 0.5f * env->paddle_w);
    float rel = shoal_clampf(offset / (0.5f * (env->paddle_w + BREAKOUT_BALL)), -1.0f, 1.0f);
    float angle = rel * BREAKOUT_MAX_ANGLE;
    env->hits++;
    if (env->hits == 4 || env->hits == 12) env->level += env->level < BREAKOUT_MAX_LEVEL;
    float speed = breakout_speed(env);
    env->ball_vx = speed * sinf(angle);
    env->ball_vy = -speed * cosf(angle);
}

/* Moves the ball through one frame: finds the earliest contact (walls, bricks, paddle top),
 * moves the ball there, bounces, and carries on with the frame's remaining time. */
static void breakout_move_ball(Breakout* env) {
    const float B = BREAKOUT_BALL, right = env->width - B;
    float t_left = 1.0f;
    for (int contacts = 0; contacts < 8 && t_left > 0.0f; contacts++) {
        float x = env->ball_x, y = env->ball_y, vx = env->ball_vx, vy = env->ball_vy;
        float t_hit = 2.0f;
        int what = BREAKOUT_HIT_NONE, brick = -1, side = 0;
        /* walls */
        if (vx < 0.0f && x + vx * t_left < 0.0f) {
            t_hit = -x / vx;
            what = BREAKOUT_HIT_WALL_X;
        } else if (vx > 0.0f && x + vx * t_left > right) {
            t_hit = (right - x) / vx;
            what = BREAKOUT_HIT_WALL_X;
        }
        if (vy < 0.0f && y + vy * t_left < 0.0f && -y / vy < t_hit) {
            t_hit = -y / vy;
            what = BREAKOUT_HIT_WALL_TOP;
        }
        /* bricks inside the frame's swept bounding box */
        float x_end = x + vx * t_left, y_end = y + vy * t_left;
        float lo_y = (y < y_end ? y : y_end), hi_y = (y > y_end ? y : y_end) + B;
        if (hi_y > BREAKOUT_BRICK_TOP && lo_y < env->bricks_bottom) {
            float lo_x = (x < x_end ? x : x_end), hi_x = (x > x_end ? x : x_end) + B;
            int c0 = shoal_clampi((int)floorf(lo_x * (1.0f / BREAKOUT_BRICK_W)), 0, env->brick_cols - 1);
            int c1 = shoal_clampi((int)floorf(hi_x * (1.0f / BREAKOUT_BRICK_W)), 0, env->brick_cols - 1);
            int r0 = shoal_clampi((int)floorf((lo_y - BREAKOUT_BRICK_TOP) * (1.0f / BREAKOUT_BRICK_H)), 0,
                                  env->brick_rows - 1);
            int r1 = shoal_clampi((int)floorf((hi_y - BREAKOUT_BRICK_TOP) * (1.0f / BREAKOUT_BRICK_H)), 0,
                                  env->brick_rows - 1);
            float best_d = 1e30f;
            for (int r = r0; r <= r1; r++) {
                const uint8_t* live = env->bricks + r * env->brick_cols;
                float by = BREAKOUT_BRICK_TOP + BREAKOUT_BRICK_H * (float)r;
                for (int c = c0; c <= c1; c++) {
                    if (!live[c]) continue;
                    float bx = BREAKOUT_BRICK_W * (float)c;
                    int s;
                    float t = breakout_sweep(x, y, vx, vy, bx, by, BREAKOUT_BRICK_W, BREAKOUT_BRICK_H, t_left, &s);
                    if (t > t_hit + 1e-6f) continue;
                    /* ties (the ball meets two bricks at once): the one nearest the ball's centre */
                    float dx = x + vx * t + 0.5f * B - (bx + 0.5f * BREAKOUT_BRICK_W);
                    float dy = y + vy * t + 0.5f * B - (by + 0.5f * BREAKOUT_BRICK_H);
                    float d = dx * dx + dy * dy;
                    if (t < t_hit - 1e-6f || what != BREAKOUT_HIT_BRICK || d < best_d) {
                        t_hit = t < t_hit ? t : t_hit;
                        what = BREAKOUT_HIT_BRICK;
                        brick = r * env->brick_cols + c;
                        side = s;
                        best_d = d;
                    }
                }
            }
        }
        /* paddle: crossing its top edge moving down, within its width */
        if (vy > 0.0f && y + B <= env->paddle_y && y_end + B > env->paddle_y) {
            float t = (env->paddle_y - (y + B)) / vy;
            float xc = x + vx * t;
            if (t < t_hit && xc + B > env->paddle_x && xc < env->paddle_x + env->paddle_w) {
                t_hit = t;
                what = BREAKOUT_HIT_PADDLE;
            }
        }
        if (what == BREAKOUT_HIT_NONE) {
            env->ball_x = x_end;
            env->ball_y = y_end;
            return;
        }
        env->ball_x = x + vx * t_hit;
        env->ball_y = y + vy * t_hit;
        t_left -= t_hit;
        switch (what) {
        case BREAKOUT_HIT_WALL_X:
            env->ball_x = vx < 0.0f ? 0.0f : right;
            env->ball_vx = -vx;
            break;
        case BREAKOUT_HIT_WALL_TOP:
            env->ball_y = 0.0f;
            env->ball_vy = -vy;
            if (env->red_broken) env->paddle_w = 0.5f * BREAKOUT_PADDLE_W;
            break;
        case BREAKOUT_HIT_BRICK:
            breakout_break_brick(env, brick, side);
            break;
        default:
            env->ball_y = env->paddle_y - B;
            breakout_bounce_paddle(env);
            break;
        }
    }
}

static void breakout_end_episode(Breakout* env, int terminal) {
    env->terminals[0] = (uint8_t)terminal;
    env->truncations[0] = (uint8_t)!terminal;
    env->log.episode_return += env->episode_return;
    env->log.episode_length += (float)env->tick;
    env->log.score += (float)env->score;
    env->log.bricks += (float)(env->num_bricks - env->bricks_left);
    env->log.cleared += env->bricks_left == 0 ? 1.0f : 0.0f;
    env->log.n += 1.0f;
    breakout_observe(env);
    memcpy(env->final_observations, env->observations, sizeof(float) * (size_t)breakout_obs_size(env));
    breakout_reset(env);
}

static void breakout_step(Breakout* env) {
    env->tick++;
    float a = env->actions[0];
    float move;
    if (env->continuous)
        move = shoal_clampf(a, -1.0f, 1.0f);
    else
        move = a == 1.0f ? -1.0f : (a == 2.0f ? 1.0f : 0.0f);
    move *= BREAKOUT_PADDLE_SPEED;
    for (int f = 0; f < env->frameskip; f++) {
        env->paddle_x = shoal_clampf(env->paddle_x + move, 0.0f, env->width - env->paddle_w);
        breakout_move_ball(env);
        if (env->bricks_left == 0) {
            breakout_end_episode(env, 1);
            return;
        }
        if (env->ball_y > env->height) {
            if (--env->lives == 0) {
                breakout_end_episode(env, 1);
                return;
            }
            breakout_serve(env);
        }
    }
    if (env->tick >= env->max_steps) {
        breakout_end_episode(env, 0);
        return;
    }
    breakout_observe(env);
}

static int breakout_render_text(Breakout* env, char* buf, int cap) {
    int len = 0;
    for (int r = 0; r < env->brick_rows; r++) {
        len = shoal_appendf(buf, cap, len, "|");
        for (int c = 0; c < env->brick_cols; c++)
            len = shoal_appendf(buf, cap, len, "%c", env->bricks[r * env->brick_cols + c] ? '#' : ' ');
        len = shoal_appendf(buf, cap, len, "|\n");
    }
    return shoal_appendf(buf, cap, len,
                         "ball (%.1f, %.1f) v (%.2f, %.2f)  paddle %.1f-%.1f  lives %d  score %d  "
                         "bricks left %d  step %d\n",
                         (double)env->ball_x, (double)env->ball_y, (double)env->ball_vx, (double)env->ball_vy,
                         (double)env->paddle_x, (double)(env->paddle_x + env->paddle_w), env->lives,
                         env->score, env->bricks_left, env->tick);
}

#define BREAKOUT_SCALE 2
#define BREAKOUT_WALL 8 /* render pixels */
#define BREAKOUT_RENDER_W(env) (BREAKOUT_SCALE * (int)(env)->width + 2 * BREAKOUT_WALL)
#define BREAKOUT_RENDER_H(env) (BREAKOUT_SCALE * (int)(env)->height + 2 * BREAKOUT_WALL)

static void breakout_render_rgb(Breakout* env, uint8_t* rgb) {
    static const uint8_t row_colors[6][3] = {
        {200, 72, 72}, {198, 108, 58}, {180, 122, 48}, {162, 162, 42}, {72, 160, 72}, {66, 72, 200},
    };
    const int h = BREAKOUT_RENDER_H(env), w = BREAKOUT_RENDER_W(env), s = BREAKOUT_SCALE, o = BREAKOUT_WALL;
    shoal_fill_rgb(rgb, h, w, 0, 0, 0);
    shoal_rect_rgb(rgb, h, w, 0, 0, o, w, 142, 142, 142);       /* top wall */
    shoal_rect_rgb(rgb, h, w, 0, 0, h - o, o, 142, 142, 142);   /* left wall */
    shoal_rect_rgb(rgb, h, w, 0, w - o, h - o, o, 142, 142, 142); /* right wall */
    for (int i = 0; i < env->lives; i++) shoal_rect_rgb(rgb, h, w, 2, o + 8 * i, 4, 5, 200, 72, 72);
    for (int r = 0; r < env->brick_rows; r++) {
        const uint8_t* col = row_colors[r * 6 / env->brick_rows];
        for (int c = 0; c < env->brick_cols; c++)
            if (env->bricks[r * env->brick_cols + c])
                shoal_rect_rgb(rgb, h, w, o + s * (int)(BREAKOUT_BRICK_TOP + BREAKOUT_BRICK_H * r),
                               o + s * (int)(BREAKOUT_BRICK_W * c), s * (int)BREAKOUT_BRICK_H,
                               s * (int)BREAKOUT_BRICK_W, col[0], col[1], col[2]);
    }
    shoal_rect_rgb(rgb, h, w, o + (int)(s * env->paddle_y), o + (int)(s * env->paddle_x),
                   s * (int)BREAKOUT_PADDLE_H, (int)(s * env->paddle_w), 200, 72, 72);
    shoal_rect_rgb(rgb, h, w, o + (int)(s * env->ball_y), o + (int)(s * env->ball_x), s * (int)BREAKOUT_BALL,
                   s * (int)BREAKOUT_BALL, 220, 220, 220);
}

static void breakout_close(Breakout* env) { (void)env; }

/* What a snapshot's fields may hold (shoal_env.h, "snapshot validation"): the geometry of these
 * parameters; ball and paddle inside the field (a pixel of slack for rounding), the ball's speed
 * that of its level (never 0: serving rescales by it); counters within what an episode reaches. */
static int breakout_validate(const Breakout* env, const Breakout* made, ShoalCheck* check) {
    if (!(SHOAL_SAME(check, env, made, brick_rows) && SHOAL_SAME(check, env, made, brick_cols) &&
          SHOAL_SAME(check, env, made, lives_start) && SHOAL_SAME(check, env, made, frameskip) &&
          SHOAL_SAME(check, env, made, continuous) && SHOAL_SAME(check, env, made, max_steps) &&
          SHOAL_SAME(check, env, made, width) && SHOAL_SAME(check, env, made, height) &&
          SHOAL_SAME(check, env, made, paddle_y) && SHOAL_SAME(check, env, made, bricks_bottom) &&
          SHOAL_SAME(check, env, made, num_bricks)))
        return 0;
    if (env->paddle_w != BREAKOUT_PADDLE_W && env->paddle_w != 0.5f * BREAKOUT_PADDLE_W)
        return shoal_check_fail(check, "paddle_w = %g is neither the full (%g) nor the shrunk (%g) width",
                                (double)env->paddle_w, (double)BREAKOUT_PADDLE_W, 0.5 * BREAKOUT_PADDLE_W);
    float speed2 = env->ball_vx * env->ball_vx + env->ball_vy * env->ball_vy;
    float want = breakout_speed(env->level >= 0 && env->level <= BREAKOUT_MAX_LEVEL ? env : made);
    if (!(SHOAL_INT(check, env, level, 0, BREAKOUT_MAX_LEVEL) &&
          SHOAL_FLOAT(check, env, paddle_x, 0.0f, env->width - env->paddle_w) &&
          SHOAL_FLOAT(check, env, ball_x, -1.0f, env->width - BREAKOUT_BALL + 1.0f) &&
          SHOAL_FLOAT(check, env, ball_y, -1.0f, env->height) &&
          SHOAL_FLOAT(check, env, ball_vx, -BREAKOUT_MAX_SPEED, BREAKOUT_MAX_SPEED) &&
          SHOAL_FLOAT(check, env, ball_vy, -BREAKOUT_MAX_SPEED, BREAKOUT_MAX_SPEED)))
        return 0;
    if (!(fabsf(sqrtf(speed2) - want) <= 0.01f * want))
        return shoal_check_fail(check, "ball speed = %g but level %d moves at %g", (double)sqrtf(speed2), env->level,
                                (double)want);
    int live = 0;
    for (int i = 0; i < env->num_bricks; i++) {
        if (env->bricks[i] > 1) return shoal_check_fail(check, "bricks[%d] = %u is neither 0 nor 1", i, env->bricks[i]);
        live += env->bricks[i];
    }
    if (live != env->bricks_left)
        return shoal_check_fail(check, "bricks_left = %d but %d bricks are present", env->bricks_left, live);
    long long contacts = (long long)env->tick * env->frameskip * 8;
    return SHOAL_INT(check, env, bricks_left, 1, env->num_bricks) && SHOAL_INT(check, env, tick, 0, env->max_steps - 1) &&
           SHOAL_INT(check, env, hits, 0, contacts) && SHOAL_INT(check, env, hit_orange, 0, 1) &&
           SHOAL_INT(check, env, hit_red, 0, 1) && SHOAL_INT(check, env, red_broken, 0, 1) &&
           SHOAL_INT(check, env, lives, 1, env->lives_start) && SHOAL_INT(check, env, score, 0, 7LL * env->num_bricks) &&
           SHOAL_FLOAT(check, env, episode_return, 0.0f, (float)env->num_bricks);
}

#endif /* SHOAL_BREAKOUT_H */
