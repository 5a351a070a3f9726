/* stochastic: the best policy is a random one (sanity check that a trainer keeps a mixed policy
 * instead of collapsing to a deterministic one).
 *
 * Rules: an episode is `steps` steps; each step the agent picks action 0 or 1. The observation
 * never changes (it carries neither the time nor the past actions), so a policy without memory
 * picks action 0 with some fixed probability q. On the last step (terminal) the reward is
 *     score = 1 - |f - p|,   f = fraction of the episode's actions that were 0,
 * and every other reward is 0. A deterministic memoryless policy has f = 0 or 1; the best one
 * (always 0 when p >= 0.5) scores max(p, 1 - p). A policy with memory (an LSTM counting its
 * actions) could hit f = p up to rounding; this env exists to test memoryless policies.
 *
 * Observation: float32, 1 value, always 1 (a bias input). The final observation is the same.
 *
 * Log: score as above; action0 = f.
 * Optimal for a memoryless policy: P(action 0) = q* close to p. With the defaults (steps 16,
 * p 0.7): q* = 0.708 gives an expected score of 0.9084 (q = p gives 0.9082), always-0 gives 0.7
 * and uniform random 0.7945. The expectation is a binomial sum over the number of 0s; the gap to
 * 1 is binomial noise and shrinks like 1/sqrt(steps) (steps 32: 0.935, steps 64: 0.954).
 */
#ifndef SHOAL_STOCHASTIC_H
#define SHOAL_STOCHASTIC_H

#include "../shoal_env.h"

typedef struct {
    float episode_return;
    float episode_length;
    float score;
    float action0;
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
    int steps;
    float p;
    /* state */
    int tick;
    int zeros; /* actions equal to 0 this episode */
    float last_fraction; /* f of the last finished episode, -1 before any (for renders) */
} Stochastic;

static void stochastic_reset(Stochastic* env) {
    env->tick = 0;
    env->zeros = 0;
    env->observations[0] = 1.0f;
}

static void stochastic_step(Stochastic* env) {
    env->zeros += env->actions[0] == 0;
    env->tick++;
    env->observations[0] = 1.0f;
    if (env->tick < env->steps) return;
    float fraction = (float)env->zeros / (float)env->steps;
    float score = 1.0f - fabsf(fraction - env->p);
    env->rewards[0] = score;
    env->terminals[0] = 1;
    env->log.episode_return += score;
    env->log.episode_length += (float)env->steps;
    env->log.score += score;
    env->log.action0 += fraction;
    env->log.n += 1.0f;
    env->last_fraction = fraction;
    env->final_observations[0] = 1.0f;
    stochastic_reset(env);
}

static int stochastic_render_text(Stochastic* env, char* buf, int cap) {
    int len = shoal_appendf(buf, cap, 0, "step %d/%d  zeros %d ones %d  target fraction of 0s %.2f", env->tick,
                            env->steps, env->zeros, env->tick - env->zeros, (double)env->p);
    if (env->last_fraction >= 0.0f)
        len = shoal_appendf(buf, cap, len, "  | last episode %.3f (score %.3f)", (double)env->last_fraction,
                            (double)(1.0f - fabsf(env->last_fraction - env->p)));
    return shoal_appendf(buf, cap, len, "\n");
}

/* Top bar: this episode's 0s (blue) and 1s (orange) so far, out of `steps`; bottom bar: the
 * target fraction p (green) with the last episode's fraction marked in white. */
#define STOCHASTIC_WIDTH 128
#define STOCHASTIC_HEIGHT 32
static void stochastic_render_rgb(Stochastic* env, uint8_t* rgb) {
    const int h = STOCHASTIC_HEIGHT, w = STOCHASTIC_WIDTH;
    shoal_fill_rgb(rgb, h, w, 20, 20, 30);
    int zeros = w * env->zeros / env->steps, ones = w * (env->tick - env->zeros) / env->steps;
    shoal_rect_rgb(rgb, h, w, 2, 0, 12, zeros, 70, 120, 230);
    shoal_rect_rgb(rgb, h, w, 2, zeros, 12, ones, 230, 150, 40);
    shoal_rect_rgb(rgb, h, w, 18, 0, 12, (int)(env->p * (float)w), 40, 160, 80);
    if (env->last_fraction >= 0.0f)
        shoal_rect_rgb(rgb, h, w, 16, shoal_clampi((int)(env->last_fraction * (float)w), 0, w - 2), 16, 2, 240,
                       240, 240);
}

static void stochastic_close(Stochastic* env) { (void)env; }

/* What a snapshot's fields may hold (shoal_env.h, "snapshot validation"). */
static int stochastic_validate(const Stochastic* env, const Stochastic* made, ShoalCheck* check) {
    if (!(SHOAL_SAME(check, env, made, steps) && SHOAL_SAME(check, env, made, p) &&
          SHOAL_INT(check, env, tick, 0, env->steps - 1) && SHOAL_INT(check, env, zeros, 0, env->tick) &&
          SHOAL_FLOAT(check, env, last_fraction, -1.0f, 1.0f)))
        return 0;
    if (env->last_fraction < 0.0f && env->last_fraction != -1.0f)
        return shoal_check_fail(check, "last_fraction = %g is neither -1 (none yet) nor in [0, 1]",
                                (double)env->last_fraction);
    return 1;
}

#endif
