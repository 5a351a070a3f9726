/* password: type a hidden binary password; one wrong key and the episode is over (sanity check of
 * exploration under a sparse reward).
 *
 * Rules: the password is `length` binary keys; key i is bit i of `code` (least significant bit
 * first), fixed by the parameters, so the same password holds in every episode and every env.
 * Each step the agent presses a key (action 0 or 1). The right key moves it to the next
 * position (reward 0); a wrong key ends the episode with reward 0 (terminal); the right last
 * key ends it with reward 1 (terminal). Episodes last at most `length` steps. Bits of `code`
 * from bit `length` up are ignored.
 * With the defaults (length 5, code 22 = 0b10110) the password is 0, 1, 1, 0, 1.
 *
 * Observation: float32, `length` values: one-hot of the current position (keys entered so far).
 * The final observation of an episode is all zeros.
 *
 * Log: score = 1 if the whole password was entered; progress = fraction of keys entered right.
 * Optimal: press the password: score 1. Uniform random keys succeed with probability 2^-length
 * (1/32 by default); any constant key fails unless the password is all that key.
 */
#ifndef SHOAL_PASSWORD_H
#define SHOAL_PASSWORD_H

#include "../shoal_env.h"

typedef struct {
    float episode_return;
    float episode_length;
    float score;
    float progress;
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
    ShoalRng rng; /* unused: the env is deterministic given the actions */
    /* parameters */
    int length;
    int code;
    /* state */
    int position;    /* keys entered right so far */
    int last_result; /* for renders: -1 none yet, 0 last episode failed, 1 it succeeded */
} Password;

static inline int password_key(const Password* env, int i) { return (env->code >> i) & 1; }

static void password_observe(Password* env) {
    memset(env->observations, 0, sizeof(float) * (size_t)env->length);
    env->observations[env->position] = 1.0f;
}

static void password_reset(Password* env) {
    env->position = 0;
    password_observe(env);
}

static void password_step(Password* env) {
    int right = env->actions[0] == password_key(env, env->position);
    if (right) env->position++;
    if (right && env->position < env->length) {
        password_observe(env);
        return;
    }
    int solved = env->position == env->length;
    env->rewards[0] = (float)solved;
    env->terminals[0] = 1;
    env->log.episode_return += (float)solved;
    env->log.episode_length += (float)(env->position + !solved);
    env->log.score += (float)solved;
    env->log.progress += (float)env->position / (float)env->length;
    env->log.n += 1.0f;
    env->last_result = solved;
    memset(env->final_observations, 0, sizeof(float) * (size_t)env->length);
    password_reset(env);
}

static int password_render_text(Password* env, char* buf, int cap) {
    int len = shoal_appendf(buf, cap, 0, "password ");
    for (int i = 0; i < env->length; i++)
        len = shoal_appendf(buf, cap, len, "%c", i < env->position ? (char)('0' + password_key(env, i)) : '_');
    len = shoal_appendf(buf, cap, len, "  position %d/%d", env->position, env->length);
    if (env->last_result >= 0)
        len = shoal_appendf(buf, cap, len, "  | last episode %s", env->last_result ? "solved" : "failed");
    return shoal_appendf(buf, cap, len, "\n");
}

/* One cell per key: entered keys green (bright for 1, dark for 0), the current one yellow. */
#define PASSWORD_CELL 16
static void password_render_rgb(Password* env, uint8_t* rgb) {
    int h = PASSWORD_CELL, w = PASSWORD_CELL * env->length;
    shoal_fill_rgb(rgb, h, w, 20, 20, 30);
    for (int i = 0; i < env->length; i++) {
        uint8_t r = 60, g = 60, b = 70;
        if (i < env->position) {
            r = 40;
            g = password_key(env, i) ? 220 : 120;
            b = 80;
        } else if (i == env->position) {
            r = 230;
            g = 200;
            b = 40;
        }
        shoal_rect_rgb(rgb, h, w, 2, PASSWORD_CELL * i + 2, PASSWORD_CELL - 4, PASSWORD_CELL - 4, r, g, b);
    }
}

static void password_close(Password* env) { (void)env; }

/* What a snapshot's fields may hold (shoal_env.h, "snapshot validation"): position indexes the
 * observation, so it stays below length (reaching length ends the episode). */
static int password_validate(const Password* env, const Password* made, ShoalCheck* check) {
    return SHOAL_SAME(check, env, made, length) && SHOAL_SAME(check, env, made, code) &&
           SHOAL_INT(check, env, position, 0, env->length - 1) && SHOAL_INT(check, env, last_result, -1, 1);
}

#endif
