/* recall: remember a symbol across blank steps (sanity check of a recurrent policy's memory).
 *
 * Rules: on step 0 the observation shows one of `symbols` symbols, drawn uniformly each
 * episode. Then come `delay` steps of blank observations, then the query step, whose
 * observation carries only the query flag. The action taken on the query step (an index in
 * [0, symbols)) is the answer: reward 1 if it is the symbol shown on step 0, else 0, and the
 * episode ends (terminal). Actions before the query step are ignored. An episode therefore
 * lasts delay + 2 steps.
 *
 * Observation: float32, symbols + 1 values.
 *   [0, symbols)  one-hot of the symbol on step 0; zeros on every later step
 *   [symbols]     query flag: 1 on the query step only
 *   The final observation of an episode is all zeros.
 *
 * Log: score = 1 if the answer was right.
 * Optimal: a policy with memory answers the symbol it saw: score 1. A memoryless policy
 * sees the same query observation whatever the symbol, so it scores 1/symbols at best.
 */
#ifndef SHOAL_RECALL_H
#define SHOAL_RECALL_H

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
    int symbols;
    int delay;
    /* state */
    int symbol;
    int tick;       /* steps taken this episode; the query step is tick == delay + 1 */
    int last_answer; /* answer of the last finished episode, -1 before any (for renders) */
    int last_symbol;
} Recall;

static void recall_observe(Recall* env) {
    memset(env->observations, 0, sizeof(float) * (size_t)(env->symbols + 1));
    if (env->tick == 0) env->observations[env->symbol] = 1.0f;
    if (env->tick == env->delay + 1) env->observations[env->symbols] = 1.0f;
}

static void recall_reset(Recall* env) {
    env->symbol = shoal_rng_int(&env->rng, env->symbols);
    env->tick = 0;
    recall_observe(env);
}

static void recall_step(Recall* env) {
    if (env->tick < env->delay + 1) { /* cue or blank step: the action is ignored */
        env->tick++;
        recall_observe(env);
        return;
    }
    int answer = env->actions[0];
    int correct = answer == env->symbol;
    env->rewards[0] = (float)correct;
    env->terminals[0] = 1;
    env->log.episode_return += (float)correct;
    env->log.episode_length += (float)(env->tick + 1);
    env->log.score += (float)correct;
    env->log.n += 1.0f;
    env->last_answer = answer;
    env->last_symbol = env->symbol;
    memset(env->final_observations, 0, sizeof(float) * (size_t)(env->symbols + 1));
    recall_reset(env);
}

static int recall_render_text(Recall* env, char* buf, int cap) {
    int len = shoal_appendf(buf, cap, 0, "step %d/%d  ", env->tick + 1, env->delay + 2);
    if (env->tick == 0)
        len = shoal_appendf(buf, cap, len, "cue: symbol %d", env->symbol);
    else if (env->tick == env->delay + 1)
        len = shoal_appendf(buf, cap, len, "query: which symbol? (it was %d)", env->symbol);
    else
        len = shoal_appendf(buf, cap, len, "blank (remembering %d)", env->symbol);
    if (env->last_answer >= 0)
        len = shoal_appendf(buf, cap, len, "  | last: answered %d for %d (%s)", env->last_answer,
                            env->last_symbol, env->last_answer == env->last_symbol ? "right" : "wrong");
    return shoal_appendf(buf, cap, len, "\n");
}

/* Top row: one cell per symbol, lit on the cue step (and dimly for the hidden symbol after).
 * Bottom row: one cell per step of the episode, the current one bright; the query cell is blue. */
#define RECALL_CELL 12
static int recall_render_width(const Recall* env) {
    int steps = env->delay + 2, n = env->symbols > steps ? env->symbols : steps;
    return RECALL_CELL * (n < 64 ? n : 64);
}

static void recall_render_rgb(Recall* env, uint8_t* rgb) {
    int h = 2 * RECALL_CELL, w = recall_render_width(env);
    shoal_fill_rgb(rgb, h, w, 20, 20, 30);
    for (int i = 0; i < env->symbols; i++) {
        int lit = i == env->symbol;
        uint8_t v = lit ? (env->tick == 0 ? 230 : 110) : 60;
        shoal_rect_rgb(rgb, h, w, 1, RECALL_CELL * i + 1, RECALL_CELL - 2, RECALL_CELL - 2, v, v, lit ? 40 : v);
    }
    for (int t = 0; t < env->delay + 2 && RECALL_CELL * t < w; t++) {
        int query = t == env->delay + 1, now = t == env->tick;
        shoal_rect_rgb(rgb, h, w, RECALL_CELL + 1, RECALL_CELL * t + 1, RECALL_CELL - 2, RECALL_CELL - 2,
                       now ? 240 : 70, now ? 240 : 70, query ? 230 : (now ? 240 : 70));
    }
}

static void recall_close(Recall* env) { (void)env; }

/* What a snapshot's fields may hold (shoal_env.h, "snapshot validation"): the symbol indexes the
 * observation; tick runs from the cue (0) to the query (delay + 1). */
static int recall_validate(const Recall* env, const Recall* made, ShoalCheck* check) {
    return SHOAL_SAME(check, env, made, symbols) && SHOAL_SAME(check, env, made, delay) &&
           SHOAL_INT(check, env, symbol, 0, env->symbols - 1) && SHOAL_INT(check, env, tick, 0, env->delay + 1) &&
           SHOAL_INT(check, env, last_answer, -1, env->symbols - 1) &&
           SHOAL_INT(check, env, last_symbol, -1, env->symbols - 1);
}

#endif
