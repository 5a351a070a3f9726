/* bandit: a contextual bandit whose reward arrives late (sanity check of credit assignment).
 *
 * Rules: there are `arms` arms. One of them is the best arm: with best_arm = -1 (the default) it
 * is drawn uniformly each episode and shown in the first observation (the context); with
 * best_arm = k >= 0 it is always arm k and is not shown (a plain bandit, learnt from rewards).
 * The agent picks an arm (action in [0, arms)) on step 0. Then come `delay` waiting steps whose
 * observations are blank and whose actions are ignored. The reward is given only on the last
 * step (step `delay`, so episodes last delay + 1 steps, which then end as terminal): it is 1 with
 * probability best_prob if the best arm was picked, else 1 with probability other_prob.
 * With the defaults (best_prob 1, other_prob 0) the reward is 1 for the best arm and 0 otherwise.
 *
 * Observation: float32, arms + 1 values.
 *   [0, arms)  one-hot of the best arm on step 0 when it is drawn per episode; zeros otherwise
 *   [arms]     1 on step 0 (the step whose action counts), 0 on the waiting steps
 *   Waiting steps, and the final observation of an episode, are all zeros.
 *
 * Log: score = 1 if the best arm was picked (0 otherwise), regardless of the reward's luck.
 * Optimal: pick the arm shown in the context (or arm best_arm): score 1 and expected return
 * best_prob. Uniform random play scores 1/arms.
 */
#ifndef SHOAL_BANDIT_H
#define SHOAL_BANDIT_H

#include "../shoal_env.h"

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
    int arms;
    int delay;
    int best_arm_param; /* -1: drawn per episode and shown; else fixed and hidden */
    float best_prob;
    float other_prob;
    /* state */
    int best_arm;
    int chosen_arm; /* -1 until step 0 has been played */
    int tick;
    float episode_return;
} Bandit;

static void bandit_observe(Bandit* env) {
    memset(env->observations, 0, sizeof(float) * (size_t)(env->arms + 1));
    if (env->tick == 0) {
        if (env->best_arm_param < 0) env->observations[env->best_arm] = 1.0f;
        env->observations[env->arms] = 1.0f;
    }
}

static void bandit_reset(Bandit* env) {
    env->best_arm = env->best_arm_param < 0 ? shoal_rng_int(&env->rng, env->arms) : env->best_arm_param;
    env->chosen_arm = -1;
    env->tick = 0;
    env->episode_return = 0.0f;
    bandit_observe(env);
}

static void bandit_step(Bandit* env) {
    if (env->tick == 0) env->chosen_arm = env->actions[0];
    env->tick++;
    if (env->tick <= env->delay) { /* still waiting: actions ignored, no reward yet */
        bandit_observe(env);
        return;
    }
    int picked_best = env->chosen_arm == env->best_arm;
    float prob = picked_best ? env->best_prob : env->other_prob;
    /* one draw per episode either way, so the stream does not depend on the choice */
    float reward = shoal_rng_float(&env->rng) < prob ? 1.0f : 0.0f;
    env->rewards[0] = reward;
    env->episode_return += reward;
    env->terminals[0] = 1;
    env->log.episode_return += env->episode_return;
    env->log.episode_length += (float)env->tick;
    env->log.score += (float)picked_best;
    env->log.n += 1.0f;
    memset(env->final_observations, 0, sizeof(float) * (size_t)(env->arms + 1));
    bandit_reset(env);
}

static int bandit_render_text(Bandit* env, char* buf, int cap) {
    int len = shoal_appendf(buf, cap, 0, "step %d/%d  ", env->tick + 1, env->delay + 1);
    for (int i = 0; i < env->arms; i++) {
        char c = i == env->chosen_arm ? (i == env->best_arm ? '*' : 'x') : (i == env->best_arm ? 'B' : '.');
        len = shoal_appendf(buf, cap, len, "%c", c);
    }
    len = shoal_appendf(buf, cap, len, "  best=%d%s chosen=", env->best_arm,
                        env->best_arm_param < 0 ? " (shown)" : " (hidden)");
    if (env->chosen_arm < 0) return shoal_appendf(buf, cap, len, "-\n");
    return shoal_appendf(buf, cap, len, "%d\n", env->chosen_arm);
}

/* One column per arm: the best arm's column is green, the chosen arm carries a yellow marker
 * (red when wrong), and a bar at the bottom shows how much of the delay has passed. */
#define BANDIT_CELL 16
static void bandit_render_rgb(Bandit* env, uint8_t* rgb) {
    int h = 2 * BANDIT_CELL, w = BANDIT_CELL * env->arms;
    shoal_fill_rgb(rgb, h, w, 20, 20, 30);
    for (int i = 0; i < env->arms; i++) {
        int best = i == env->best_arm;
        shoal_rect_rgb(rgb, h, w, 1, BANDIT_CELL * i + 1, BANDIT_CELL - 2, BANDIT_CELL - 2,
                       best ? 40 : 70, best ? 200 : 70, best ? 80 : 90);
    }
    if (env->chosen_arm >= 0) {
        int ok = env->chosen_arm == env->best_arm;
        shoal_rect_rgb(rgb, h, w, 4, BANDIT_CELL * env->chosen_arm + 4, BANDIT_CELL - 8, BANDIT_CELL - 8,
                       ok ? 230 : 220, ok ? 200 : 50, ok ? 40 : 50);
    }
    int bar = env->delay > 0 ? w * env->tick / (env->delay + 1) : 0;
    shoal_rect_rgb(rgb, h, w, BANDIT_CELL + 4, 0, BANDIT_CELL - 8, bar, 90, 140, 230);
}

static void bandit_close(Bandit* env) { (void)env; }

/* What a snapshot's fields may hold (shoal_env.h, "snapshot validation"). */
static int bandit_validate(const Bandit* env, const Bandit* made, ShoalCheck* check) {
    if (!(SHOAL_SAME(check, env, made, arms) && SHOAL_SAME(check, env, made, delay) &&
          SHOAL_SAME(check, env, made, best_arm_param) && SHOAL_SAME(check, env, made, best_prob) &&
          SHOAL_SAME(check, env, made, other_prob)))
        return 0;
    if (env->best_arm_param >= 0 && env->best_arm != env->best_arm_param)
        return shoal_check_fail(check, "best_arm = %d but the parameters fix it at %d", env->best_arm,
                                env->best_arm_param);
    return SHOAL_INT(check, env, best_arm, 0, env->arms - 1) && SHOAL_INT(check, env, chosen_arm, -1, env->arms - 1) &&
           SHOAL_INT(check, env, tick, 0, env->delay) && SHOAL_FLOAT(check, env, episode_return, 0.0f, 1.0f);
}

#endif
